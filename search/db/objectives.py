"""Objectives, spelled one way for search.run and search.query: ``-name`` minimises, ``+name``
maximises, a bare name takes the metric's natural direction (DIRECTIONS); a column without
one is maximised. Both commands print the directions they used (``described``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import UsageError

MAX, MIN = "max", "min"
# The natural direction of every metric a sweep can optimise (what the trainable reports) and
# of the trials table's outcome columns search.query ranks by; the other columns have none.
DIRECTIONS = {
    "val_robust_acc": MAX, "val_clean_acc": MAX, "params": MIN, "macs": MIN,
    "best_val_robust_acc": MAX, "best_val_clean_acc": MAX,
    "last_val_robust_acc": MAX, "last_val_clean_acc": MAX,
    "train_seconds": MIN, "eval_seconds": MIN, "gpu_hours": MIN,
}
EXAMPLE = "write e.g. --objectives val_robust_acc,-params"


@dataclass(frozen=True)
class Objective:
    """A metric (or column) and whether it is maximised."""

    name: str
    maximize: bool

    @classmethod
    def parse(cls, text: str) -> Objective:
        text = text.strip()
        sign, name = (text[0], text[1:].strip()) if text[:1] in ("+", "-") else ("", text)
        if not name:
            raise UsageError(f"empty objective {text!r}; {EXAMPLE}")
        if sign:
            return cls(name, sign == "+")
        return cls(name, DIRECTIONS.get(name, MAX) == MAX)

    @property
    def mode(self) -> str:
        return MAX if self.maximize else MIN

    @property
    def spelled(self) -> str:
        """The shortest text that parses back to this objective: the bare name in its natural
        direction (what a sweep.json stores), else the name with its sign."""
        if DIRECTIONS.get(self.name, MAX) == self.mode:
            return self.name
        return ("+" if self.maximize else "-") + self.name

    def __str__(self) -> str:
        return f"{self.name} ({self.mode})"


def parse_objectives(spec: str | Sequence[str | Objective]) -> tuple[Objective, ...]:
    """'val_robust_acc,-macs' or a sequence of such texts (or Objectives); each name once."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    objectives = tuple(o if isinstance(o, Objective) else Objective.parse(o) for o in items)
    if not objectives:
        raise UsageError(f"no objectives; {EXAMPLE}")
    names = [o.name for o in objectives]
    if len(set(names)) < len(names):
        raise UsageError(f"objectives {', '.join(names)}: give each once")
    return objectives


def described(objectives: Sequence[Objective]) -> str:
    """The line both commands print: 'objectives: val_robust_acc (max), macs (min)'."""
    return "objectives: " + ", ".join(map(str, objectives))
