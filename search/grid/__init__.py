"""Recorded grids: the table (table.py), its statistics (stats.py), search strategies replayed
on it (replay.py, summary.py) and what it says (report.py). Light to import: ray and optuna
load only when a replay runs."""

from .table import Curve, Table

__all__ = ["Curve", "Table"]
