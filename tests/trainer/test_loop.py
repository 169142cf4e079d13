import dataclasses
import shutil

import pytest
import torch

from space_defs.arch import WRNConfig
from trainer import EpochReport, Recipe, dataset_spec, fit
from trainer.report import best_epoch
from trainer.status import Status, catastrophic_overfit, diverged

TINY = WRNConfig(depths=(1, 1, 1), channels=(16, 32, 64), data=dataset_spec("digits").data)
SMALL = WRNConfig(depths=(1, 1, 1), channels=(8, 16, 32), data=dataset_spec("digits").data)
QUICK = Recipe(method="trades", epochs=3, steps=2, val_size=100, val_attack_steps=3, ema_decay=0.9, seed=3)
TIMING = {"epoch_seconds", "train_seconds", "eval_seconds", "images_per_s"}


class Interrupted(Exception):
    pass


def _measured(report: EpochReport) -> dict[str, float]:
    return {k: v for k, v in report.metrics().items() if k not in TIMING}


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    straight = fit(TINY, QUICK, "digits", checkpoint_dir=tmp_path / "straight")

    def crash_after_epoch_2(r: EpochReport):
        if r.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(TINY, QUICK, "digits", checkpoint_dir=tmp_path / "node-a", report=crash_after_epoch_2)
    # Ray Tune restores a trial's checkpoint into a different directory.
    shutil.copytree(tmp_path / "node-a", tmp_path / "node-b")
    seen: list[EpochReport] = []
    resumed = fit(TINY, QUICK, "digits", checkpoint_dir=tmp_path / "node-b", report=seen.append)

    assert [r.epoch for r in seen] == [3]
    assert seen[0].checkpoint_dir == str(tmp_path / "node-b")
    assert resumed.status == straight.status == Status.FINISHED and resumed.epochs_done == 3
    for a, b in zip(straight.history, resumed.history):
        assert _measured(a) == _measured(b)
    for p, q in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(p, q)  # bit for bit: a resumed trial is the trial


def test_checkpoints_are_weights_only_and_a_finished_run_is_not_retrained(tmp_path):
    result = fit(TINY, QUICK, "digits", checkpoint_dir=tmp_path)
    state = torch.load(result.checkpoint_path, weights_only=True)
    assert state["epoch"] == 3 and state["status"] == Status.FINISHED and state["ema"] is not None
    assert type(state["status"]) is str and {type(h["status"]) for h in state["history"]} == {str}
    best = torch.load(result.best_model_path, weights_only=True)
    assert best["epoch"] == result.best.epoch
    calls = []
    again = fit(TINY, QUICK, "digits", checkpoint_dir=tmp_path, report=calls.append)
    assert calls == [] and again.final.metrics() == result.final.metrics()


def test_resuming_a_different_run_is_refused(tmp_path):
    fit(TINY, Recipe(method="standard", epochs=1, val_size=50), "digits", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="different run"):
        fit(TINY, Recipe(method="standard", epochs=1, val_size=50, lr=0.05), "digits", checkpoint_dir=tmp_path)


def test_absurd_learning_rate_ends_as_diverged_not_a_crash():
    reports = []
    result = fit(TINY, Recipe(method="standard", epochs=5, lr=1e12, grad_clip=None, val_size=50), "digits",
                 report=reports.append)
    assert result.status == Status.DIVERGED and reports[-1].status == Status.DIVERGED
    assert result.epochs_done < 5 and len(reports) == result.epochs_done


def test_report_fields_and_flat_float_metrics():
    reports = []
    fit(TINY, Recipe(method="pgd_at", epochs=2, steps=1, val_size=50, val_attack_steps=2), "digits",
        report=reports.append)
    assert [r.status for r in reports] == ["running", Status.FINISHED]
    metrics = reports[0].metrics()
    assert set(metrics) == {"epoch", "train_loss", "train_clean_acc", "train_adv_acc", "val_clean_acc",
                            "val_robust_acc", "lr", "epoch_seconds", "train_seconds", "eval_seconds",
                            "images_per_s"}
    assert all(type(v) is float and "/" not in k for k, v in metrics.items())
    assert reports[0].checkpoint_dir is None and reports[0].epoch_seconds >= reports[0].train_seconds > 0


