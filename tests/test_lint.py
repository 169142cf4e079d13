"""The packages have no undefined names or unused imports (pyflakes): a name that only a rare
path reaches fails here, not in a user's sweep."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pyflakes_finds_nothing_in_the_packages():
    out = subprocess.run([sys.executable, "-m", "pyflakes", "search", "space_defs", "trainer",
                          "benchmarks"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
