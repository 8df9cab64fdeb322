"""The figures of a study's results (kdlib.results makes the tables they draw): learning curves, run comparisons,
Pareto fronts, the Δ heatmap and latency bars, all in F1 percentage points; `save_figure` writes one as PNG.

matplotlib and seaborn are imported inside each function: importing kdlib.plots stays cheap.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from kdlib.results import COSTS, model_order, pareto_models, relative_costs


def plot_learning_curve(history: Sequence[dict], title: str = ""):
    """Training loss and validation F1 per epoch."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    df = pd.DataFrame(history)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    sns.lineplot(data=df, x="epoch", y="train_loss", marker="o", ax=ax1)
    sns.lineplot(data=df.assign(valid_f1=100 * df["valid_f1"]), x="epoch", y="valid_f1", marker="o", ax=ax2)
    ax1.set(title="training loss", ylabel="loss")
    ax2.set(title="validation F1", ylabel="F1 (%)")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_comparison(df: pd.DataFrame, title: str = ""):
    """Bar chart of test F1 per model of a comparison table."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.45 * len(df)))
    sns.barplot(data=df, y="model", x="test F1", hue="model", legend=False, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", padding=3)
    ax.set(title=title, xlabel="test F1 (%)", ylabel="")
    ax.set_xlim(0, max(100.0, df["test F1"].max() + 8))
    fig.tight_layout()
    return fig


def plot_pareto(board: pd.DataFrame, cost: str = "latency"):
    """Δ F1 to the teacher against cost (% of the teacher's, log scale), one panel per task group.

    Small markers: each dataset; large: the model's mean over the group's datasets; the line joins the group's
    Pareto frontier (no model both cheaper and better).
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns
    from matplotlib.ticker import FuncFormatter, NullFormatter

    column, label = COSTS.get(cost, (cost, cost))
    df = board.assign(rel=relative_costs(board, column)).dropna(subset=["rel", "delta"])
    groups = sorted(df["group"].unique())
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5.5 * max(len(groups), 1), 4.2), squeeze=False)
    models = model_order(df["model"].unique())
    palette = dict(zip(models, sns.color_palette("tab10", len(models))))
    summary = pareto_models(board, cost).rename(columns={f"% of teacher {cost}": "rel"})
    for ax, group in zip(axes[0], groups):
        g = df[df["group"] == group]
        sns.scatterplot(data=g, x="rel", y="delta", hue="model", hue_order=models, palette=palette, style="dataset",
                        s=40, alpha=0.6, ax=ax)
        means = summary[summary["group"] == group].sort_values("rel")
        ax.scatter(means["rel"], means["delta"], s=160, c=[palette[m] for m in means["model"]], edgecolor="black",
                   zorder=3)
        front = means[means["pareto"]]
        ax.step(front["rel"], front["delta"], where="post", color="black", lw=1, ls="--", zorder=2)
        for _, r in means.iterrows():
            ax.annotate(r["model"], (r["rel"], r["delta"]), textcoords="offset points", xytext=(6, 6), fontsize=9)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axhline(0, color="grey", lw=0.6)
        ax.set(title=f"{group}: F1 against {label}", xlabel=f"{label} (% of the teacher's, log)",
               ylabel="Δ test F1 to the teacher (points)")
        ax.set_xlim(left=max(float(np.nanmin(g["rel"])) / 2, 1e-3), right=max(200.0, 2 * float(np.nanmax(g["rel"]))))
        sns.move_legend(ax, "lower right", fontsize=7, title_fontsize=7, framealpha=0.6)
    fig.tight_layout()
    return fig


def plot_heatmap(board: pd.DataFrame):
    """Δ test F1 to the teacher (points) per dataset (rows, with the teacher's F1) and student (columns)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    students = board[board["model"] != "teacher"]
    table = students.pivot(index="dataset", columns="model", values="delta")
    table = table[model_order(table.columns)].reindex(list(dict.fromkeys(students["dataset"])))
    teacher = board[board["model"] == "teacher"].set_index("dataset")["f1"]
    table.index = [f"{d} (teacher {teacher.get(d, float('nan')):.1f})" for d in table.index]
    fig, ax = plt.subplots(figsize=(1.4 * len(table.columns) + 3, 0.55 * len(table) + 1.6))
    sns.heatmap(table, annot=True, fmt=".1f", cmap="RdBu", center=0, cbar_kws={"label": "Δ F1 (points)"}, ax=ax)
    ax.set(title="Δ test F1 of each student to its teacher", xlabel="", ylabel="")
    fig.tight_layout()
    return fig


def plot_latency(profile: dict):
    """Median latency (ms, log) of each model per engine, batch size and thread count of one profile."""
    import seaborn as sns

    df = pd.DataFrame(profile["latency"])
    df = df[df["inputs"] == df["inputs"].iloc[0]]
    grid = sns.catplot(data=df, x="median_ms", y="model", hue="engine", col="batch", row="threads", kind="bar",
                       height=2.6, aspect=1.6, sharex=False)
    grid.set(xscale="log")
    grid.set_axis_labels("median ms per batch (log)", "")
    grid.figure.suptitle(f"{profile['dataset']}: latency on {df['inputs'].iloc[0]} inputs", y=1.02)
    return grid.figure


def save_figure(fig, out_dir: str | os.PathLike, name: str) -> Path:
    """The figure as out_dir/figures/<name>.png (150 dpi)."""
    path = Path(out_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
