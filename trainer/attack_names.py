"""Evaluation attacks by name ('pgd20', 'cw', 'autoattack'), without torch: the driver of a
sweep checks the names before any trial runs; attacks.py runs them."""

from __future__ import annotations

import re
from dataclasses import dataclass

CW_DEFAULT_STEPS = 20


@dataclass(frozen=True)
class Attack:
    """An evaluation attack by name: 'clean', 'fgsm', 'pgd<k>', 'cw<k>' or 'autoattack'."""

    kind: str  # clean | fgsm | pgd | cw | autoattack
    steps: int = 0  # iterations for pgd and cw

    @property
    def iterations(self) -> int:
        """Gradient steps it takes: 0 for clean, 1 for FGSM, ``steps`` for PGD and CW."""
        return {"clean": 0, "fgsm": 1}.get(self.kind, self.steps)

    @property
    def name(self) -> str:
        return f"{self.kind}{self.steps}" if self.kind in ("pgd", "cw") else self.kind


def parse_attack(text: str) -> Attack:
    """'clean', 'fgsm', 'pgd10', 'pgd-20', 'cw', 'cw30', 'autoattack' (or 'aa')."""
    s = text.strip().lower().replace("-", "").replace("_", "")
    if s in ("clean", "fgsm", "autoattack"):
        return Attack(s)
    if s == "aa":
        return Attack("autoattack")
    if s == "cw":
        return Attack("cw", CW_DEFAULT_STEPS)
    m = re.fullmatch(r"(pgd|cw)(\d+)", s)
    if m and int(m[2]) >= 1:
        return Attack(m[1], int(m[2]))
    raise ValueError(f"unknown attack {text!r}: use clean, fgsm, pgd<steps> (e.g. pgd20), "
                     f"cw or cw<steps>, autoattack")
