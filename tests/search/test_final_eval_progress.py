"""--final-eval's task streams each attack as it finishes (in process: the task is a generator)."""

from search.final_eval import _progress, evaluate_remote
from space_defs.arch import WRNConfig
from trainer import Recipe, dataset_spec, fit


def test_each_attack_arrives_with_its_accuracy_seconds_eps_and_time_left(tmp_path):
    tiny = WRNConfig(depths=(1, 1, 1), channels=(4, 8, 8), data=dataset_spec("digits").data)
    fit(tiny, Recipe(method="pgd_at", epochs=1, steps=1, eps=0.1, val_size=10), "digits",
        checkpoint_dir=tmp_path)
    stream = evaluate_remote(str(tmp_path), str(tmp_path / "best.pt"), ("clean", "pgd5", "fgsm"),
                             data_dir=str(tmp_path))
    first = next(stream)  # the first attack is reported before the others have run
    assert first["attack"] == "clean" and first["final"] and first["eta_seconds"] > 0
    events = [first, *stream]
    assert [e["attack"] for e in events] == ["clean", "pgd5", "fgsm"]
    assert all(e["eps"] == 0.1 and e["n_examples"] == 397 and e["seconds"] > 0 for e in events)
    etas = {"t1": None, "t2": None}
    assert "left" not in _progress("t1", first, etas)  # t2's time is not known yet
    line = _progress("t2", events[1], etas)
    assert line.startswith("[t2] pgd5: ") and "(eps 0.1)" in line and "left" in line
