"""Task names of the ChatUMM taxonomy (paper section 3.1).

A name is ``<input>_<output>_<dependency>_<depth>``:

- input: the final user turn's modality, ``t`` (text) or ``ti`` (text and an uploaded image);
- output: the final assistant turn's modality, ``i`` (image) or ``ti`` (image then text);
- dependency: what the final turn depends on: ``0`` (nothing), ``t1``/``tn`` (one/several text
  turns), ``i1``/``in`` (one/several images);
- depth: how far back that dependency is: ``0`` (none), ``1`` (the immediately preceding turns),
  ``n`` (separated from the final turn by distractor turns).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal, cast, get_args

InputModality = Literal["t", "ti"]
OutputModality = Literal["i", "ti"]
Dependency = Literal["0", "t1", "tn", "i1", "in"]
Depth = Literal["0", "1", "n"]

INPUTS: tuple[str, ...] = get_args(InputModality)
OUTPUTS: tuple[str, ...] = get_args(OutputModality)
DEPENDENCIES: tuple[str, ...] = get_args(Dependency)
DEPTHS: tuple[str, ...] = get_args(Depth)


@dataclass(frozen=True, order=True)
class TaskName:
    input: InputModality
    output: OutputModality
    dependency: Dependency
    depth: Depth

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("input modality", self.input, INPUTS),
            ("output modality", self.output, OUTPUTS),
            ("history dependency", self.dependency, DEPENDENCIES),
            ("dependency depth", self.depth, DEPTHS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {field} {value!r}; expected one of {', '.join(allowed)}")
        if self.dependency == "0" and self.depth != "0":
            raise ValueError(
                f"dependency '0' needs depth '0', got depth {self.depth!r}: "
                "a turn that depends on nothing has no dependency depth"
            )
        if self.dependency != "0" and self.depth == "0":
            raise ValueError(
                f"dependency {self.dependency!r} needs depth '1' or 'n', got depth '0': "
                "a turn that depends on history has a depth"
            )

    @classmethod
    @lru_cache(maxsize=256)  # every sample's invariants parse its task name; names are few
    def parse(cls, name: str) -> TaskName:
        """Parse ``t_i_i1_n`` style names; raises ValueError saying what is wrong."""
        if not isinstance(name, str):
            raise ValueError(f"task name must be a string, got {type(name).__name__}")
        fields = name.strip().split("_")
        if len(fields) != 4:
            raise ValueError(
                f"task name {name!r} has {len(fields)} field(s); expected 4 as "
                "<input>_<output>_<dependency>_<depth>, e.g. 't_i_i1_1'"
            )
        inp, out, dep, depth = fields
        try:
            return cls(
                cast(InputModality, inp),
                cast(OutputModality, out),
                cast(Dependency, dep),
                cast(Depth, depth),
            )
        except ValueError as err:
            raise ValueError(f"invalid task name {name!r}: {err}") from None

    def __str__(self) -> str:
        return f"{self.input}_{self.output}_{self.dependency}_{self.depth}"

    def deepen(self) -> TaskName:
        """Stage b: distractors push an immediate dependency (depth 1) to long range (depth n)."""
        if self.depth != "1":
            raise ValueError(
                f"cannot deepen {self}: only depth-1 tasks get distractors inserted "
                f"(this one has depth {self.depth!r})"
            )
        return replace(self, depth="n")

    def interleave(self) -> TaskName:
        """Stage c: an image answer (output i) becomes image-then-text (output ti)."""
        if self.output != "i":
            raise ValueError(
                f"cannot interleave {self}: only image-output tasks (output 'i') get a text answer "
                f"appended (this one has output {self.output!r})"
            )
        return replace(self, output="ti")

    @property
    def dependency_modality(self) -> str | None:
        """'t' or 'i' for a history dependency, None for none."""
        return None if self.dependency == "0" else self.dependency[0]

    @property
    def dependency_count(self) -> str | None:
        """'1' or 'n' history turns, None for none."""
        return None if self.dependency == "0" else self.dependency[1]
