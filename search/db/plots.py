"""Figures of a sweep: PNG (matplotlib) for papers, one self-contained HTML page (plotly) to explore."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from space_defs import WRNConfig, stage_params
from trainer.atomic import atomic_path, write_atomic

from trainer.status import standard_error

from .pareto import pareto_front
from .ranking import arch_label, clean_images, val_errors
from .seeds import VAL, VAL_CLEAN, confirmation

ROBUST, CLEAN = "best_val_robust_acc", "best_val_clean_acc"
N_CURVES = 10  # learning curves drawn in colour; the rest are grey context


def stage_shares(trials: pd.DataFrame) -> np.ndarray:
    """(n, 3) share of the parameters of the three stages that each stage holds (the stem and
    head, a few thousand parameters, are left out so the shares add up to one)."""
    per_stage = np.array([stage_params(WRNConfig.from_dict(t)) for t in trials.to_dict("records")],
                         dtype=float).reshape(-1, 3)
    return per_stage / per_stage.sum(axis=1, keepdims=True)


def render(trials: pd.DataFrame, epochs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write pareto.png, stage_share.png, curves.png and report.html into out_dir."""
    import plotly.graph_objects as go  # checked before anything is written
    from plotly.subplots import make_subplots

    trials = trials.assign(label=_labels(trials)).reset_index(drop=True)
    front = pareto_front(trials, [ROBUST, CLEAN]).sort_values(CLEAN)
    shares = stage_shares(trials)
    leaders = trials.nlargest(N_CURVES, ROBUST)
    size = 15 + 185 * trials["macs"].to_numpy(dtype=float) / max(float(trials["macs"].max()), 1.0)
    out_dir.mkdir(parents=True, exist_ok=True)

    robust_se, clean_se = val_errors(trials)
    seeds = confirmed_means(trials)
    fig = Figure(figsize=(6.5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(100 * trials[CLEAN], 100 * trials[ROBUST], xerr=100 * clean_se, yerr=100 * robust_se,
                fmt="none", ecolor="0.8", elinewidth=0.8, zorder=0, label="1 s.e. (images measured)")
    ax.scatter(100 * trials[CLEAN], 100 * trials[ROBUST], s=size, c="0.7", alpha=0.6, label="trials")
    ax.scatter(100 * front[CLEAN], 100 * front[ROBUST], s=size[front.index], c="C3", label="Pareto front")
    ax.plot(100 * front[CLEAN], 100 * front[ROBUST], c="C3", lw=1, drawstyle="steps-post")
    if len(seeds):
        ax.errorbar(100 * seeds["clean"], 100 * seeds["robust"], xerr=100 * seeds["clean_se"],
                    yerr=100 * seeds["robust_se"], fmt="D", c="C0", capsize=3,
                    label="confirmed: mean +- 1 s.e. over seeds")
    ax.set(xlabel="validation clean accuracy (%)", ylabel="validation robust accuracy (%)",
           title="Robust vs clean accuracy (marker area ~ MACs)")
    ax.legend(fontsize=8)
    paths = [_save(fig, out_dir / "pareto.png")]

    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    for i, ax in enumerate(axes):
        ax.errorbar(100 * shares[:, i], 100 * trials[ROBUST], yerr=100 * robust_se, fmt="none",
                    ecolor="0.8", elinewidth=0.8, zorder=0)
        points = ax.scatter(100 * shares[:, i], 100 * trials[ROBUST], c=trials["params"] / 1e6, s=18, cmap="viridis")
        ax.set(xlabel=f"share of parameters in stage {i + 1} (%)", title=f"stage {i + 1}")
    axes[0].set_ylabel("validation robust accuracy (%)")
    fig.colorbar(points, ax=axes, label="parameters (M)")
    paths.append(_save(fig, out_dir / "stage_share.png"))

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    lead_keys = set(zip(leaders["sweep"], leaders["trial_id"]))
    labels = dict(zip(zip(trials["sweep"], trials["trial_id"]), trials["label"]))
    by_trial = epochs.sort_values("epoch").groupby(["sweep", "trial_id"])
    images = dict(zip(zip(trials["sweep"], trials["trial_id"]),
                      zip(trials["val_size"].to_numpy(dtype=float, na_value=np.nan), clean_images(trials))))
    for key, curve in by_trial:
        lead = key in lead_keys
        style = dict(lw=1.5, label=labels.get(key)) if lead else dict(lw=0.6, c="0.8", zorder=0)
        for ax, column, n in zip(axes, ("val_robust_acc", "val_clean_acc"), images.get(key, (np.nan,) * 2)):
            (line,) = ax.plot(curve["epoch"], 100 * curve[column], **style)
            if lead:
                se = 100 * standard_error(curve[column].to_numpy(dtype=float), n)
                ax.fill_between(curve["epoch"], 100 * curve[column] - se, 100 * curve[column] + se,
                                color=line.get_color(), alpha=0.15, linewidth=0)
    for ax, what in zip(axes, ("robust", "clean")):
        ax.set(xlabel="epoch", ylabel=f"validation {what} accuracy (%)", title=f"{what} accuracy by epoch")
    if len(leaders) and len(epochs):
        axes[0].legend(fontsize=7, title=f"{len(leaders)} most robust (band: 1 s.e.)")
    paths.append(_save(fig, out_dir / "curves.png"))

    hover = trials["label"] + "<br>" + (trials["params"] / 1e6).round(2).astype(str) + "M params, " + \
        (trials["macs"] / 1e9).round(2).astype(str) + "G MACs"
    scatter = go.Figure([
        go.Scatter(x=100 * trials[CLEAN], y=100 * trials[ROBUST], mode="markers", name="trials",
                   text=hover, hoverinfo="text+x+y", marker=dict(size=np.sqrt(size), color="lightgray"),
                   error_x=dict(array=100 * clean_se, thickness=0.8, width=0, color="lightgray"),
                   error_y=dict(array=100 * robust_se, thickness=0.8, width=0, color="lightgray")),
        go.Scatter(x=100 * front[CLEAN], y=100 * front[ROBUST], mode="lines+markers", name="Pareto front",
                   text=hover[front.index], hoverinfo="text+x+y", line_shape="hv",
                   marker=dict(size=np.sqrt(size[front.index]), color="crimson")),
        *([go.Scatter(x=100 * seeds["clean"], y=100 * seeds["robust"], mode="markers",
                      name="confirmed: mean +- 1 s.e. over seeds", text=seeds["label"], hoverinfo="text+x+y",
                      marker=dict(symbol="diamond", size=9), error_x=dict(array=100 * seeds["clean_se"]),
                      error_y=dict(array=100 * seeds["robust_se"]))] if len(seeds) else []),
    ]).update_layout(xaxis_title="val clean accuracy (%)", yaxis_title="val robust accuracy (%)")
    stages = make_subplots(1, 3, shared_yaxes=True, subplot_titles=[f"stage {i}" for i in (1, 2, 3)])
    for i in range(3):
        stages.add_trace(go.Scatter(x=100 * shares[:, i], y=100 * trials[ROBUST], mode="markers", text=hover,
                                    hoverinfo="text+x+y", showlegend=False), 1, i + 1)
        stages.update_xaxes(title_text="share of parameters (%)", row=1, col=i + 1)
    stages.update_yaxes(title_text="val robust accuracy (%)", row=1, col=1)
    shown = trials.nlargest(5 * N_CURVES, ROBUST)
    html_keys = set(zip(shown["sweep"], shown["trial_id"]))
    curves = go.Figure([
        go.Scatter(x=c["epoch"], y=100 * c["val_robust_acc"], mode="lines", name=labels.get(key))
        for key, c in by_trial if key in html_keys
    ]).update_layout(xaxis_title="epoch", yaxis_title="val robust accuracy (%)")
    sections = [("Robust vs clean accuracy (marker size ~ MACs)", scatter),
                ("Robust accuracy against each stage's share of parameters", stages),
                (f"Learning curves of the {len(html_keys)} most robust trials", curves)]
    body = "".join(f"<h2>{html.escape(title)}</h2>" + f.to_html(full_html=False, include_plotlyjs=i == 0)
                   for i, (title, f) in enumerate(sections))
    sweeps = ", ".join(sorted(trials["sweep"].unique()))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(sweeps)}</title></head>"
            f"<body><h1>Sweeps {html.escape(sweeps)}: {len(trials)} trials</h1>{body}</body></html>")
    write_atomic(out_dir / "report.html", page.encode())
    return [*paths, out_dir / "report.html"]


