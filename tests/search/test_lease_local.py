"""The sweep's lock on a local or shared file system (search.storage.local)."""

import errno
import os

import pytest

from search.storage.lease import sweep_lock


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS])
def test_a_file_system_that_cannot_lock_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, code):
    """NFS without its lock service answers flock with ENOLCK, a file system without flock
    with ENOSYS (made here by fcntl.flock itself: no such file system can be mounted in a
    test). The driver stops with one line instead of running a sweep that another driver
    could run too, and not with filelock's soft lock, which a killed driver leaves behind."""
    import fcntl

    from space_defs.cli import UsageError

    def refused(fd, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", refused)
    with pytest.raises(UsageError) as e:
        with sweep_lock(str(tmp_path / "s"), "s"):
            pass
    assert f"cannot lock files ({errno.errorcode[code]} from flock)" in str(e.value)
    assert "\n" not in str(e.value) and not (tmp_path / "s").exists()
