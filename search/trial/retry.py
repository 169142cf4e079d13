"""A trial's own errors, retried a few times from its last checkpoint (OwnErrors), counted
beside the trial so the count survives retries on other nodes; the driver's side of the
retry policy (node losses, environment problems) is search.tune.failures."""

from __future__ import annotations

import json

# A trial's own errors (an exception in training) are retried OWN_ERROR_RETRIES times, counted
# by the trial itself (OwnErrors), then it ends failed.
OWN_ERROR_RETRIES = 2


class OwnErrors:
    """A trial's own errors, counted in a file next to the trial on the sweep's storage
    (``own_errors.json`` in Tune's trial directory), so that the count survives retries on
    other nodes and a restarted driver."""

    NAME = "own_errors.json"

    def __init__(self, filesystem, directory: str, limit: int = OWN_ERROR_RETRIES) -> None:
        self.fs, self.path, self.limit = filesystem, f"{directory.rstrip('/')}/{self.NAME}", limit

    @classmethod
    def of_this_trial(cls, limit: int = OWN_ERROR_RETRIES) -> OwnErrors:
        """Inside a Tune trial: the counter of this trial (Tune's trial directory on storage)."""
        from ray import tune

        storage = tune.get_context().get_storage()
        return cls(storage.storage_filesystem, storage.trial_fs_path, limit)

    def errors(self) -> list[str]:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return list(json.loads(f.readall().decode()))
        except (OSError, ValueError, TypeError):
            return []  # none yet (or unreadable: counting restarts rather than failing)

    def record(self, error: BaseException) -> bool:
        """Count ``error``; True when the trial may still be retried for it (raise it), False
        when it has used its retries (report it as failed and return)."""
        errors = [*self.errors(), f"{type(error).__name__}: {error}"[:300]]
        data = json.dumps(errors).encode()
        try:
            self.fs.create_dir(self.path.rpartition("/")[0], recursive=True)
            with self.fs.open_output_stream(self.path) as f:
                f.write(data)
        except OSError:
            pass  # uncounted: Tune's own limit still ends it
        return len(errors) <= self.limit
