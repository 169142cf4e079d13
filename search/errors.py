"""The two ways reading the database fails that a user can act on (the CLI exits 2 on both)."""


class StoreError(Exception):
    """A file in the store is not a part this store wrote: truncated, foreign or too new."""


class UsageError(ValueError):
    """A request the database cannot answer: unknown sweep, unknown or non-numeric column."""