def test_arch_that_does_not_fit_the_dataset_is_rejected():
    with pytest.raises(ValueError, match="adapt_arch"):
        fit(WRNConfig(depths=(1, 1, 1), channels=(16, 32, 64)), Recipe(epochs=1), "digits")


def test_adversarial_training_gives_real_robustness(standard_fit, robust_fit, digits):
    from trainer import evaluate

    plain = evaluate(standard_fit.model, "digits", attacks=("clean", "pgd20"))
    robust = evaluate(robust_fit.model, "digits", attacks=("clean", "pgd20"))
    assert plain["clean"] > 0.9 and robust["clean"] > 0.75
    assert robust["pgd20"] > plain["pgd20"] + 0.25


def test_standard_is_selected_by_clean_accuracy_and_best_pt_is_that_epoch(standard_fit):
    from trainer import evaluate

    history = standard_fit.history
    chosen = max(history, key=lambda h: (h.val_clean_acc, h.val_robust_acc))  # the first such
    assert standard_fit.best.epoch == chosen.epoch
    assert chosen.val_clean_acc == max(h.val_clean_acc for h in history) > 0.9
    best = torch.load(standard_fit.best_model_path, weights_only=True)
    assert best["epoch"] == chosen.epoch
    # best.pt holds that epoch's weights: it scores that epoch's validation clean accuracy
    assert evaluate(standard_fit.best_model_path, split="val", attacks=("clean",))["clean"] == \
        pytest.approx(chosen.val_clean_acc)
    # the sweep's recorder applies the same rule to its plain result dicts
    records = [{"epoch": h.epoch, **h.metrics()} for h in history]
    assert best_epoch(records, Recipe(method="standard").selected_by)["epoch"] == chosen.epoch


def test_robust_methods_are_selected_by_robust_accuracy_then_clean():
    reports = [EpochReport(epoch=e, train_loss=1.0, train_clean_acc=0.5, train_adv_acc=0.3,
                           val_clean_acc=clean, val_robust_acc=robust, lr=0.1, train_seconds=1.0,
                           eval_seconds=1.0, images_per_s=1.0, epoch_seconds=2.0, status="running")
               for e, (clean, robust) in enumerate([(0.9, 0.3), (0.7, 0.4), (0.8, 0.4), (0.99, 0.1)], 1)]
    assert best_epoch(reports, Recipe(method="trades").selected_by).epoch == 3
    assert best_epoch(reports, Recipe(method="standard").selected_by).epoch == 4
    assert best_epoch([], Recipe().selected_by) is None


@pytest.mark.parametrize("clip", [None, 5.0])
def test_a_blown_up_run_is_diverged_with_or_without_clipping(clip, tmp_path):
    # lr 1000: the loss reaches ~1e15 without clipping, ~4e4 with clip 5, at chance accuracy
    result = fit(TINY, Recipe(method="pgd_at", epochs=3, steps=1, lr=1000, grad_clip=clip, val_size=50),
                 "digits", checkpoint_dir=tmp_path)
    assert result.status == Status.DIVERGED and result.epochs_done == 1
    assert result.history[0].train_loss > 1000 and result.history[0].train_clean_acc < 0.2
    assert result.best is None and result.best_model_path is None


@pytest.mark.parametrize("method", ["pgd_at", "trades", "mart"])
def test_healthy_runs_of_every_method_keep_far_from_the_collapse_rule(method):
    """Two seeds each, judged also by a rule twice as eager (a fall to 70% of the peak by 1.5
    standard errors, in one epoch), so that another CPU's numerics cannot flip the verdict."""
    for seed in (0, 1):
        result = fit(SMALL, Recipe(method=method, epochs=6, steps=2, val_size=200, val_attack_steps=3,
                                   seed=seed), "digits")
        assert result.status == Status.FINISHED
        robust = [h.val_robust_acc for h in result.history]
        train = [h.train_adv_acc for h in result.history]
        assert max(robust) > 0.15  # it learned: a peak above chance by 2 s.e., which the rule judges
        assert not any(catastrophic_overfit(robust[:k], train[:k], n=200, num_classes=10, drop=0.3,
                                            z=1.5, epochs=1) for k in range(2, 7))


