import dataclasses

import pytest

from trainer import EpochReport, Status
from trainer.report import FRACTION, METRICS

VALUES = dict(epoch=2, train_loss=1.5, train_clean_acc=0.5, train_adv_acc=0.25, val_clean_acc=0.5,
              val_robust_acc=0.25, lr=0.1, train_seconds=2.0, eval_seconds=1.0, images_per_s=600.0,
              epoch_seconds=3.0, status="running")


def test_metrics_are_the_float_fields_each_with_unit_and_doc():
    assert METRICS == ("train_loss", "train_clean_acc", "train_adv_acc", "val_clean_acc",
                       "val_robust_acc", "lr", "train_seconds", "eval_seconds", "images_per_s",
                       "epoch_seconds")
    fields = {f.name: f for f in dataclasses.fields(EpochReport)}
    assert all(fields[m].metadata["doc"] for m in METRICS)
    assert {m for m in METRICS if fields[m].metadata["unit"] == FRACTION} == {
        "train_clean_acc", "train_adv_acc", "val_clean_acc", "val_robust_acc"}


def test_metrics_are_flat_floats_and_status_is_a_status():
    report = EpochReport(**VALUES)
    assert report.metrics() == {k: float(v) for k, v in VALUES.items() if k != "status"}
    assert all(type(v) is float for v in report.metrics().values())
    assert report.status is Status.RUNNING and report.note == "" and report.checkpoint_dir is None
    with pytest.raises(ValueError):
        EpochReport(**{**VALUES, "status": "sleeping"})
