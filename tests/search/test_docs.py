"""docs/RELIABILITY.md is the rendering of the numbers the code owns, and the hand-written docs
leave those numbers to it."""

import re
import subprocess
import sys
from pathlib import Path

from search import docs
from search.storage import s3_lease as lease_s3
from search.trial import retry
from search.tune import failures
from trainer.status import NOT_COUNTED, Status

ROOT = Path(__file__).parents[2]
PROSE = [ROOT / "README.md", ROOT / "docs" / "ARCHITECTURE.md", ROOT / "docs" / "CLUSTER.md",
         ROOT / "docs" / "EVALUATION.md", ROOT / "docs" / "RUNNING.md", ROOT / "docs" / "BENCHMARKS.md"]


def test_docs_reliability_md_is_the_rendering_of_the_code():
    assert docs.PATH.read_text(encoding="utf-8") == docs.render(), \
        "docs/RELIABILITY.md is stale: run python -m search.docs"


def test_it_renders_the_code_values():
    text = docs.render()
    times = lease_s3.LeaseTimes()
    for name in docs.LEASE_ROWS:
        assert re.search(rf"\| {getattr(times, name):g} \| `LeaseTimes.{name}` \|", text), name
    for module, name in ((failures, "NODE_LOSS_RETRIES"), (retry, "OWN_ERROR_RETRIES")):
        assert f"| {getattr(module, name)} | `{module.__name__}.{name}` |" in text
    assert all(f"`{s}`" in text for s in NOT_COUNTED)


def test_the_generator_imports_no_ray_optuna_or_torch():
    code = ("import sys, search.docs; search.docs.render(); "
            "print(sorted(m for m in ('ray', 'optuna', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_the_hand_written_docs_leave_the_numbers_to_it():
    """A paragraph (or table row) about the lease states none of its periods in seconds; one
    about retries states no retry count."""
    times = lease_s3.LeaseTimes()
    seconds = re.compile(r"\b(%s) s\b" % "|".join(
        re.escape(f"{getattr(times, name):g}") for name in docs.LEASE_ROWS))
    counts = re.compile(r"\b(%d times|%d retries|twice)\b" % (failures.NODE_LOSS_RETRIES,
                                                             retry.OWN_ERROR_RETRIES))
    for path in PROSE:
        text = path.read_text(encoding="utf-8")
        for paragraph in re.split(r"\n\s*\n|\n(?=\|)|\n(?=\s*- )", text):
            if "lease" in paragraph or "renew" in paragraph:
                assert not seconds.search(paragraph), (path.name, paragraph)
            if "retr" in paragraph:
                assert not counts.search(paragraph), (path.name, paragraph)


def test_the_statuses_the_hand_written_docs_name_are_the_code_s():
    named = {m for path in PROSE for m in re.findall(
        r"\b(?:status|recorded(?: as)?|become|as) `([a-z_]+)`", path.read_text(encoding="utf-8"))}
    assert {"failed", "diverged", "lost", "env_failed"} <= named  # the pattern finds them
    assert named <= {s.value for s in Status}, named - {s.value for s in Status}


def _our_modules() -> dict[str, list[str]]:
    """Each module of the project by its last name part (``tune_state``: search.tune.tune_state)."""
    import pkgutil

    import search
    import space_defs
    import trainer

    found: dict[str, list[str]] = {}
    for package in (search, trainer, space_defs):
        found.setdefault(package.__name__, []).append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            found.setdefault(info.name.rsplit(".", 1)[-1], []).append(info.name)
    return found


def _resolves(module: str, attributes: list[str]) -> bool:
    import importlib
    import importlib.util

    obj = importlib.import_module(module)
    for name in attributes:
        if not hasattr(obj, name):
            submodule = f"{obj.__name__}.{name}" if hasattr(obj, "__path__") else None
            if submodule is None or importlib.util.find_spec(submodule) is None:
                return False
            obj = importlib.import_module(submodule)
        else:
            obj = getattr(obj, name)
    return True


def test_every_name_of_our_code_the_docs_give_exists():
    """`tune_state.resume_from_checkpoints_that_exist`, `search.storage.lease.sweep_lock`: a name
    whose first part is one of our modules (by its last name part, or in full) resolves in one
    of them, so a rename or a move cannot leave the docs naming what is gone."""
    from search.storage.lease import LEASE_FILE, LOCK_FILE

    modules = _our_modules()
    every_module = {m for ms in modules.values() for m in ms}
    dotted = re.compile(r"`((?:[a-z_][a-z0-9_]*\.)+[A-Za-z_][A-Za-z0-9_]*)(?:\(\))?`")
    checked, missing = 0, []
    for path in [*PROSE, ROOT / "docs" / "DATABASE.md"]:
        for name in dotted.findall(path.read_text(encoding="utf-8")):
            parts = name.split(".")
            if name in (LEASE_FILE, LOCK_FILE) or parts[-1] in {"py", "md", "json", "yaml", "toml", "pt"}:
                continue  # a file's name
            candidates = [(m, parts[1:]) for m in modules.get(parts[0], [])]
            for depth in range(len(parts) - 1, 0, -1):  # search.storage.lease.sweep_lock
                if ".".join(parts[:depth]) in every_module:
                    candidates.append((".".join(parts[:depth]), parts[depth:]))
                    break
            if not candidates:
                continue  # not ours: ray's, pandas', a class's attribute
            checked += 1
            if not any(_resolves(m, rest) for m, rest in candidates):
                missing.append(f"{path.name}: {name}")
    assert checked >= 20  # the pattern finds them
    assert not missing, missing
