import math
import pickle
from pathlib import Path

import pytest

from trainer.status import TERMINAL, Status, catastrophic_overfit


def test_every_status_has_its_stored_value_and_a_one_line_meaning():
    assert [s.value for s in Status] == ["running", "finished", "stopped_early", "diverged",
                                         "catastrophic_overfit", "failed", "lost", "env_failed"]
    for s in Status:
        assert s == s.value and f"{s}" == s.value and Status(s.value) is s
        assert s.meaning and "\n" not in s.meaning
    assert pickle.loads(pickle.dumps(Status.LOST)) is Status.LOST


def test_terminal_is_every_status_but_running():
    assert TERMINAL == set(Status) - {Status.RUNNING}
    assert "finished" in TERMINAL and "running" not in TERMINAL


# -- catastrophic overfitting: the rule on margins and on recorded curves -------------------

@pytest.mark.parametrize("val_robust, train_adv, n, expected", [
    ([0.30, 0.40, 0.05, 0.04], [0.30, 0.45, 0.80, 0.85], 200, True),  # PGD collapses, FGSM-train soars
    ([0.30, 0.40, 0.38, 0.41], [0.30, 0.45, 0.50, 0.55], 200, False),  # ordinary noise
    ([0.30, 0.40, 0.10, 0.08], [0.30, 0.45, 0.30, 0.35], 200, False),  # training got worse too
    ([0.32, 0.455, 0.035, 0.25], [0.33, 0.41, 0.43, 0.31], 200, False),  # a one-epoch dip (measured)
    ([0.30, 0.40, 0.05], [0.30, 0.45, 0.80], 200, False),  # ... not yet two epochs
    ([0.115, 0.035, 0.03], [0.12, 0.30, 0.35], 200, False),  # the demo's: an early epoch at chance
    ([0.04, 0.01, 0.0], [0.10, 0.20, 0.3], 200, False),  # near zero from the start
    ([0.30, 0.14, 0.13], [0.30, 0.50, 0.55], 50, False),  # a fall 50 images cannot tell from noise ...
    ([0.30, 0.14, 0.13], [0.30, 0.50, 0.55], 1000, True),  # ... that 1,000 can
    ([0.40], [0.9], 200, False),
])
def test_catastrophic_overfit_is_a_fall_beyond_the_validation_noise(val_robust, train_adv, n, expected):
    assert catastrophic_overfit(val_robust, train_adv, n=n, num_classes=10, drop=0.5) is expected


def test_the_thresholds_are_standard_errors_at_the_validation_size():
    # peak 20% on 200 images: 10 points above chance, 4.7 s.e. of chance; one z further it is not
    chance_se = math.sqrt(0.1 * 0.9 / 200)
    curve, train = [0.20, 0.02, 0.01], [0.2, 0.5, 0.6]
    assert catastrophic_overfit(curve, train, n=200, num_classes=10, drop=0.5)
    assert not catastrophic_overfit(curve, train, n=200, num_classes=10, drop=0.5,
                                    z=0.1 / chance_se + 0.01)
    assert catastrophic_overfit(curve[:2], train[:2], n=200, num_classes=10, drop=0.5, epochs=1)


def _recorded_curves():
    import pandas as pd

    for sweep in sorted(GRID.glob("digits-grid-60K-s*")):
        epochs = pd.read_parquet(sweep / "db" / "epochs").sort_values("recorded_at")
        epochs = epochs.drop_duplicates(["trial_id", "epoch"], keep="last").sort_values("epoch")
        for _, curve in epochs.groupby("trial_id"):
            yield list(curve["val_robust_acc"]), list(curve["train_adv_acc"])


GRID = Path(__file__).resolve().parents[2] / "data" / "digits-grid-60K"


def test_no_recorded_healthy_curve_trips_the_rule_even_with_a_margin():
    """The shipped grid: 64 PGD-AT runs at the demo's recipe (lr 0.4, validation 200 images),
    none of them a collapse; their validation PGD accuracy falls by up to 5 standard errors
    and to 60% of an earlier peak from one epoch to the next. No epoch of any trips the rule,
    nor a stricter one (a fall to 55% of the peak)."""
    curves = list(_recorded_curves())
    assert len(curves) == 64 and all(len(v) == 80 for v, _ in curves)
    for val_robust, train_adv in curves:
        for k in range(2, len(val_robust) + 1):
            for drop, epochs in ((0.5, 2), (0.45, 2), (0.5, 1)):
                assert not catastrophic_overfit(val_robust[:k], train_adv[:k], n=200,
                                                num_classes=10, drop=drop, epochs=epochs)
