import dataclasses
import datetime as dt

import pytest

from search.db.schema import EPOCHS, TRIALS, EpochRow, TrialRow
from trainer.report import METRICS, EpochReport
from trainer.status import Status

from .test_store import trial


def test_epoch_rows_have_every_metric_the_trainer_reports():
    assert EPOCHS.columns == ("sweep", "trial_id", "epoch", *METRICS, "recorded_at")
    report = {f.name: f.metadata for f in dataclasses.fields(EpochReport)}
    for field in EPOCHS.schema:
        if field.name in METRICS:
            assert field.nullable and field.metadata[b"doc"].decode() == report[field.name]["doc"]
    row = EpochRow(sweep="s", trial_id="t", epoch=1, recorded_at=dt.datetime.now(dt.timezone.utc),
                   **{m: 0.5 for m in METRICS})
    assert row.epoch_seconds == 0.5
    with pytest.raises(ValueError, match="fraction"):
        dataclasses.replace(row, val_robust_acc=50.0)


def test_trial_status_is_one_of_the_statuses_stored_as_plain_text():
    for status in Status:
        assert type(trial(status=status).status) is str and trial(status=status.value).status == status
    with pytest.raises(ValueError, match="status must be one of running, finished"):
        trial(status="done")
    assert "lost" in TRIALS.schema.field("status").metadata[b"doc"].decode()
