import pytest

from trainer import evaluate
from trainer.autoattack import AutoAttack


def test_evaluate_a_checkpoint_directory(tmp_path):
    from space_defs.arch import WRNConfig
    from trainer import Recipe, dataset_spec, fit

    tiny = WRNConfig(depths=(1, 1, 1), channels=(16, 32, 64), data=dataset_spec("digits").data)
    result = fit(tiny, Recipe(method="standard", epochs=2, val_size=50), "digits", checkpoint_dir=tmp_path)
    acc = evaluate(tmp_path, attacks=("clean", "fgsm"), n=100)
    assert set(acc) == {"clean", "fgsm"} and acc["fgsm"] <= acc["clean"]
    assert evaluate(result.checkpoint_path, attacks=["clean"], n=100) == {"clean": acc["clean"]}


def test_autoattack_is_at_least_as_strong_as_pgd(robust_fit):
    # A few dozen images and a small Square budget keep this at seconds on 2 cores.
    small_aa = AutoAttack(apgd_iters=20, targets=3, square_queries=100)
    acc = evaluate(robust_fit.model, "digits", attacks=("clean", "pgd20", small_aa), n=40)
    assert acc["autoattack"] <= acc["pgd20"] <= acc["clean"]
    assert acc["clean"] > 0.7


def test_unknown_attack_and_split_are_clear_errors(robust_fit):
    with pytest.raises(ValueError, match="unknown attack"):
        evaluate(robust_fit.model, "digits", attacks=("pgd-k",))
    with pytest.raises(ValueError, match="split"):
        evaluate(robust_fit.model, "digits", split="holdout")
