"""The two ways reading the database fails that a user can act on (the CLI exits 2 on both)."""

from ..storage.errors import StoreError, UsageError

__all__ = ["StoreError", "UsageError"]
