import os

import pyarrow.fs as pafs
import pytest

from search.storage import uri as storage
from search.db.errors import UsageError

MINIO = "s3://bucket/runs?endpoint_override=localhost:9000&scheme=http&region=us-east-1"


def test_join_appends_parts_before_the_options():
    assert storage.join(MINIO, "demo", "db") == \
        "s3://bucket/runs/demo/db?endpoint_override=localhost:9000&scheme=http&region=us-east-1"
    assert storage.join("s3://bucket/runs/", "demo") == "s3://bucket/runs/demo"
    assert storage.join("runs", "demo") == "runs/demo"
    assert storage.join("/", "demo") == "/demo"
    assert storage.join("odd?name", "demo") == "odd?name/demo"  # a local path has no options


def test_resolve_understands_options_and_local_paths(tmp_path, monkeypatch):
    fs, path = storage.resolve(storage.join(MINIO, "demo"))
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/runs/demo"
    monkeypatch.chdir(tmp_path)
    assert storage.resolve("runs/") == (pafs.LocalFileSystem(), str(tmp_path / "runs"))
    fs, path = storage.resolve(f"file://{tmp_path}/runs/")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "runs")
    assert [storage.is_local(u) for u in ("runs", f"file://{tmp_path}", MINIO)] == [True, True, False]


@pytest.mark.parametrize("uri", ["foo://bucket/runs", "s3://bucket/runs?no_such_option=1"])
def test_a_uri_pyarrow_cannot_use_is_one_line(uri):
    with pytest.raises(UsageError, match="cannot use --storage") as e:
        storage.check(uri)
    assert "\n" not in str(e.value)
    storage.check("a/local/path/that/does/not/exist")


def test_write_bytes_replaces_whole_files_and_read_text(tmp_path):
    local = pafs.LocalFileSystem()
    path = str(tmp_path / "a.json")
    assert storage.read_text(local, path) is None
    storage.write_bytes(local, path, b"one")
    storage.write_bytes(local, path, b"two")
    assert storage.read_text(local, path) == "two" and os.listdir(tmp_path) == ["a.json"]
    remote = pafs.SubTreeFileSystem(str(tmp_path), local)  # not local disk: the one-PUT path
    storage.write_bytes(remote, "b.json", b"three")
    assert storage.read_text(remote, "b.json") == "three"
