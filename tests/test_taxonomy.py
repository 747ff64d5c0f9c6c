import pytest

from taxonomy import INTERLEAVE_OPS, TASKS, TaskName


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_in_the_table_round_trips(name):
    parsed = TaskName.parse(name)
    assert str(parsed) == name
    assert TaskName.parse(str(parsed)) == parsed
    assert TASKS[name].name == parsed


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("t_i_i1", "has 3 field(s); expected 4"),
        ("t_i_i1_1_x", "has 5 field(s); expected 4"),
        ("x_i_0_0", "unknown input modality 'x'"),
        ("t_t_0_0", "unknown output modality 't'"),
        ("t_i_i2_1", "unknown history dependency 'i2'"),
        ("t_i_i1_2", "unknown dependency depth '2'"),
        ("t_i_0_1", "dependency '0' needs depth '0'"),
        ("t_i_0_n", "dependency '0' needs depth '0'"),
        ("t_i_i1_0", "needs depth '1' or 'n'"),
        ("", "has 1 field(s)"),
    ],
)
def test_bad_names_say_what_is_wrong(name, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TaskName.parse(name)


def test_transitions():
    assert str(TaskName.parse("t_i_i1_1").deepen()) == "t_i_i1_n"
    assert str(TaskName.parse("t_i_0_0").interleave()) == "t_ti_0_0"
    assert str(TaskName.parse("ti_i_i1_n").interleave()) == "ti_ti_i1_n"
    with pytest.raises(ValueError, match="only depth-1 tasks"):
        TaskName.parse("t_i_0_0").deepen()
    with pytest.raises(ValueError, match="only depth-1 tasks"):
        TaskName.parse("t_i_in_n").deepen()
    with pytest.raises(ValueError, match="only image-output tasks"):
        TaskName.parse("t_ti_0_0").interleave()


def test_names_are_frozen_values():
    a, b = TaskName.parse("t_i_in_1"), TaskName.parse("t_i_in_1")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.depth = "n"  # type: ignore[misc]


def test_table_matches_the_paper():
    by_stage = {s: sorted(n for n, spec in TASKS.items() if spec.stage == s) for s in "abc"}
    assert by_stage["a"] == sorted(
        ["t_i_0_0", "t_i_t1_1", "ti_i_0_0", "t_i_i1_1", "t_i_in_1", "ti_i_i1_1"]
    )
    assert by_stage["b"] == sorted(["t_i_t1_n", "t_i_i1_n", "t_i_in_n", "ti_i_i1_n"])
    assert len(by_stage["c"]) == 10
    assert TASKS["t_i_0_0"].operations == ("caption2query",)
    assert TASKS["t_i_t1_1"].operations == ("caption2QA_q",)
    assert TASKS["t_i_in_1"].operations[-1] == "drive_hs"
    assert TASKS["ti_i_i1_1"].operations[-1] == "drive_i_h"
    dep_ops = {
        "t_i_t1_n": "caption2QA_q_dep",
        "t_i_i1_n": "query2dep_q",
        "t_i_in_n": "drive_hs_dep",
        "ti_i_i1_n": "drive_i_h_dep",
    }
    for name, op in dep_ops.items():
        assert TASKS[name].operations[-1] == op
        assert TASKS[name].derived_from == TaskName.parse(name.replace("_n", "_1"))
    for name in by_stage["c"]:
        spec = TASKS[name]
        assert spec.operations[-2:] == INTERLEAVE_OPS
        assert spec.derived_from is not None and spec.derived_from.interleave() == spec.name
    all_ops = {op for spec in TASKS.values() for op in spec.operations}
    assert all_ops == {
        "caption2query",
        "caption2QA_q",
        "drive_hs",
        "drive_i_h",
        "query2dep_q",
        "caption2QA_q_dep",
        "drive_hs_dep",
        "drive_i_h_dep",
        "Q_from_caption",
        "A_from_caption",
    }
