"""Results as tables and figures: read every metrics.json of a study into one tidy DataFrame, then display it.

Scores are stored on IndoNLU's 0..1 scale and shown as percentages (F1 × 100) in tables and plots.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from kdlib import rundir

COLUMNS = ["stage", "dataset", "model", "variant", "seed", "kd", "loss", "alpha", "temperature", "f1",
           "valid_f1", "teacher_f1", "parameters", "train_examples", "best_epoch", "train_seconds", "wall_seconds",
           "finished", "run_dir"]


def collect(study_dir: str | os.PathLike, *, finished_only: bool = True) -> pd.DataFrame:
    """One row per run (dataset × model × variant × seed) from every metrics.json under `study_dir`."""
    rows = []
    for path in sorted(Path(study_dir).rglob(rundir.METRICS)):
        m = rundir.read_json(path)
        finished = rundir.is_done(path.parent)
        if finished_only and not finished:
            continue
        rows.append({
            "stage": m.get("stage"), "dataset": m.get("dataset"), "model": m.get("model"),
            "variant": m.get("variant"), "seed": m.get("seed"), "kd": m.get("kd", False), "loss": m.get("loss"),
            "alpha": m.get("alpha"), "temperature": m.get("temperature"), "f1": m.get("f1"),
            "valid_f1": (m.get("valid") or {}).get("f1"), "teacher_f1": m.get("teacher_f1"),
            "parameters": m.get("parameters"), "train_examples": m.get("train_examples"),
            "best_epoch": m.get("best_epoch"), "train_seconds": m.get("train_seconds"),
            "wall_seconds": m.get("wall_seconds"), "finished": finished, "run_dir": str(path.parent),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def scores_table(metrics: dict) -> pd.DataFrame:
    """Valid and test scores of one run, as percentages."""
    rows = {split: {k: 100 * v for k, v in metrics[split].items()} for split in ("valid", "test") if split in metrics}
    return pd.DataFrame(rows).T.round(2)


def comparison(runs: Sequence[dict | None]) -> pd.DataFrame:
    """Teacher, distilled student and student without KD side by side; Δ is test F1 minus the teacher's."""
    rows = []
    for m in runs:
        if not m:
            continue
        label = "teacher" if m["stage"] == "teacher" else f"{m['model']} ({'KD ' + m['variant'] if m.get('kd') else 'no KD'})"
        rows.append({"model": label, "test F1": 100 * m["f1"], "valid F1": 100 * m["valid"]["f1"],
                     "parameters (M)": m["parameters"] / 1e6, "train examples": m["train_examples"],
                     "train s": m["train_seconds"]})
    df = pd.DataFrame(rows)
    teacher = df.loc[df["model"] == "teacher", "test F1"]
    if not teacher.empty:
        df["Δ to teacher"] = df["test F1"] - teacher.iloc[0]
    return df.round(2)


def read_metrics(run_dir: str | os.PathLike | None) -> dict | None:
    """A run's metrics.json, or None when the folder is empty or unfinished."""
    if not run_dir:
        return None
    path = Path(run_dir) / rundir.METRICS
    return rundir.read_json(path) if path.exists() else None


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


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Test F1 (%) per dataset: the teacher and every student/variant, mean over seeds (± sd when several)."""
    if df.empty:
        return df
    df = df.assign(column=df.apply(lambda r: "teacher" if r["stage"] == "teacher" else
                                   f"{r['model']} {'KD' if r['kd'] else 'no-KD'}" if r["variant"] in ("mse", "no-kd")
                                   else f"{r['model']} {r['variant']}", axis=1))
    grouped = df.groupby(["dataset", "column"])["f1"]
    mean, sd, n = grouped.mean() * 100, grouped.std() * 100, grouped.count()
    text = mean.round(2).astype(str).where(n < 2, mean.round(2).astype(str) + " ± " + sd.round(2).astype(str))
    table = text.unstack("column")
    order = ["teacher"] + sorted(c for c in table.columns if c != "teacher")
    return table[[c for c in order if c in table.columns]]
