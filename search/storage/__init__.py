"""Where a sweep's files live, chosen once from its URI: ``open_storage(uri)`` is a
``Storage`` (base.py) that the sweep's files, its lease, its study and its trial database ask,
local disk (local.py) or object storage (s3.py)."""

from __future__ import annotations

import os

from . import uri
from .base import Storage


def open_storage(sweep_uri: str | os.PathLike) -> Storage:
    """The storage of the sweep directory ``sweep_uri``: a path or file:// is local disk (a
    shared mount included), any other URI pyarrow understands is object storage."""
    if uri.is_local(sweep_uri):
        from .local import LocalStorage

        return LocalStorage(os.fspath(sweep_uri))
    from .s3 import ObjectStorage

    return ObjectStorage(os.fspath(sweep_uri))
