"""Nothing runs code from a name or the database; the embedded Ray is local-only."""

from __future__ import annotations

import pytest

from search.db.errors import UsageError
from search.db.store import check_sweep_name
from search.spec import SweepSpec


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "x" * 101, "a;rm -rf ~", "$(id)",
                                  "a\\b", "name\0"])
def test_sweep_names_must_be_safe_path_components(name):
    with pytest.raises(ValueError, match="invalid sweep name"):
        SweepSpec(name=name, budget=30_000, dataset="digits")


@pytest.mark.parametrize("name", ["..", "a/b", "", "a\\b"])
def test_the_store_refuses_unsafe_names_too(name):
    with pytest.raises(UsageError):
        check_sweep_name(name)
