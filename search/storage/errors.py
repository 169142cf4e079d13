"""What a store refuses, in one line a user can act on."""

from space_defs.cli import UsageError

__all__ = ["StoreError", "UsageError"]


class StoreError(Exception):
    """A file in the store is not a part this store wrote (truncated, foreign or too new), or
    the storage cannot be written."""
