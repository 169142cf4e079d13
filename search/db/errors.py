"""The two ways reading the database fails that a user can act on (the CLI exits 2 on both)."""

from space_defs.cli import UsageError

__all__ = ["StoreError", "UsageError"]


class StoreError(Exception):
    """A file in the store is not a part this store wrote (truncated, foreign or too new), or
    the storage cannot be written."""