def test_the_collapse_rule_is_not_applied_to_standard_training():
    """Without an attack in training its PGD accuracy falls as it learns, by design."""
    from trainer.loop import Run

    spec = dataset_spec("digits")
    for method, expected in (("standard", Status.RUNNING), ("pgd_at", Status.CATASTROPHIC_OVERFIT)):
        run = Run.start(SMALL, Recipe(method=method, epochs=10).for_dataset(spec), spec, torch.device("cpu"))
        run.history = [EpochReport(epoch=e + 1, train_loss=1.0, train_clean_acc=0.5, train_adv_acc=acc,
                                   val_clean_acc=0.5, val_robust_acc=robust, lr=0.1, train_seconds=1,
                                   eval_seconds=1, images_per_s=1, epoch_seconds=2, status=Status.RUNNING)
                       for e, (robust, acc) in enumerate([(0.4, 0.4), (0.5, 0.5), (0.05, 0.8)])]
        run.epoch = 3
        assert run.judge(0.02, 0.9) == expected


def test_healthy_runs_never_trip_the_divergence_rule(standard_fit, robust_fit):
    for result in (standard_fit, robust_fit):
        assert result.status == Status.FINISHED
        assert not any(diverged(h.train_loss, h.train_clean_acc, 10) for h in result.history)
    assert not diverged(2.31, 0.10, 10)  # an epoch at chance with a uniform guess's loss
    assert not diverged(40.0, 0.60, 10)  # a large loss while learning
    assert diverged(40.0, 0.11, 10) and diverged(float("nan"), 0.9, 10) and diverged(float("inf"), 0.9, 100)


def test_selecting_on_the_test_split_trains_on_all_and_validates_on_test(digits):
    """The references' protocol: nothing held out; the per-epoch 'validation' is the test split."""
    from trainer.compute import trial_flops
    from trainer.evaluation import evaluate

    recipe = Recipe(method="standard", epochs=1, select_on="test", seed=0)
    result = fit(SMALL, recipe, "digits")
    test_clean = evaluate(result.model, "digits", attacks=("clean",), split="test")["clean"]
    assert result.final.val_clean_acc == test_clean
    spec = dataset_spec("digits")
    resolved = recipe.for_dataset(spec)
    assert resolved.val_size == 397 and resolved.training_images(spec) == 1400
    flops = trial_flops(SMALL, recipe, "digits")
    assert flops.train_images == 1400 // 128 * 128
    assert trial_flops(SMALL, Recipe(method="standard", epochs=1), "digits").train_images == 1200 // 128 * 128


def test_a_training_subset_is_what_an_epoch_trains_on():
    from trainer.compute import trial_flops

    recipe = Recipe(method="standard", epochs=1, train_subset=256, val_size=20)
    assert trial_flops(SMALL, recipe, "digits").train_images == 256
    with pytest.raises(ValueError, match="exceeds the 100 training images"):
        fit(SMALL, Recipe(method="standard", epochs=1, train_subset=100, val_size=20), "digits")
    result = fit(SMALL, recipe, "digits")
    assert result.status == Status.FINISHED and result.final.images_per_s > 0


def test_a_checkpoint_from_before_a_recipe_field_existed_resumes(tmp_path):
    """Recipe fields added later (val_step_size, select_on, train_subset) are missing from older
    checkpoints; they held what the field's default now says, so the run resumes."""
    from trainer import checkpoint

    recipe = Recipe(method="standard", epochs=2, val_size=20)
    fit(TINY, dataclasses.replace(recipe, epochs=2), "digits", checkpoint_dir=tmp_path)
    path = tmp_path / checkpoint.CHECKPOINT_FILE
    state = checkpoint.load(path)
    for name in ("val_step_size", "select_on", "train_subset"):
        del state["recipe"][name]
    state["epoch"], state["history"], state["status"] = 1, state["history"][:1], "running"
    checkpoint.save_atomic(state, path)
    resumed = fit(TINY, recipe, "digits", checkpoint_dir=tmp_path)
    assert resumed.status == Status.FINISHED and resumed.epochs_done == 2
