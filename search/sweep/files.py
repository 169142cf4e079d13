"""The files of one sweep, on local disk or object storage.

``sweep.json`` (the saved SweepSpec), ``segments.json`` (its Tune experiments ``tune-1``,
``tune-2``, ...: a rerun with more ``--trials`` adds one, and ``--confirm`` one of confirmation
runs, ``confirm-N``), the Optuna study and ``db/`` (the trial database).

On object storage the two files are entries of the sweep's commit log (search.storage.commits), so
only the driver holding the sweep can change them: the store refuses a commit of a driver
that lost it. There each driver runs a segment's Tune experiment in a directory of its own,
``tune-N/g{generation}-{token}`` (``Segment.dir``), copied from the one before when it resumes:
what a driver that lost the sweep, or its trials, write afterwards lands where nobody reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from ..storage import open_storage
from ..storage import uri as storage
from ..storage.base import check_writer, held_lease
from ..db.errors import StoreError, UsageError
from ..spec import SweepSpec

SPEC_FILE = "sweep.json"
SEGMENTS_FILE = "segments.json"


@dataclass(frozen=True)
class Segment:
    name: str  # Tune experiment directory within the sweep
    trials: int  # how many trials it runs
    done: bool = False
    dir: str = ""  # object storage: the experiment's directory now (name/g...), else the name
    runs: tuple[dict, ...] = ()  # a confirmation segment: the Tune config of each run (TrialRun)

    @property
    def path(self) -> str:
        """The Tune experiment's directory within the sweep."""
        return self.dir or self.name


class SweepDir:
    """Where one sweep's files live: ``storage`` (a path or a URI, '?query' kept) + ``name``."""

    def __init__(self, storage_uri: str, name: str):
        self.storage = storage_uri if "://" in storage_uri else os.path.abspath(storage_uri)
        self.name = name
        self.uri = storage.join(self.storage, name)
        self.backend = open_storage(self.uri)  # local disk or object storage, decided here once
        self.fs, self.path = self.backend.fs, self.backend.path

    def uri_of(self, *parts: str) -> str:
        """A file or directory of the sweep as a URI (Tune's storage_path, checkpoints)."""
        return storage.join(self.uri, *parts)

    def read(self, name: str) -> str | None:
        return self.backend.read(name)

    def write(self, name: str, text: str) -> None:
        """Replace the file whole; LeaseLost if this driver no longer holds the sweep's lease
        (on object storage: the store refuses the commit of a driver that lost it)."""
        check_writer(self.uri)
        self.backend.write(name, text)

    def tune_dir(self, segment: str) -> str:
        """Where this driver runs the segment's Tune experiment: on object storage a directory
        only the holder of the sweep's lease uses (see the module's docstring)."""
        return self.backend.tune_dir(segment, held_lease(self.uri))

    def check_writable(self) -> None:
        """StoreError, before anything runs, if the sweep directory cannot be written."""
        probe = f"{self.path}/.writable-{os.getpid()}"
        try:
            self.fs.create_dir(self.path, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as e:
            raise StoreError(f"cannot write to the sweep directory {self.uri} ({e}); choose a "
                             "writable --storage or free space on it") from None

    def segments(self) -> list[Segment]:
        text = self.read(SEGMENTS_FILE)
        return [Segment(**{**s, "runs": tuple(s.get("runs", ()))}) for s in json.loads(text)] if text else []

    def save_segments(self, segments: list[Segment]) -> None:
        self.write(SEGMENTS_FILE, json.dumps([dataclasses.asdict(s) for s in segments], indent=2))


def saved_spec(spec: SweepSpec, sweep: SweepDir) -> SweepSpec | None:
    """The spec the sweep was saved with (None for a new sweep); UsageError if ``spec`` changes
    what its results mean (only --trials may grow, and how it runs may change). Reads only, so
    the driver checks this before it takes the sweep's lock as well as after."""
    saved_text = sweep.read(SPEC_FILE)
    if saved_text is None:
        return None
    saved = SweepSpec.from_json(saved_text)
    changes = spec.changes_from(saved)
    if changes:
        raise UsageError(f"sweep {spec.name!r} already exists with other settings ({'; '.join(changes)}); "
                         f"rerun it with its original arguments (only --trials may grow) or pick a new --name")
    return saved


def prepare(spec: SweepSpec, sweep: SweepDir) -> SweepSpec:
    """The spec to run, saved (the caller checked it meets its budget: SweepSpec.check)."""
    saved = saved_spec(spec, sweep)
    if spec != saved:
        sweep.write(SPEC_FILE, spec.to_json())
    return spec
