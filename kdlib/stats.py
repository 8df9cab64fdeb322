"""Is a difference real? Mean, sd and 95% bootstrap CIs of ablation cells, and paired comparisons of two variants.

A cell is one (dataset, student, variant) over its seeds. Its CI, and the CI of the margin between two variants,
come from a two-level bootstrap that resamples, in each draw, the seeds (paired: both variants get the same seeds)
and the test examples (paired: both get the same examples), then recomputes IndoNLU's metric on the resample. That
captures both the seed-to-seed spread and the finite test set; with 3 seeds alone a bootstrap has only 10 distinct
resamples. The metric is recomputed from per-example counts (true positives, false positives and false negatives per
class or chunk type), which gives exactly IndoNLU's macro-F1, flattened aspect F1 and type-macro chunk F1 (see
tests/test_stats.py) at the cost of a matrix product per resample.

Runs without saved predictions fall back to a bootstrap over seeds only (`bootstrap_ci`, `paired_seed_bootstrap`).
Scores are 0..1 in the functions and percentages in the tables and figures.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import pandas as pd

from kdlib import published, results, rundir
from kdlib.metrics import spans

N_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap CI (same scale as the inputs); n = seeds it rests on."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(values: Sequence[float], *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """Percentile bootstrap CI of the mean of `values` (one per seed)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    draws = x[np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    return Interval(float(x.mean()), *_percentiles(draws, level), x.size)


def paired_seed_bootstrap(a: Mapping[int, float], b: Mapping[int, float], **kwargs) -> Interval:
    """CI of mean(a - b) over the seeds both have (paired by seed)."""
    seeds = sorted(set(a) & set(b))
    return bootstrap_ci([a[s] - b[s] for s in seeds], **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Per-example counts: IndoNLU's metrics as sums, so a resample costs a matrix product

def _units(metric: str, labels) -> list:
    """The (gold-or-pred) label units of one example: the label, its aspects' labels, or its chunks."""
    if metric == "macro_f1":
        return [labels]
    if metric == "aspect_macro_f1":
        return list(labels)
    return spans(labels)


def _key(metric: str, unit):
    return unit[2] if metric == "chunk_f1_macro" else unit


def unit_counts(metric: str, gold: Sequence, pred: Sequence, keys: Sequence) -> np.ndarray:
    """(n_examples, len(keys), 3) counts of true positives, false positives and false negatives per class (or
    chunk type for "chunk_f1_macro", where gold and pred are tag strings per word)."""
    index = {k: i for i, k in enumerate(keys)}
    counts = np.zeros((len(gold), len(keys), 3), dtype=np.int64)
    for n, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if metric == "chunk_f1_macro":
            g_units, p_units = set(_units(metric, g)), set(_units(metric, p))
            for u in g_units & p_units:
                counts[n, index[u[2]], 0] += 1
            for u in p_units - g_units:
                counts[n, index[u[2]], 1] += 1
            for u in g_units - p_units:
                counts[n, index[u[2]], 2] += 1
            continue
        for gu, pu in zip(_units(metric, g), _units(metric, p), strict=True):
            if gu == pu:
                counts[n, index[gu], 0] += 1
            else:
                counts[n, index[pu], 1] += 1
                counts[n, index[gu], 2] += 1
    return counts


def count_keys(metric: str, gold: Sequence, preds: Sequence[Sequence]) -> list:
    """Every class (or chunk type) found in gold or any prediction, in a fixed order."""
    found = {_key(metric, u) for labels in (gold, *preds) for example in labels for u in _units(metric, example)}
    return sorted(found, key=str)


def macro_f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Macro F1 over the last two axes (K, 3) of summed counts: mean over the classes that occur at all of
    2tp / (2tp + fp + fn); 0 when none occurs (as IndoNLU's metrics)."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    present = denominator > 0
    f1 = np.where(present, 2 * tp / np.where(present, denominator, 1), 0.0)
    n = present.sum(axis=-1)
    return np.where(n > 0, f1.sum(axis=-1) / np.maximum(n, 1), 0.0)


def _seed_counts(metric: str, gold: Sequence, preds: Sequence[Sequence], keys: Sequence) -> np.ndarray:
    return np.stack([unit_counts(metric, gold, p, keys) for p in preds])  # (S, N, K, 3)


def _draws(n_seeds: int, n_examples: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seed indices (B, S) and example multiplicities (B, N) of n_boot resamples."""
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    picks = rng.integers(0, n_examples, size=(n_boot, n_examples))
    weights = np.zeros((n_boot, n_examples))
    np.add.at(weights, (np.arange(n_boot)[:, None], picks), 1.0)
    return seeds, weights


def _resampled_f1(counts: np.ndarray, seeds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over resampled seeds of the metric on resampled examples: (B,)."""
    s, n, k, c = counts.shape
    flat = counts.transpose(1, 0, 2, 3).reshape(n, s * k * c).astype(np.float64)
    sums = (weights @ flat).reshape(-1, s, k, c)  # (B, S, K, 3)
    f1 = macro_f1_from_counts(sums)  # (B, S)
    return np.take_along_axis(f1, seeds, axis=1).mean(axis=1)


def f1_bootstrap(metric: str, gold: Sequence, preds: Sequence[Sequence], *, n_boot: int = N_BOOT,
                 level: float = LEVEL, seed: int = 0) -> Interval:
    """Mean metric over seeds (`preds`: one prediction list per seed) with its seeds x examples bootstrap CI."""
    keys = count_keys(metric, gold, preds)
    counts = _seed_counts(metric, gold, preds, keys)
    point = float(macro_f1_from_counts(counts.sum(axis=1)).mean())
    draws = _resampled_f1(counts, *_draws(len(preds), len(gold), n_boot, seed))
    return Interval(point, *_percentiles(draws, level), len(preds))


def paired_bootstrap(metric: str, gold: Sequence, preds_a: Sequence[Sequence], preds_b: Sequence[Sequence], *,
                     n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """Margin mean(metric of a) - mean(metric of b) with its paired CI; preds_a[i] and preds_b[i] share seed i."""
    if len(preds_a) != len(preds_b) or not preds_a:
        raise ValueError(f"paired comparison needs the same seeds on both sides, got {len(preds_a)} and "
                         f"{len(preds_b)}.")
    keys = count_keys(metric, gold, [*preds_a, *preds_b])
    ca, cb = _seed_counts(metric, gold, preds_a, keys), _seed_counts(metric, gold, preds_b, keys)
    point = float((macro_f1_from_counts(ca.sum(axis=1)) - macro_f1_from_counts(cb.sum(axis=1))).mean())
    draws = _draws(len(preds_a), len(gold), n_boot, seed)
    margin = _resampled_f1(ca, *draws) - _resampled_f1(cb, *draws)
    return Interval(point, *_percentiles(margin, level), len(preds_a))


# ----------------------------------------------------------------------------------------------------------------
# Ablation runs as a DataFrame

COLUMNS = ["stage", "dataset", "model", "variant", "seed", "metric", "f1", "valid_f1", "loss", "alpha", "temperature",
           "embedding", "freeze_embeddings", "oov_rate", "test_token_oov", "transfer", "transfer_size",
           "transfer_examples", "train_examples", "train_split_examples", "train_seconds", "wall_seconds", "run_dir"]


def ablation_runs(stage_dir: str | os.PathLike, *, model: str | None = None,
                  include: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per finished run under `stage_dir` (and the run in `include`, which is finishing now)."""
    return results.collect(stage_dir, include=include, model=model, columns=COLUMNS)


def saved_predictions(run_dir: str) -> dict | None:
    """A run's test predictions: its predictions.json, or the gzipped copy a published run keeps
    (kdlib.published); None: a bootstrap over seeds only."""
    path = Path(run_dir) / rundir.PREDICTIONS
    if path.exists():
        return rundir.read_or_skip(path)
    packed = path.with_name(path.name + published.PACKED)
    return published.read_packed(packed) if packed.exists() else None


def _cell_interval(cell: pd.DataFrame) -> Interval:
    saved = [saved_predictions(d) for d in cell["run_dir"]]
    if any(s is None for s in saved):
        return bootstrap_ci(cell["f1"].tolist())
    return f1_bootstrap(saved[0]["metric"], saved[0]["gold"], [s["pred"] for s in saved])


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, student and variant: seeds, mean ± sd test F1 (%) and its 95% CI; best first."""
    rows = []
    for (dataset, model, variant), cell in runs.groupby(["dataset", "model", "variant"], sort=False):
        ci = _cell_interval(cell)
        rows.append({"dataset": dataset, "model": model, "variant": variant, "seeds": len(cell),
                     "mean": 100 * cell["f1"].mean(), "sd": 100 * cell["f1"].std(ddof=1) if len(cell) > 1 else np.nan,
                     "ci_low": 100 * ci.low, "ci_high": 100 * ci.high,
                     "valid mean": 100 * cell["valid_f1"].mean(), "wall s": cell["wall_seconds"].sum()})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.sort_values(["dataset", "model", "mean"], ascending=[True, True, False])
    return table.round(2).reset_index(drop=True)


def _by_seed(cell: pd.DataFrame) -> dict[int, str]:
    return dict(zip(cell["seed"], cell["run_dir"]))


def compare_cells(a: pd.DataFrame, b: pd.DataFrame) -> Interval:
    """Margin mean F1(a) - mean F1(b) on their common seeds, paired over seeds and test examples."""
    ra, rb = _by_seed(a), _by_seed(b)
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    sa, sb = [saved_predictions(ra[s]) for s in seeds], [saved_predictions(rb[s]) for s in seeds]
    if any(s is None for s in sa + sb):
        return paired_seed_bootstrap(dict(zip(a["seed"], a["f1"])), dict(zip(b["seed"], b["f1"])))
    if any(s["gold"] != sa[0]["gold"] for s in sa + sb):
        raise ValueError("paired comparison of runs scored on different test sets; compare runs of one dataset.")
    return paired_bootstrap(sa[0]["metric"], sa[0]["gold"], [s["pred"] for s in sa], [s["pred"] for s in sb])


def _mean_sd(cell: pd.DataFrame) -> str:
    mean, sd = 100 * cell["f1"].mean(), 100 * cell["f1"].std(ddof=1)
    return f"{mean:.2f}" if len(cell) < 2 else f"{mean:.2f} ± {sd:.2f}"


def _margin_row(a_name: str, a: pd.DataFrame, b_name: str, b: pd.DataFrame) -> dict:
    margin = compare_cells(a, b)
    return {"A": a_name, "A F1": _mean_sd(a), "B": b_name, "B F1": _mean_sd(b), "margin": 100 * margin.mean,
            "ci_low": 100 * margin.low, "ci_high": 100 * margin.high, "seeds": margin.n,
            "real?": "yes" if margin.excludes_zero else "no"}


def winners(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and student: the variant with the best mean test F1, its margin over the runner-up with a
    paired bootstrap 95% CI (same seeds, same test set), and the wall time of the whole grid."""
    rows = []
    for (dataset, model), group in runs.groupby(["dataset", "model"], sort=True):
        means = group.groupby("variant")["f1"].mean().sort_values(ascending=False)
        if len(means) < 2:
            continue
        best, second = means.index[0], means.index[1]
        row = _margin_row(best, group[group["variant"] == best], second, group[group["variant"] == second])
        rows.append({"dataset": dataset, "model": model, **row, "runs": len(group),
                     "grid wall s": round(float(group["wall_seconds"].sum()))})
    table = pd.DataFrame(rows).rename(columns={"A": "best", "A F1": "best F1", "B": "runner-up",
                                               "B F1": "runner-up F1"})
    return table.round(2)


def _pick(group: pd.DataFrame, names: str | Sequence[str]) -> str | None:
    """Of the variants matching `names` (names or fnmatch patterns like "kl-*"), the one with the best mean test F1."""
    names = [names] if isinstance(names, str) else list(names)
    present = group[group["variant"].map(lambda v: any(fnmatchcase(str(v), n) for n in names))]
    if present.empty:
        return None
    return present.groupby("variant")["f1"].mean().idxmax()


def contrast(runs: pd.DataFrame, a: str | Sequence[str], b: str | Sequence[str]) -> pd.DataFrame:
    """Per dataset and student, A minus B with a paired 95% CI. A list or pattern ("kl-*") picks its best member
    by mean test F1, which favours that side slightly: the pick is made on the test scores it is judged on."""
    rows = []
    for (dataset, model), group in runs.groupby(["dataset", "model"], sort=True):
        name_a, name_b = _pick(group, a), _pick(group, b)
        if name_a is None or name_b is None:
            continue
        cell_a, cell_b = group[group["variant"] == name_a], group[group["variant"] == name_b]
        rows.append({"dataset": dataset, "model": model, **_margin_row(name_a, cell_a, name_b, cell_b)})
    return pd.DataFrame(rows).round(2)


# ----------------------------------------------------------------------------------------------------------------
# The claims each ablation tests, one registry for the notebooks and the study summary (`kdexam report`)

@dataclass(frozen=True)
class Claim:
    """A contrast A - B between two sets of variants (names or fnmatch patterns; each side picks its best member)."""

    stage: str
    text: str
    a: tuple[str, ...]
    b: tuple[str, ...]
    pure_kd: bool = False  # compare variants without a hard-label term (alpha = 0) only


CLAIMS: dict[str, Claim] = {
    "mse-vs-kl": Claim("ablation-loss", "MSE on raw logits >= KL with a temperature", ("mse",), ("kl-*",),
                       pure_kd=True),
    "kd-vs-no-kd": Claim("ablation-loss", "the teacher helps: the best pure KD loss beats no KD", ("mse", "kl-*"),
                         ("no-kd",), pure_kd=True),
    "in-domain-vs-random": Claim("ablation-embedding", "in-domain embeddings beat random ones",
                                 ("word2vec*", "fasttext*"), ("random",)),
    "word2vec-tuned-vs-frozen": Claim("ablation-embedding", "fine-tuned word2vec vectors beat the same ones frozen",
                                      ("word2vec",), ("word2vec-frozen",)),
    "fasttext-tuned-vs-frozen": Claim("ablation-embedding", "fine-tuned fastText vectors beat the same ones frozen",
                                      ("fasttext",), ("fasttext-frozen",)),
    "vec-vs-random": Claim("ablation-embedding", "a downloaded .vec file beats random embeddings", ("vec-*",),
                           ("random",)),
    "augmentation-helps": Claim("ablation-augmentation", "augmentation helps: the best larger transfer set beats "
                                "the train split alone", ("tang-*", "indonlu-*", "file-*"), ("train-x1",)),
    "rules-vs-text": Claim("ablation-augmentation", "Tang et al.'s rules beat real unlabelled text", ("tang-*",),
                           ("indonlu-*", "file-*")),
}


def claim(runs: pd.DataFrame, *keys: str) -> pd.DataFrame:
    """The contrast of each CLAIMS[key] per dataset and student (see `contrast`), one table; empty when a side is
    missing. With several keys, a `claim` column says which row tests which."""
    tables = []
    for key in keys:
        c = CLAIMS[key]
        table = contrast(runs[runs["alpha"].fillna(0) == 0] if c.pure_kd and not runs.empty else runs,
                         list(c.a), list(c.b))
        tables.append(table.assign(claim=key) if len(keys) > 1 and not table.empty else table)
    found = [t for t in tables if not t.empty]
    return pd.concat(found, ignore_index=True) if len(found) > 1 else (found or tables)[0]


def verdict(table: pd.DataFrame) -> str:
    """Over the grids of a claim's table: in how many A is better (A - B > 0, CI excluding 0), B is better, or the
    CI includes 0. "A >= B" claims hold where B is never better; "A beats B" claims need A better."""
    if table.empty:
        return "not tested"
    up = int(((table["real?"] == "yes") & (table["margin"] > 0)).sum())
    down = int(((table["real?"] == "yes") & (table["margin"] < 0)).sum())
    return (f"A better in {up} of {len(table)} grids, B better in {down}, no clear difference in "
            f"{len(table) - up - down}; mean margin A - B {table['margin'].mean():+.2f} F1 points")


def study_ablations(study_dir: str | os.PathLike) -> dict[str, dict[str, pd.DataFrame]]:
    """Per ablation stage of a study: its runs, its winners table (every dataset x student grid) and one table per
    claim."""
    out = {}
    for stage_dir in sorted(Path(study_dir).glob("ablation-*")):
        runs = ablation_runs(stage_dir)
        if runs.empty:
            continue
        tables = {"winners": winners(runs), "runs": runs}
        tables.update({key: claim(runs, key) for key, c in CLAIMS.items() if c.stage == stage_dir.name})
        out[stage_dir.name] = tables
    return out


def oov_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and embedding source: OOV rate over the student's vocabulary and over the test tokens (%)."""
    emb = runs.dropna(subset=["oov_rate"])
    if emb.empty:
        return pd.DataFrame(columns=["dataset", "embedding", "vocab OOV %", "test token OOV %"])
    table = emb.groupby(["dataset", "embedding"])[["oov_rate", "test_token_oov"]].mean() * 100
    table = table.rename(columns={"oov_rate": "vocab OOV %", "test_token_oov": "test token OOV %"})
    return table.round(2).reset_index()


def wall_time(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs and total wall time per stage and dataset."""
    return (runs.groupby(["stage", "dataset"]).agg(runs=("variant", "size"), wall_s=("wall_seconds", "sum"))
            .assign(wall_min=lambda t: (t["wall_s"] / 60).round(1)).reset_index())


# ----------------------------------------------------------------------------------------------------------------
# Figures

def plot_ablation(runs: pd.DataFrame, title: str = ""):
    """Test F1 (%) per variant, mean ± sd over seeds, one panel per dataset; best variant on top."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = runs.assign(f1=100 * runs["f1"])
    datasets = sorted(df["dataset"].unique())
    n_variants = df["variant"].nunique()
    several = df["model"].nunique() > 1  # seaborn cannot dodge a single hue level
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 0.8 + 0.35 * n_variants), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = df[df["dataset"] == dataset]
        order = part.groupby("variant")["f1"].mean().sort_values(ascending=False).index
        sns.pointplot(data=part, y="variant", x="f1", hue="model", order=order, errorbar="sd", linestyle="none",
                      dodge=0.3 if several else False, ax=ax)
        sns.stripplot(data=part, y="variant", x="f1", hue="model", order=order, dodge=several, alpha=0.35, size=3,
                      legend=False, ax=ax)
        ax.set(title=dataset, xlabel="test F1 (%), mean ± sd over seeds", ylabel="")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_size_curve(runs: pd.DataFrame, title: str = ""):
    """Test F1 (%) against transfer-set size (× the train split), one line per source, mean ± sd over seeds.

    The ×1 point (the train split alone) is drawn on every source's line, as their common start."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = runs.dropna(subset=["transfer_size"]).assign(f1=100 * runs["f1"])
    base = df[df["transfer"] == "train"]
    parts = [df[df["transfer"] != "train"]]
    for source in df.loc[df["transfer"] != "train", "transfer"].unique():
        parts.append(base.assign(transfer=source))
    df = pd.concat(parts) if len(parts) > 1 else df
    datasets = sorted(df["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = df[df["dataset"] == dataset]
        sns.lineplot(data=part, x="transfer_size", y="f1", hue="transfer", style="model", marker="o", errorbar="sd",
                     ax=ax)
        ax.set(title=dataset, xlabel="transfer set (× train split)", ylabel="test F1 (%)")
        ax.set_xticks(sorted(part["transfer_size"].unique()))
    fig.suptitle(title)
    fig.tight_layout()
    return fig
