import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search.db import best, full_fidelity, load_sweep, most_robust, pareto_front, top
from search.db import cli as cli_module
from search.db.cli import main
from search.db.ranking import standard_error
from search.db.schema import EpochRow, EvalRow, TrialRow
from search.db.store import TrialStore, load_trials
from space_defs import WRNConfig, macs, param_count

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
ARCHS = [((5, 5, 5), (320, 640, 512)), ((4, 4, 4), (160, 320, 640)), ((2, 6, 3), (96, 256, 384)),
         ((3, 3, 3), (64, 128, 256)), ((6, 2, 2), (128, 256, 128)), ((1, 1, 1), (16, 32, 64))]
ROBUST = [0.52, 0.515, 0.47, 0.45, 0.44, None]
STATUS = ["finished", "finished", "finished", "finished", "stopped_early", "failed"]


def make_sweep(root, sweep="s1", budget=40_000_000, dataset="cifar10", selected_on="val"):
    rows, epochs = [], []
    for i, ((depths, channels), robust, status) in enumerate(zip(ARCHS, ROBUST, STATUS)):
        cfg = WRNConfig(depths=depths, channels=channels)
        done = {"finished": 10, "stopped_early": 3, "failed": 1}[status]
        rows.append(TrialRow(
            sweep=sweep, trial_id=f"{sweep}_t{i}", status=status, space="wrn3", **cfg.to_dict(),
            params=param_count(cfg), macs=macs(cfg), budget=budget, dataset=dataset, method="pgd_at",
            epochs_planned=10, eps=8 / 255, seed=i, recipe_json="{}", val_size=1000, epochs_done=done,
            selected_on=selected_on,
            best_val_robust_acc=robust, best_val_robust_epoch=None if robust is None else done,
            best_val_clean_acc=None if robust is None else robust + 0.3, started_at=T0, updated_at=T0,
            error="CUDA out of memory" if status == "failed" else None))
        epochs += [EpochRow(sweep=sweep, trial_id=f"{sweep}_t{i}", epoch=e, val_robust_acc=(robust or 0.1) * e / done,
                            val_clean_acc=0.8 * e / done, train_loss=2.0 / e, recorded_at=T0)
                   for e in range(1, done + 1)]
    evals = [EvalRow(sweep=sweep, trial_id=f"{sweep}_t0", attack="autoattack", split="test", accuracy=0.5,
                     n_examples=10_000, recorded_at=T0)]
    with TrialStore(root, sweep) as store:
        store.write(trials=rows, epochs=epochs, evals=evals)


@pytest.fixture
def root(tmp_path):
    make_sweep(tmp_path / "runs")
    make_sweep(tmp_path / "runs", "s2", budget=10_000_000, dataset="cifar100")
    return tmp_path / "runs"


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_python_api(root):
    df = load_sweep("s1", storage=str(root))
    assert len(df) == 6 and set(full_fidelity(df)["status"]) == {"finished"}
    assert top(df, "val_robust_acc", 2)["trial_id"].tolist() == ["s1_t0", "s1_t1"]
    full = full_fidelity(df)
    front = pareto_front(full, ["val_robust_acc", "-params"])
    dominated = {a.trial_id for a in full.itertuples() for b in full.itertuples()
                 if b.best_val_robust_acc >= a.best_val_robust_acc and b.params <= a.params
                 and (b.best_val_robust_acc, b.params) != (a.best_val_robust_acc, a.params)}
    assert set(front["trial_id"]) == set(full["trial_id"]) - dominated and len(front) >= 2
    [ranking] = best(full_fidelity(df), runners_up=2)
    assert (ranking.dataset, ranking.budget, ranking.n_trials) == ("cifar10", 40_000_000, 4)
    table = ranking.table
    assert table["trial_id"].tolist() == ["s1_t0", "s1_t1", "s1_t2"]
    np.testing.assert_allclose(table["gap_pts"], [0, 0.5, 5.0], atol=1e-9)
    np.testing.assert_allclose(table["se_pts"], 100 * np.sqrt([.52 * .48, .515 * .485, .47 * .53]) / np.sqrt(1000))
    assert table["gap_z"].iloc[1] < 2 < table["gap_z"].iloc[2]  # 0.5 points is noise at n=1000
    assert np.isnan(standard_error(0.5, np.nan))


def test_best_and_its_fidelity_filter(root, capsys):
    code, out, _ = cli(capsys, "best", "--storage", str(root), "--sweep", "s1")
    assert code == 0
    assert "d5-5-5 c320-640-512" in out and "52.00% +- 1.58 (n=1000)" in out
    assert "s1_t4" not in out  # stopped early: not comparable
    assert "seed-to-seed spread is not in it" in out and "TEST split" not in out
    code, out, _ = cli(capsys, "best", "--storage", str(root), "--all-fidelities", "--runners-up", "10")
    assert "s1_t4" in out and "cifar100 / pgd_at / budget 10.00M" in out


