"""Storage URIs, resolved in one place: a local path, ``file:///...``, or any URI pyarrow
understands, options included (``s3://bucket/runs?endpoint_override=host:9000&scheme=http``)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.fs as pafs

from trainer.atomic import write_atomic

from .errors import UsageError

DEFAULT_STORAGE = "./runs"  # the --storage default of search.run and search.query


def is_local(uri: str | os.PathLike) -> bool:
    """Whether the URI names local disk (a path or file://)."""
    uri = os.fspath(uri)
    return "://" not in uri or uri.startswith("file://")


def location(uri: str | os.PathLike) -> str:
    """The directory a storage URI names, the same for every spelling of it (a relative path,
    file://, a trailing '/'), without its '?options': the key of a sweep in a process."""
    uri = os.fspath(uri)
    if is_local(uri):
        return os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri)
    return uri.partition("?")[0].rstrip("/")


def join(uri: str | os.PathLike, *parts: str) -> str:
    """The URI with path parts appended before its options:
    ``join("s3://b/runs?region=x", "demo")`` is ``"s3://b/runs/demo?region=x"``."""
    uri = os.fspath(uri)
    base, sep, options = uri.partition("?") if "://" in uri else (uri, "", "")
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)]) + sep + options


def resolve(uri: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a storage URI; a local path is made absolute. With ``filesystem``,
    ``uri`` is a path within it. UsageError for a URI pyarrow cannot use."""
    uri = os.fspath(uri)
    if filesystem is not None:
        return filesystem, uri.rstrip("/") or uri
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise UsageError(f"cannot use --storage {uri!r} ({str(e).splitlines()[0]}); use a local "
                         "path or a URI pyarrow supports, e.g. s3://bucket/prefix") from None
    return fs, path.rstrip("/") or path


def check(uri: str | os.PathLike) -> None:
    """UsageError, before anything is written, for a URI pyarrow cannot use."""
    resolve(uri)


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Replace the file whole: readers see the old content or the new, never part of it (on local
    disk a temp file renamed over ``path``, on an object store one PUT)."""
    if isinstance(fs, pafs.LocalFileSystem):
        write_atomic(path, data)
        return
    with fs.open_output_stream(path) as out:
        out.write(data)


def read_text(fs: pafs.FileSystem, path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()
