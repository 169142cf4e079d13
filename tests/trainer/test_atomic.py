import pytest

from trainer.atomic import atomic_path, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "part.parquet"
    write_atomic(target, b"old")
    write_atomic(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["part.parquet"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".checkpoint.pt.")
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_writer_that_never_wrote_fails_without_touching_the_file(tmp_path):
    target = tmp_path / "x"
    with pytest.raises(FileNotFoundError), atomic_path(target):
        pass
    assert not target.exists() and list(tmp_path.iterdir()) == []