def test_sweeps_top_pareto_show(root, capsys):
    code, out, _ = cli(capsys, "sweeps", "--storage", str(root))
    assert code == 0 and out.splitlines()[1].split()[:4] == ["s1", "cifar10", "40.00M", "6"]
    code, out, _ = cli(capsys, "top", "--storage", str(root), "--by", "val_robust_acc", "-n", "3",
                       "--dataset", "cifar100")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4 and "s2_t0" in lines[1] and "52.00%" in lines[1]
    code, out, _ = cli(capsys, "pareto", "--storage", str(root), "--sweep", "s1",
                       "--objectives", "val_robust_acc,-macs")
    assert code == 0 and "Pareto front of 4 trials" in out
    assert out.startswith("objectives: val_robust_acc (max), macs (min)\n")
    code, bare, _ = cli(capsys, "pareto", "--storage", str(root), "--sweep", "s1",
                        "--objectives", "val_robust_acc,macs")  # macs: its natural direction
    assert code == 0 and bare == out
    code, out, _ = cli(capsys, "show", "s1_t0", "--storage", str(root))
    assert code == 0 and "learning curve (10 epochs)" in out and "autoattack" in out
    code, out, _ = cli(capsys, "show", "s1_t5", "--storage", str(root))
    assert "CUDA out of memory" in out


@pytest.mark.parametrize("args, message", [
    (["top", "--sweep", "nope"], "unknown sweep 'nope'"),
    (["top", "--by", "colour"], "unknown column 'colour'"),
    (["pareto", "--objectives", "val_robust_acc,dataset"], "not numeric"),
    (["pareto", "--objectives", "val_robust_acc,-"], "empty objective"),
    (["pareto", "--objectives", "macs,-macs"], "give each once"),
    (["show", "t999"], "no trial 't999'"),
    (["export", "--format", "xml", "--out", "OUT"], "invalid choice: 'xml'"),
    (["export", "--sweep", "nope", "--out", "OUT"], "unknown sweep"),
    (["plot", "--dataset", "mnist", "--out", "OUT"], "no trials match"),
    (["top", "--budget", "lots"], "is not a count"),
])
def test_errors_exit_2_with_one_line_and_write_nothing(root, tmp_path, capsys, args, message):
    out_path = tmp_path / "out"
    args = [str(out_path) if a == "OUT" else a for a in args] + ["--storage", str(root)]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out_path.exists()


def test_empty_storage_says_how_to_fix_it(tmp_path, capsys):
    code, _, err = cli(capsys, "sweeps", "--storage", str(tmp_path / "none"))
    assert code == 2 and "no sweeps under" in err


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(root, tmp_path, capsys, fmt):
    out = tmp_path / f"trials.{fmt}"
    assert cli(capsys, "export", "--storage", str(root), "--format", fmt, "--out", str(out), "--budget", "40M")[0] == 0
    back = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert sorted(back["trial_id"]) == sorted(load_trials(root, budget=40_000_000)["trial_id"])
    out = tmp_path / f"epochs.{fmt}"
    assert cli(capsys, "export", "--storage", str(root), "--format", fmt, "--out", str(out), "--table", "epochs",
               "--sweep", "s2")[0] == 0
    back = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert set(back["sweep"]) == {"s2"} and len(back) == 10 * 4 + 3 + 1


def test_plots_render(root, tmp_path, capsys):
    out = tmp_path / "figs"
    code, text, _ = cli(capsys, "plot", "--storage", str(root), "--out", str(out))
    assert code == 0
    for name in ("pareto.png", "stage_share.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    page = (out / "report.html").read_text()
    assert "plotly" in page and "s1_t0 d5-5-5 c320-640-512" in page
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "pareto.png", "report.html", "stage_share.png"]


def test_bench_runs(capsys):
    from search.db.bench import run

    run(n_rows=20_000, n_trials=300)
    out = capsys.readouterr().out
    assert "pareto front, 20,000 rows" in out and "load 300 trials after compaction" in out


def test_most_robust_breaks_ties_by_clean_accuracy_then_size_then_id():
    df = pd.DataFrame({"trial_id": ["d", "c", "b", "a", "e"],
                       "best_val_robust_acc": [0.5, 0.5, 0.5, 0.5, float("nan")],
                       "best_val_clean_acc": [0.8, 0.9, 0.8, 0.8, 0.99],
                       "params": [10, 20, 5, 5, 1]})
    assert list(most_robust(df)["trial_id"]) == ["c", "a", "b", "d"]


def test_budget_filter_reads_counts_as_search_run_does(root, capsys):
    for budget in ("10M", "10_000_000", "10000000", "0.01G"):
        code, out, _ = cli(capsys, "top", "--storage", str(root), "--all-fidelities", "--budget", budget)
        assert code == 0 and "s2_t0" in out and "s1_t0" not in out


def test_help_is_whole_sentences_and_documents_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    description = capsys.readouterr().out.split("\n\n")[1]
    assert e.value.code == 0 and description.endswith(".") and "::" not in description
    commands = next(a for a in cli_module._parser()._actions if a.dest == "command").choices
    for name, parser in commands.items():
        undocumented = [a.option_strings or a.dest for a in parser._actions if not a.help]
        assert not undocumented, f"{name}: {undocumented}"


def test_python_m_search_query_runs_the_cli(root):
    out = subprocess.run([sys.executable, "-m", "search.query", "sweeps", "--storage", str(root)],
                         capture_output=True, text=True, cwd=Path(__file__).parents[3])
    assert out.returncode == 0 and out.stdout.splitlines()[1].split()[:2] == ["s1", "cifar10"]


def test_best_says_when_the_trials_were_selected_on_the_test_split(tmp_path, capsys):
    make_sweep(tmp_path, sweep="ref", selected_on="test")
    code, out, _ = cli(capsys, "best", "--storage", str(tmp_path), "--sweep", "ref")
    assert code == 0 and "selected on the TEST split" in out and "optimistic" in out
