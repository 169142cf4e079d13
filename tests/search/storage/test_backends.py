"""search.storage.open_storage: the one place that tells local disk from object storage, and
what each backend answers (the object-storage backend against real S3 servers:
tests/system/test_s3.py, test_objstore_parts.py, test_optuna_storage_contract.py)."""

import optuna
import pytest
from optuna.storages import JournalStorage

from search.storage import open_storage
from search.storage.base import Lease
from search.storage.local import LocalStorage
from search.storage.s3 import Fence, ObjectStorage

S3 = "s3://bucket/runs/demo?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"


@pytest.mark.parametrize("uri, kind", [("runs/demo", LocalStorage), ("/abs/runs/demo", LocalStorage),
                                       ("file:///abs/runs/demo", LocalStorage), (S3, ObjectStorage)])
def test_the_uri_chooses_the_backend_once(uri, kind):
    assert type(open_storage(uri)) is kind


def test_choosing_a_backend_asks_no_store():
    """pyarrow resolves a bare s3://bucket's region over the network: only a use does that."""
    assert open_storage("s3://no-such-bucket-anywhere/runs").reaches_every_node


def test_what_each_backend_answers_without_asking_the_store(tmp_path):
    local, remote = open_storage(str(tmp_path / "demo")), open_storage(S3)
    assert (local.reaches_every_node, local.trusts_tune_log) == (False, True)
    assert (remote.reaches_every_node, remote.trusts_tune_log) == (True, False)
    lease = Lease(S3, "demo", ttl=30.0)
    lease.generation = 7
    assert local.tune_dir("tune-1", lease) == "tune-1" and local.trial_fence(lease) is None
    assert remote.tune_dir("tune-1", lease) == f"tune-1/{lease.namespace}"
    assert remote.tune_dir("tune-1", None) == "tune-1" and remote.trial_fence(None) is None
    assert remote.trial_fence(lease) == Fence(S3, 7)
    assert local.commit_log() is None and local.local_file("/x/best.pt", "/tmp") == "/x/best.pt"


def test_local_files_and_study_round_trip(tmp_path):
    sweep = open_storage(str(tmp_path / "demo"))
    assert sweep.read("sweep.json") is None and sweep.journal_logs() == []
    sweep.write("sweep.json", '{"a": 1}')
    sweep.write("sweep.json", '{"a": 2}')
    assert sweep.read("sweep.json") == '{"a": 2}'
    study = optuna.create_study(storage=JournalStorage(sweep.journal()), study_name="demo")
    study.enqueue_trial({"x": 1.0})
    assert len(sweep.journal_logs()) >= 2  # the study and its queued trial, as Optuna logs them
