import pytest
import torch

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
    small_aa = AutoAttack(apgd_iters=20, targets=3, fab_iters=20, fab_targets=3, square_queries=100)
    acc = evaluate(robust_fit.model, "digits", attacks=("clean", "pgd20", small_aa), n=40)
    assert acc["autoattack"] <= acc["pgd20"] <= acc["clean"]
    assert acc["clean"] > 0.7


def test_unknown_attack_and_split_are_clear_errors(robust_fit):
    with pytest.raises(ValueError, match="unknown attack"):
        evaluate(robust_fit.model, "digits", attacks=("pgd-k",))
    with pytest.raises(ValueError, match="split"):
        evaluate(robust_fit.model, "digits", split="holdout")


def test_a_checkpoint_is_attacked_at_the_eps_it_was_trained_at(tmp_path):
    from space_defs.arch import WRNConfig
    from trainer import Recipe, dataset_spec, fit
    from trainer.evaluation import evaluation_steps, resolve

    tiny = WRNConfig(depths=(1, 1, 1), channels=(8, 16, 32), data=dataset_spec("digits").data)
    fit(tiny, Recipe(method="pgd_at", epochs=1, steps=1, eps=0.1, step_size=0.025, val_size=20), "digits",
        checkpoint_dir=tmp_path)
    assert dataset_spec("digits").eps == 0.2  # not the dataset's default
    _, _, budget = resolve(tmp_path)
    assert (budget.eps, budget.step_size, budget.source) == (0.1, 0.025, "as trained")
    _, _, given = resolve(tmp_path, eps=0.2)
    assert (given.eps, given.step_size) == pytest.approx((0.2, 0.05))  # the trained step-to-eps ratio
    steps = list(evaluation_steps(tmp_path, attacks=("clean", "pgd5"), n=20))
    assert [s.attack for s in steps] == ["clean", "pgd5"] and all(s.final and s.n == 20 for s in steps)
    assert steps[-1].budget == budget and steps[-1].eta_seconds == 0
    for eps, step in ((8, None), (-0.1, None), (0, None), (None, -0.05), (None, 1.5)):
        with pytest.raises(ValueError, match=r"in \(0, 1\]"):
            resolve(tmp_path, eps=eps, step_size=step)


def test_autoattack_reports_its_components_as_it_goes(robust_fit):
    seen = []
    small_aa = AutoAttack(apgd_iters=5, targets=2, fab_iters=5, fab_targets=2, square_queries=20)
    acc = evaluate(robust_fit.model, "digits", attacks=("clean", small_aa), n=30, progress=seen.append)
    assert [d.attack for d in seen] == ["clean", "autoattack/apgd-ce", "autoattack/apgd-t",
                                        "autoattack/fab-t", "autoattack/square", "autoattack"]
    assert [d.final for d in seen] == [True, False, False, False, False, True]
    accuracies = [d.accuracy for d in seen]
    assert accuracies == sorted(accuracies, reverse=True) and acc["autoattack"] == accuracies[-1]
    assert seen[-1].seconds >= sum(d.seconds for d in seen[1:5]) and seen[1].eta_seconds > 0
    assert seen[0].steps == 0 and seen[-1].steps is None and seen[-1].protocol == "default"


def test_the_seeds_autoattack_is_its_own_number_not_the_worst_case_with_pgd(robust_fit):
    small_aa = AutoAttack(apgd_iters=5, targets=2, fab_iters=5, fab_targets=2, square_queries=20)
    attacks = ("clean", "pgd20", small_aa)
    cascaded = evaluate(robust_fit.model, "digits", attacks=attacks, n=60)
    alone = evaluate(robust_fit.model, "digits", attacks=("clean", small_aa), n=60)
    seed = evaluate(robust_fit.model, "digits", attacks=attacks, n=60, protocol="robustwrn")
    assert cascaded["autoattack"] <= cascaded["pgd20"]  # ours: the worst case of all
    assert seed["autoattack"] == alone["autoattack"]  # the seed's: AutoAttack on its own


def test_an_evaluation_gives_the_same_numbers_again_and_at_1_or_2_threads(robust_fit):
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            runs.append(evaluate(robust_fit.model, "digits", attacks=("pgd20", "cw"), n=60))
    finally:
        torch.set_num_threads(threads)
    assert runs[0] == runs[1] == runs[2]
