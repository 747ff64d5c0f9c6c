"""The table of every task the three synthesis stages produce (paper sections 3.3-3.5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from taxonomy.names import TaskName

Stage = Literal["a", "b", "c"]

# Stage c appends a general-knowledge Q to the final query and its answer after the image.
INTERLEAVE_OPS: tuple[str, ...] = ("Q_from_caption", "A_from_caption")


@dataclass(frozen=True)
class TaskSpec:
    name: TaskName
    stage: Stage
    operations: tuple[str, ...]
    description: str
    derived_from: TaskName | None = None


# Stage a: basic multi-turn construction. The operations are listed in the order a dialogue
# of that task calls them.
_STAGE_A: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("t_i_0_0", ("caption2query",), "single-turn text-to-image request"),
    (
        "t_i_t1_1",
        ("caption2QA_q",),
        "a Q&A turn about a subject, then a generic request to draw it ('Create one for me')",
    ),
    ("ti_i_0_0", (), "single-turn edit of a user-uploaded image"),
    (
        "t_i_i1_1",
        ("caption2query",),
        "sequential editing: generate the source image, then edit it in the next turn",
    ),
    (
        "t_i_in_1",
        ("caption2query", "caption2query", "drive_hs"),
        "two subjects generated in consecutive turns, then 'draw them together'",
    ),
    (
        "ti_i_i1_1",
        ("caption2query", "drive_i_h"),
        "a subject generated in the previous turn combined with a user-uploaded subject",
    ),
)

# Stage b: the depth-1 tasks deepened by distractor insertion, and the _dep operation that
# rewrites the final query so it points back across the distractors.
_DEEPEN_OPS: dict[str, str] = {
    "t_i_t1_1": "caption2QA_q_dep",
    "t_i_i1_1": "query2dep_q",
    "t_i_in_1": "drive_hs_dep",
    "ti_i_i1_1": "drive_i_h_dep",
}


def _build_table() -> dict[str, TaskSpec]:
    table: dict[str, TaskSpec] = {}
    for name, ops, description in _STAGE_A:
        table[name] = TaskSpec(TaskName.parse(name), "a", ops, description)
    for base_name, dep_op in _DEEPEN_OPS.items():
        base = table[base_name]
        # Stage b is append-only: the stage-a operations stay in provenance and the _dep
        # operation rewrites the final query.
        deep = base.name.deepen()
        table[str(deep)] = TaskSpec(
            deep,
            "b",
            (*base.operations, dep_op),
            f"{base.description}, with distractor turns before the final query",
            base.name,
        )
    for spec in list(table.values()):
        inter = spec.name.interleave()
        table[str(inter)] = TaskSpec(
            inter,
            "c",
            (*spec.operations, *INTERLEAVE_OPS),
            f"{spec.description}; the answer is the image followed by a factual text answer",
            spec.name,
        )
    return table


TASKS: dict[str, TaskSpec] = _build_table()
