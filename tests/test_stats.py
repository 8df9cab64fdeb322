"""kdlib.stats: IndoNLU's metrics recomputed from per-example counts, bootstrap CIs, paired comparisons, and the
ablation tables read from run folders."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kdlib import metrics, rundir, stats


def _random_case(metric: str, rng: np.random.Generator, n: int = 60):
    if metric == "macro_f1":
        gold = rng.integers(0, 3, n).tolist()
        return gold, [g if rng.random() < 0.6 else int(rng.integers(0, 4)) for g in gold]
    if metric == "aspect_macro_f1":
        gold = rng.integers(0, 3, (n, 4)).tolist()
        return gold, [[g if rng.random() < 0.7 else int(rng.integers(0, 3)) for g in row] for row in gold]
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"]
    gold = [[tags[i] for i in rng.integers(0, len(tags), int(rng.integers(1, 12)))] for _ in range(n)]
    return gold, [[g if rng.random() < 0.7 else tags[int(rng.integers(0, len(tags)))] for g in row] for row in gold]


@pytest.mark.parametrize("metric", ["macro_f1", "aspect_macro_f1", "chunk_f1_macro"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_give_exactly_indonlus_metric(metric, seed):
    gold, pred = _random_case(metric, np.random.default_rng(seed))
    keys = stats.count_keys(metric, gold, [pred])
    counts = stats.unit_counts(metric, gold, pred, keys).sum(axis=0)
    assert stats.macro_f1_from_counts(counts) == pytest.approx(metrics.score(metric, gold, pred)["f1"], abs=1e-12)


def test_macro_f1_from_counts_by_hand():
    # class 0: tp 2, fp 1, fn 0 -> 4/5; class 1: tp 0, fp 0, fn 1 -> 0; class 2 never occurs -> left out
    counts = np.array([[2, 1, 0], [0, 0, 1], [0, 0, 0]])
    assert stats.macro_f1_from_counts(counts) == pytest.approx((0.8 + 0.0) / 2)
    assert stats.macro_f1_from_counts(np.zeros((3, 3))) == 0.0


def test_chunk_counts_per_sentence():
    # gold PER (0-2) and LOC (3); pred PER (0-1) wrong span, LOC right -> PER: fp 1, fn 1; LOC: tp 1
    gold, pred = [["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]]
    counts = stats.unit_counts("chunk_f1_macro", gold, pred, ["LOC", "PER"])
    assert counts[0].tolist() == [[1, 0, 0], [0, 1, 1]]


def test_bootstrap_ci_of_constant_and_spread_values():
    ci = stats.bootstrap_ci([0.5, 0.5, 0.5])
    assert (ci.mean, ci.low, ci.high, ci.n) == (0.5, 0.5, 0.5, 3)
    ci = stats.bootstrap_ci([0.1, 0.2, 0.3, 0.4])
    assert ci.mean == pytest.approx(0.25) and 0.1 <= ci.low < 0.25 < ci.high <= 0.4
    assert stats.bootstrap_ci([0.1, 0.2, 0.3, 0.4], seed=3).low == pytest.approx(stats.bootstrap_ci(
        [0.1, 0.2, 0.3, 0.4], seed=3).low)


def test_paired_seed_bootstrap_uses_common_seeds_only():
    ci = stats.paired_seed_bootstrap({0: 0.8, 1: 0.7, 2: 0.9, 5: 0.1}, {0: 0.7, 1: 0.6, 2: 0.8})
    assert (ci.n, ci.mean, ci.low, ci.high) == (3, pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1))
    assert ci.excludes_zero


def test_paired_bootstrap_of_identical_predictions_is_exactly_zero():
    gold, pred = _random_case("macro_f1", np.random.default_rng(0))
    ci = stats.paired_bootstrap("macro_f1", gold, [pred, pred], [pred, pred], n_boot=200)
    assert (ci.mean, ci.low, ci.high) == (0.0, 0.0, 0.0) and not ci.excludes_zero


def test_paired_bootstrap_sees_a_real_difference_and_is_antisymmetric():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 300).tolist()
    good = [[g if rng.random() < 0.9 else int(rng.integers(0, 3)) for g in gold] for _ in range(3)]
    poor = [[g if rng.random() < 0.5 else int(rng.integers(0, 3)) for g in gold] for _ in range(3)]
    ab = stats.paired_bootstrap("macro_f1", gold, good, poor, n_boot=500)
    ba = stats.paired_bootstrap("macro_f1", gold, poor, good, n_boot=500)
    point = np.mean([metrics.macro_f1(gold, g) - metrics.macro_f1(gold, p) for g, p in zip(good, poor)])
    assert ab.mean == pytest.approx(point) and ab.low > 0.2 and ab.excludes_zero
    assert ba.mean == pytest.approx(-ab.mean) and ba.high == pytest.approx(-ab.low)
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_bootstrap("macro_f1", gold, good, poor[:2])


def test_cell_ci_covers_the_mean_and_uses_every_seed():
    gold, _ = _random_case("aspect_macro_f1", np.random.default_rng(2))
    preds = [_random_case("aspect_macro_f1", np.random.default_rng(2))[1] for _ in range(3)]
    ci = stats.f1_bootstrap("aspect_macro_f1", gold, preds, n_boot=300)
    assert ci.n == 3 and ci.low <= ci.mean <= ci.high
    assert ci.mean == pytest.approx(np.mean([metrics.aspect_macro_f1(gold, p) for p in preds]))


# ----------------------------------------------------------------------------------------------------------------
# Tables from run folders

def _write_run(root, variant: str, seed: int, gold: list, pred: list, *, done: bool = True, wall: float = 10.0):
    run = root / "ablation-loss" / "smsa" / f"bilstm-{variant}-s{seed}"
    f1 = metrics.macro_f1(gold, pred)
    rundir.write_json(run / rundir.METRICS, {"stage": "ablation-loss", "dataset": "smsa", "model": "bilstm",
                                             "variant": variant, "seed": seed, "metric": "macro_f1", "f1": f1,
                                             "valid": {"f1": f1}, "loss": variant, "alpha": 0.0, "wall_seconds": wall})
    rundir.write_json(run / rundir.PREDICTIONS, {"metric": "macro_f1", "gold": gold, "pred": pred})
    if done:
        rundir.mark_done(run)
    return run


@pytest.fixture
def grid(tmp_path):
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 200).tolist()
    quality = {"mse": 0.9, "kl-T2": 0.85, "no-kd": 0.4}
    for variant, q in quality.items():
        for seed in range(3):
            pred = [g if rng.random() < q else int(rng.integers(0, 3)) for g in gold]
            _write_run(tmp_path, variant, seed, gold, pred)
    unfinished = _write_run(tmp_path, "kl-T8", 0, gold, gold, done=False)
    return tmp_path, unfinished


def test_ablation_runs_reads_finished_runs_and_the_one_finishing_now(grid):
    root, unfinished = grid
    runs = stats.ablation_runs(root / "ablation-loss" / "smsa")
    assert len(runs) == 9 and set(runs["variant"]) == {"mse", "kl-T2", "no-kd"}
    assert len(stats.ablation_runs(root, include=unfinished)) == 10
    assert stats.ablation_runs(root, model="cnn").empty


def test_cell_table_winners_and_contrast(grid):
    root, _ = grid
    runs = stats.ablation_runs(root)
    table = stats.cell_table(runs)
    assert table["variant"].tolist() == ["mse", "kl-T2", "no-kd"]  # best first
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()
    assert table["seeds"].tolist() == [3, 3, 3] and table["wall s"].tolist() == [30.0, 30.0, 30.0]
    win = stats.winners(runs).iloc[0]
    assert (win["best"], win["runner-up"], win["seeds"], win["grid wall s"]) == ("mse", "kl-T2", 3, 90)
    assert win["ci_low"] <= win["margin"] <= win["ci_high"]
    kd = stats.contrast(runs, ["mse", "kl-*"], "no-kd").iloc[0]
    assert kd["A"] == "mse" and kd["real?"] == "yes" and kd["ci_low"] > 20
    assert stats.contrast(runs, "vec-*", "no-kd").empty


def test_missing_predictions_fall_back_to_seeds_only(grid):
    root, _ = grid
    for path in root.rglob(rundir.PREDICTIONS):
        path.unlink()
    runs = stats.ablation_runs(root)
    win = stats.winners(runs).iloc[0]
    a = runs[runs["variant"] == "mse"].set_index("seed")["f1"]
    b = runs[runs["variant"] == "kl-T2"].set_index("seed")["f1"]
    assert win["margin"] == pytest.approx(round(100 * (a - b).mean(), 2))


def test_plots_draw_one_panel_per_dataset(grid):
    import matplotlib

    matplotlib.use("Agg")
    root, _ = grid
    runs = stats.ablation_runs(root)
    assert len(stats.plot_ablation(runs).axes) >= 1
    sized = runs.assign(transfer=runs["variant"].map({"mse": "train", "kl-T2": "tang", "no-kd": "tang"}),
                        transfer_size=runs["variant"].map({"mse": 1.0, "kl-T2": 5.0, "no-kd": 10.0}))
    assert len(stats.plot_size_curve(sized).axes) >= 1
    assert isinstance(stats.wall_time(runs), pd.DataFrame)


def test_claims_compare_pure_kd_losses_and_say_whether_the_data_supports_them(grid):
    root, _ = grid
    gold = rundir.read_json(next(root.rglob(rundir.PREDICTIONS)))["gold"]
    for seed in range(3):  # an alpha-mix better than every pure loss: the pure-KD claims must not pick it
        run = _write_run(root, "kl-T2-a0.5", seed, gold, gold)
        m = rundir.read_json(run / rundir.METRICS)
        rundir.write_json(run / rundir.METRICS, {**m, "alpha": 0.5})
    runs = stats.ablation_runs(root)
    mse_kl = stats.claim(runs, "mse-vs-kl").iloc[0]
    assert (mse_kl["A"], mse_kl["B"]) == ("mse", "kl-T2")
    kd = stats.claim(runs, "kd-vs-no-kd")
    assert kd.iloc[0]["A"] == "mse" and kd.iloc[0]["real?"] == "yes"
    assert stats.verdict(kd).startswith("A better in 1 of 1 grids, B better in 0, no clear difference in 0")
    flipped = kd.assign(margin=-kd["margin"])
    assert "B better in 1" in stats.verdict(flipped)
    both = stats.claim(runs, "mse-vs-kl", "kd-vs-no-kd")
    assert both["claim"].tolist() == ["mse-vs-kl", "kd-vs-no-kd"]
    assert stats.verdict(stats.claim(runs, "vec-vs-random")) == "not tested"

    summary = stats.study_ablations(root)
    assert list(summary) == ["ablation-loss"]
    assert set(summary["ablation-loss"]) == {"runs", "winners", "mse-vs-kl", "kd-vs-no-kd"}
    assert summary["ablation-loss"]["winners"].iloc[0]["best"] == "kl-T2-a0.5"


def test_kdexam_report_prints_the_winners_and_claims_of_an_ablation_study(grid, capsys):
    from kdlib import cli

    root, _ = grid
    assert cli.main(["report", "--study", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ablation-loss: the best variant per dataset x student" in out
    assert "claim: the teacher helps: the best pure KD loss beats no KD — A better in 1 of 1 grids" in out
    assert "test F1 (%) per dataset" not in out  # no teacher or distill run in this study
    assert cli.main(["report", "--study", str(root), "--format", "csv"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert lines[0].startswith("# ablation-loss: the best variant") and lines[1].startswith("dataset,model,best,")
    assert all(line.startswith("# ") or "," in line for line in lines)  # prose only as comment lines
