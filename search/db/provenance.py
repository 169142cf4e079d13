"""Where a result came from: code version and library versions, recorded with every trial."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("robust-arch-search", "torch", "torchvision", "ray", "optuna", "numpy", "pyarrow")
CHECKOUT = Path(__file__).resolve().parent.parent  # on a cluster node: the checkout `ray up` synced


@functools.cache
def code_version(root: Path = CHECKOUT) -> str:
    """``git describe --dirty`` of the checkout at ``root`` (this code's, by default), else the
    installed version. "-dirty": a tracked file differs from the commit, or is missing."""
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