def confirmed_means(trials: pd.DataFrame) -> pd.DataFrame:
    """Per confirmed config of each sweep (search.db.seeds): its mean validation robust and
    clean accuracy over seeds, their standard errors and a label."""
    rows = []
    for sweep, runs in trials.assign(arch=arch_label(trials)).groupby("sweep", sort=True):
        if (found := confirmation(runs)) is None:
            continue
        for arch, robust in found.scores[VAL].items():
            clean = found.scores[VAL_CLEAN][arch]
            rows.append({"sweep": sweep, "label": f"{arch}, {robust.n} seeds", "robust": robust.mean,
                         "robust_se": robust.se, "clean": clean.mean, "clean_se": clean.se})
    return pd.DataFrame(rows, columns=["sweep", "label", "robust", "robust_se", "clean", "clean_se"])


def regret_curves(events: pd.DataFrame, path: Path, *, grid_hours: float) -> Path:
    """Median (line) and quartiles (band) over seeds of each strategy's regret against
    simulated compute; ``events`` as search.replay writes them (strategy, seed, hours, regret)."""
    end = float(events["hours"].max())
    t = np.linspace(0.0, end, 400)
    before = float(events["regret"].max())  # no incumbent yet: as the worst config's regret
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for strategy, runs in events.groupby("strategy", sort=False):
        per_seed = []
        for _, run in runs.groupby("seed"):
            run = run.sort_values("hours")
            at = np.searchsorted(run["hours"].to_numpy(), t, side="right") - 1
            per_seed.append(np.where(at >= 0, run["regret"].to_numpy()[np.maximum(at, 0)], before))
        q25, median, q75 = 100 * np.percentile(np.array(per_seed), [25, 50, 75], axis=0)
        (line,) = ax.plot(t, median, label=f"{strategy} ({len(per_seed)} seeds)")
        ax.fill_between(t, q25, q75, color=line.get_color(), alpha=0.15, linewidth=0)
    for share, style in ((0.3, ":"), (1.0, "--")):
        ax.axvline(share * grid_hours, color="grey", linestyle=style, linewidth=1)
    ax.set(xlabel="simulated compute (hours; dotted: 30% of the grid, dashed: the grid)",
           ylabel="regret (val robust acc. points)", xlim=(0, end), ylim=(0, None),
           title="Regret of the incumbent: median and quartiles over seeds")
    ax.legend(frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _labels(trials: pd.DataFrame) -> pd.Series:
    return trials["trial_id"].astype(str) + " " + arch_label(trials)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format=path.suffix[1:])
    return path
