"""python -m search.query COMMAND: ask the trial database questions from the command line."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from space_defs import format_count
from space_defs.cli import Parser, count
from trainer.atomic import atomic_path
from trainer.status import Status

from .errors import StoreError, UsageError
from .objectives import DIRECTIONS, described, parse_objectives
from .pareto import numeric_column, pareto_front
from .ranking import NOISE_Z, arch_label, best, full_fidelity, roles, top
from .schema import FRACTION, SEARCH, TABLES, TRIALS
from .seeds import confirmation
from ..storage.uri import DEFAULT_STORAGE
from .store import list_sweeps, load_epochs, load_evals, load_trials

DESCRIPTION = """Ask the trial database questions: which sweeps it holds, the best trials by a
column, Pareto fronts, the most robust configuration per budget, one trial in full; export its
tables and draw figures. From Python: search.db (load_sweep, full_fidelity, pareto_front, best)."""

_FRACTIONS = {f.name for table in TABLES.values() for f in table.schema
              if (f.metadata or {}).get(b"unit", b"").decode() == FRACTION}
_INTEGERS = {f.name for table in TABLES.values() for f in table.schema if pa.types.is_integer(f.type)}
_COUNTS = {"params", "macs", "budget"}


def _cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "-"
    if column in _FRACTIONS:
        return f"{100 * value:.2f}%"
    if column in _COUNTS:
        return format_count(float(value))
    if column in _INTEGERS:
        return str(int(value))  # pandas widens an integer column holding a null to float
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"
    return str(value)


def render_table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """Columns of df as aligned text; accuracies in %, counts in K/M/G."""
    columns = [c for c in (columns or df.columns) if c in df.columns]
    if df.empty:
        return "(no rows)"
    text = pd.DataFrame({c: [_cell(c, v) for v in df[c].tolist()] for c in columns})
    return text.to_string(index=False)


_TRIAL_COLUMNS = ["sweep", "trial_id", "arch", "role", "seed", "params", "macs", "status", "epochs_done",
                  "best_val_robust_acc", "best_val_clean_acc", "best_val_robust_epoch"]


def _parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--storage", default=DEFAULT_STORAGE,
                        help="storage root holding the sweeps (local path or s3://...)")
    common.add_argument("--sweep", action="append", default=None,
                        help="only these sweeps (repeat or comma-separate)")
    common.add_argument("--budget", type=count, help="only this parameter budget (e.g. 36.5M, 2_000_000)")
    common.add_argument("--dataset", help="only this dataset")
    common.add_argument("--method", help="only this training method")
    ranked = Parser(add_help=False)
    ranked.add_argument("--all-fidelities", action="store_true",
                        help="include trials not trained to the full schedule (ASHA-stopped, running)")

    parser = Parser(prog="python -m search.query", description=DESCRIPTION,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    sub.add_parser("sweeps", parents=[common], help="sweeps with trial counts and best so far")
    p = sub.add_parser("top", parents=[common, ranked], help="the n best trials by a column")
    p.add_argument("--by", default="val_robust_acc", help="numeric column to sort by")
    p.add_argument("-n", type=int, default=10, help="how many trials to show (default: 10)")
    p.add_argument("--ascending", action="store_true", help="smallest values first (e.g. --by params)")
    p = sub.add_parser("pareto", parents=[common, ranked], help="the Pareto front")
    p.add_argument("--objectives", default="val_robust_acc,val_clean_acc,params",
                   help="comma-separated numeric columns: '-col' minimises, '+col' maximises, a "
                        "bare name takes its natural direction (max: "
                        f"{', '.join(n for n, d in DIRECTIONS.items() if d == 'max')}; min: "
                        f"{', '.join(n for n, d in DIRECTIONS.items() if d == 'min')}; any "
                        "other column: max)")
    p = sub.add_parser("best", parents=[common, ranked],
                       help="the most robust configuration per budget, with runners-up")
    p.add_argument("--runners-up", type=int, default=4,
                   help="how many next-best trials to compare with the best (default: 4)")
    p = sub.add_parser("show", parents=[common], help="one trial: config, curve, evals")
    p.add_argument("trial", help="trial id")
    p = sub.add_parser("export", parents=[common], help="write a table to CSV or Parquet")
    p.add_argument("--table", choices=sorted(TABLES), default="trials", help="(default: trials)")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv", help="(default: csv)")
    p.add_argument("--out", required=True, help="file to write")
    p = sub.add_parser("plot", parents=[common, ranked], help="PNG figures and an HTML page")
    p.add_argument("--out", required=True, help="directory to write the figures into")
    sub.add_parser("bench", help="time the Pareto front of 1M rows and loading 10,000 trials")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _COMMANDS[args.command](args)
    except (UsageError, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _trials(args: argparse.Namespace) -> pd.DataFrame:
    sweeps = None if args.sweep is None else [s for arg in args.sweep for s in arg.split(",") if s]
    if not list_sweeps(args.storage):
        raise UsageError(f"no sweeps under {args.storage}; run python -m search.run first or pass "
                         "--storage")
    df = load_trials(args.storage, sweeps, budget=args.budget, dataset=args.dataset, method=args.method)
    if not getattr(args, "all_fidelities", True):
        df = full_fidelity(df)
    return df.assign(arch=arch_label(df))


def _nonempty(df: pd.DataFrame, what: str = "trials") -> pd.DataFrame:
    if df.empty:
        raise UsageError(f"no {what} match the filters; drop a filter, or pass --all-fidelities "
                         "to include trials not trained to the full schedule")
    return df


_HEALTHY = (Status.RUNNING, Status.FINISHED, Status.STOPPED_EARLY)


def _cmd_sweeps(args: argparse.Namespace) -> None:
    df = _trials(args)
    rows = []
    for sweep, g in df.groupby("sweep", sort=True):
        full = full_fidelity(g)
        lead = full.loc[full["best_val_robust_acc"].idxmax()] if full["best_val_robust_acc"].notna().any() else None
        counts = g["status"].value_counts()
        rows.append({
            "sweep": sweep, "dataset": ",".join(sorted(g["dataset"].unique())),
            "budget": int(g["budget"].max()), "trials": len(g),
            **{s: int(counts.get(s, 0)) for s in _HEALTHY},
            "failed/diverged": len(g) - sum(int(counts.get(s, 0)) for s in _HEALTHY),
            "best_val_robust_acc": None if lead is None else lead["best_val_robust_acc"],
            "best_trial": "-" if lead is None else lead["trial_id"],
            "updated_at": g["updated_at"].max(),
        })
    print(render_table(pd.DataFrame(rows)))


def _cmd_top(args: argparse.Namespace) -> None:
    df = _nonempty(_trials(args))
    column = numeric_column(df, args.by)
    print(render_table(top(df, column, args.n, args.ascending), _TRIAL_COLUMNS + [column]))


def _cmd_pareto(args: argparse.Namespace) -> None:
    df = _nonempty(_trials(args))
    objectives = parse_objectives(args.objectives)
    columns = [numeric_column(df, o.name) for o in objectives]
    front = pareto_front(df, objectives).sort_values(columns[0], ascending=not objectives[0].maximize)
    print(described(objectives))
    print(f"Pareto front of {len(df)} trials: {len(front)} trials")
    print(render_table(front, _TRIAL_COLUMNS + columns))


def _cmd_best(args: argparse.Namespace) -> None:
    every = _trials(argparse.Namespace(**{**vars(args), "all_fidelities": True}))
    search = every[roles(every) == SEARCH]
    rankings = best(_nonempty(search if args.all_fidelities else full_fidelity(search)), args.runners_up)
    if not rankings:
        raise UsageError("no trial matching the filters has a validation result yet")
    for r in rankings:
        lead = r.table.iloc[0]
        n = "n unknown" if pd.isna(lead["val_size"]) else f"n={int(lead['val_size'])}"
        print(f"{r.dataset} / {r.method} / budget {format_count(r.budget)} params: {r.n_trials} trials")
        if "selected_on" in r.table and (r.table["selected_on"] == "test").any():
            print("  selected on the TEST split (the references' protocol): these val numbers "
                  "are test numbers, and optimistic")
        print(f"  most robust: {lead['arch']}  (trial {lead['trial_id']}, sweep {lead['sweep']})")
        print(f"    {format_count(lead['params'])} params, {format_count(lead['macs'])} MACs; val robust "
              f"{100 * lead['best_val_robust_acc']:.2f}% +- {lead['se_pts']:.2f} ({n}), clean "
              f"{_cell('best_val_clean_acc', lead['best_val_clean_acc'])} at epoch "
              f"{_cell('best_val_robust_epoch', lead['best_val_robust_epoch'])}")
        if len(r.table) > 1:
            print(f"  runners-up (gap in accuracy points; within noise if gap_z < {NOISE_Z:g}; "
                  "se_pts: 1 binomial s.e. on the images measured, one training seed each, so "
                  "the seed-to-seed spread is not in it):")
            print("    " + render_table(r.table.iloc[1:], ["trial_id", "arch", "params", "macs",
                                                           "best_val_robust_acc", "best_val_clean_acc",
                                                           "gap_pts", "se_pts", "gap_z", "within_noise"]
                                        ).replace("\n", "\n    "))
        print()
    for sweep, trials in every.groupby("sweep", sort=True):
        confirmed = confirmation(trials, load_evals(args.storage, sweep))
        if confirmed is not None:
            print(f"sweep {sweep}, " + "\n  ".join(confirmed.describe()) + "\n")


def _cmd_show(args: argparse.Namespace) -> None:
    trials = _trials(args)
    row = trials[(trials["trial_id"] == args.trial).to_numpy(dtype=bool)]
    if row.empty:
        raise UsageError(f"no trial {args.trial!r} in the selected sweeps; list trials with "
                         "python -m search.query top --all-fidelities")
    if row["sweep"].nunique() > 1:
        raise UsageError(f"trial {args.trial!r} is in sweeps {', '.join(row['sweep'])}; pass --sweep")
    trial = row.iloc[0]
    keys = dict(sweeps=trial["sweep"], trial_id=args.trial)
    for name in ["arch"] + list(TRIALS.columns):
        print(f"{name:>22}  {_cell(name, trial[name])}")
    epochs = load_epochs(args.storage, **keys).sort_values("epoch")
    print(f"\nlearning curve ({len(epochs)} epochs)")
    print(render_table(epochs, ["epoch", "train_loss", "train_clean_acc", "train_adv_acc",
                                "val_clean_acc", "val_robust_acc", "lr", "images_per_s"]))
    evals = load_evals(args.storage, **keys)
    print(f"\nfinal evaluations ({len(evals)})")
    print(render_table(evals, ["attack", "split", "accuracy", "n_examples", "seconds"]))


def _cmd_export(args: argparse.Namespace) -> None:
    trials = _trials(args)
    data = trials.drop(columns="arch") if args.table == "trials" else \
        _of_trials(load_epochs if args.table == "epochs" else load_evals, args.storage, trials)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"directory {out.parent} does not exist; create it or pick another --out")
    with atomic_path(out) as tmp:
        if args.format == "csv":
            data.to_csv(tmp, index=False)
        else:
            data.to_parquet(tmp, index=False)
    print(f"wrote {len(data)} {args.table} rows to {out}")


def _cmd_plot(args: argparse.Namespace) -> None:
    from .plots import render

    trials = _nonempty(_trials(args))
    epochs = _of_trials(load_epochs, args.storage, trials)
    for path in render(trials, epochs, Path(args.out)):
        print(f"wrote {path}")


def _of_trials(loader: Any, storage: str, trials: pd.DataFrame) -> pd.DataFrame:
    """The epochs or evals rows of the given trials."""
    rows = loader(storage, sorted(trials["sweep"].unique()))
    return rows.merge(trials[["sweep", "trial_id"]], on=["sweep", "trial_id"])


def _cmd_bench(args: argparse.Namespace) -> None:
    from .bench import run

    run()


_COMMANDS = {"sweeps": _cmd_sweeps, "top": _cmd_top, "pareto": _cmd_pareto, "best": _cmd_best,
             "show": _cmd_show, "export": _cmd_export, "plot": _cmd_plot, "bench": _cmd_bench}
