"""Where a result came from: code version and library versions, recorded with every trial."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("robust-arch-search", "torch", "torchvision", "ray", "optuna", "numpy", "pyarrow")


@functools.cache
def code_version() -> str:
    """``git describe`` of the checkout this code runs from, else the installed version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return library_versions().get("robust-arch-search", "unknown")


@functools.cache
def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
