"""The recorded grid that ships (data/digits-grid-60K) is whole: every grid config trained to
the end once per seed, each epoch's seconds recorded, every best.pt evaluated on the test split,
and docs/DIGITS_GRID.md is what search.gridreport says of it."""

from pathlib import Path

from search.grid.report import Grid
from search.grid.table import Table

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "digits-grid-60K"


def test_the_shipped_grid_is_whole():
    table = Table.load(str(DATA))
    assert len(table.curves) == table.spec.search_space().grid_size() == 32 and table.seeds == 2
    assert all(len(c.seconds) == table.spec.recipe.epochs and min(c.seconds) > 0
               for curves in table.curves.values() for c in curves)
    grid = Grid.load(str(DATA))
    assert set(grid.test) == {"clean", "pgd20"}
    assert all(len(grid.test["pgd20"][cfg].values) == 2 for cfg in table.curves)


def test_the_findings_doc_holds_the_reports_numbers():
    report = Grid.load(str(DATA)).render()
    assert report in (ROOT / "docs" / "DIGITS_GRID.md").read_text()
