"""The analysis on synthetic metrics.json and profile.json files: aggregation, tables, Pareto, the written answer,
and recommend's budget logic (including its "nothing fits" answers), through the API and `kdexam recommend`."""
from __future__ import annotations

import json

import matplotlib
import nbformat
import pandas as pd
import pytest

from kdlib import cli, notebook, plots, recommend, results, rundir
from kdlib.errors import KdExamError

matplotlib.use("Agg")

# dataset -> model -> variant -> [(seed, test F1, valid F1)]
QUALITY = {
    "smsa": {"teacher": {"offline": [(0, 0.90, 0.88)]},
             "bilstm": {"mse": [(0, 0.85, 0.84), (1, 0.87, 0.86)], "no-kd": [(0, 0.86, 0.80), (1, 0.88, 0.81)]},
             "cnn": {"mse": [(0, 0.84, 0.83), (1, 0.84, 0.83)]},
             "bert-tiny": {"mse": [(0, 0.88, 0.87), (1, 0.89, 0.87)]}},
    "nergrit": {"teacher": {"offline": [(0, 0.80, 0.80)]},
                "bilstm": {"mse": [(0, 0.70, 0.70), (1, 0.72, 0.71)]},
                "cnn": {"mse": [(0, 0.60, 0.60), (1, 0.62, 0.61)]},
                "bert-tiny": {"mse": [(0, 0.71, 0.70), (1, 0.71, 0.70)]}},
}
# model -> parameters, MB on disk, RAM MB, then median ms for (engine, batch) at 1 thread; 2 threads is 0.6x that
COST = {
    "teacher": (118e6, 450.0, 600.0, {("torch", 1): 20.0, ("torch", 32): 400.0, ("onnx", 1): 10.0,
                                      ("onnx", 32): 300.0, ("int8", 1): 6.0, ("int8", 32): 150.0}),
    "bilstm": (0.8e6, 3.0, 30.0, {("torch", 1): 1.0, ("torch", 32): 10.0, ("onnx", 1): 0.2, ("onnx", 32): 4.0,
                                  ("int8", 1): 0.15, ("int8", 32): 3.0}),
    "cnn": (1e6, 4.0, 20.0, {("torch", 1): 0.5, ("torch", 32): 8.0, ("onnx", 1): 0.1, ("onnx", 32): 2.0,
                             ("int8", 1): 0.1, ("int8", 32): 1.5}),
    "bert-tiny": (32e6, 122.0, 150.0, {("torch", 1): 3.0, ("torch", 32): 60.0, ("onnx", 1): 1.0,
                                       ("onnx", 32): 30.0, ("int8", 1): 0.8, ("int8", 32): 20.0}),
}


def make_study(root, quality=QUALITY, profiled=("smsa", "nergrit")):
    for dataset, models in quality.items():
        teacher_f1 = models["teacher"]["offline"][0][1]
        for model, variants in models.items():
            for variant, seeds in variants.items():
                for seed, f1, valid in seeds:
                    stage = "teacher" if model == "teacher" else "distill"
                    run = (root / "teacher" / dataset / "teacher" if stage == "teacher"
                           else root / "distill" / dataset / f"{model}-{variant}-s{seed}")
                    rundir.write_json(run / rundir.METRICS, {
                        "stage": stage, "dataset": dataset, "model": model, "variant": variant, "seed": seed,
                        "kd": variant != "no-kd" and stage != "teacher", "f1": f1, "valid": {"f1": valid},
                        "teacher_f1": teacher_f1, "parameters": int(COST[model][0])})
                    rundir.mark_done(run)
    # an ablation run: other questions, never in the leaderboard
    rundir.write_json(root / "ablation-loss" / "smsa" / "x" / rundir.METRICS,
                      {"stage": "ablation-loss", "dataset": "smsa", "model": "bilstm", "variant": "kl-T2", "seed": 0,
                       "f1": 0.99, "valid": {"f1": 0.99}})
    rundir.mark_done(root / "ablation-loss" / "smsa" / "x")
    for dataset in profiled:
        models = [{"model": m, "parameters": int(p), "safetensors_bytes": mb * 2**20, "onnx_bytes": mb * 2**20,
                   "int8_bytes": mb * 2**18, "f1_torch": 0.8, "f1_onnx": 0.8, "f1_int8": 0.79,
                   "onnx_max_abs_diff": 1e-6, "onnx_match": True,
                   "memory": {"torch": {"model_mb": ram}, "onnx": {"model_mb": ram / 2}, "int8": {"model_mb": ram / 4}}}
                  for m, (p, mb, ram, _) in COST.items()]
        latency = [{"model": m, "engine": e, "threads": t, "batch": b, "inputs": "real", "median_ms": ms * scale,
                    "p90_ms": 1.2 * ms * scale, "mean_ms": ms * scale, "examples_per_s": 1000 * b / (ms * scale),
                    "runs": 10, "mean_width": 30.0}
                   for m, (*_, ms_by) in COST.items() for (e, b), ms in ms_by.items()
                   for t, scale in ((1, 1.0), (2, 0.6))]
        rundir.write_json(root / "profile" / dataset / "profile" / rundir.PROFILE, {
            "stage": "profile", "dataset": dataset, "models": models, "latency": latency,
            "machine": {"cpu": "Test CPU", "cores": 2}, "settings": {}, "threads": [1, 2]})
        rundir.mark_done(root / "profile" / dataset / "profile")
    return root


@pytest.fixture
def study(tmp_path):
    return make_study(tmp_path / "study")


@pytest.fixture
def board(study):
    return results.scoreboard(results.study_frame(study))


def test_study_frame_joins_every_run_with_its_model_costs(study):
    frame = results.study_frame(study)
    assert len(frame) == 2 * (1 + 2 * 2 + 2 + 2) - 2  # nergrit's bilstm has no no-KD runs; the ablation is left out
    assert set(frame["stage"]) == {"teacher", "distill"}
    row = frame[(frame["dataset"] == "smsa") & (frame["model"] == "bilstm")].iloc[0]
    assert row["torch_ms_b1"] == 1.0 and row["int8_ms_b32"] == 3.0 and row["size_mb"] == 3.0
    assert row["ram_mb"] == 30.0 and row["group"] == "classification" and row["threads"] == 1
    assert set(frame["group"]) == {"classification", "tagging"}
    assert results.study_frame(study, threads=0)["torch_ms_b1"].max() == pytest.approx(20.0 * 0.6)
    with pytest.raises(KdExamError, match=r"no latency at threads=4.*they have threads \[1, 2\]"):
        results.study_frame(study, threads=4)


def test_scoreboard_chooses_variants_on_validation_and_keeps_the_seeds_spread(board):
    bilstm = board[(board["dataset"] == "smsa") & (board["model"] == "bilstm")].iloc[0]
    assert bilstm["variant"] == "mse"  # better validation F1, although no-kd scores higher on test
    assert bilstm["f1"] == pytest.approx(86.0) and bilstm["f1_sd"] == pytest.approx(1.41421, abs=1e-4)
    assert bilstm["seeds"] == 2 and bilstm["delta"] == pytest.approx(-4.0) and bilstm["teacher_f1"] == 90.0
    assert list(board["model"][:4]) == ["teacher", "bilstm", "cnn", "bert-tiny"]
    assert list(dict.fromkeys(board["dataset"])) == ["smsa", "nergrit"]  # IndoNLU's order
    lb = results.leaderboard(board)
    assert lb.loc[("smsa", "bilstm"), "test F1"] == "86.00 ± 1.41"
    assert lb.loc[("smsa", "teacher"), "test F1"] == "90.00" and lb.loc[("smsa", "teacher"), "Δ to teacher"] == 0


def test_cost_table_compares_every_model_with_its_teacher(board):
    costs = results.cost_table(board)
    bilstm = costs.loc[("smsa", "bilstm")]
    assert bilstm["× b1"] == 20.0 and bilstm["× b32"] == 40.0
    assert bilstm["ONNX × b1"] == 100.0 and bilstm["int8 × b1"] == pytest.approx(133.33, abs=0.01)
    assert bilstm["ONNX gain b1"] == 5.0 and bilstm["int8 gain b32"] == pytest.approx(1.33, abs=0.01)
    assert bilstm["% of teacher size"] == pytest.approx(100 * 3 / 450, abs=0.01)
    assert bilstm["% of teacher RAM"] == 5.0 and bilstm["int8 MB"] == 0.75 and bilstm["int8 ΔF1"] == -1.0
    assert costs.loc[("nergrit", "teacher"), "× b1"] == 1.0


def test_pareto_front_by_hand():
    assert results.pareto_front([1, 2, 3, 4], [1, 3, 2, 4]) == [True, True, False, True]
    assert results.pareto_front([1, 1], [2, 2]) == [True, True]  # ties dominate neither


def test_pareto_models_per_task_group(board):
    table = results.pareto_models(board, "latency").set_index(["group", "model"])
    assert table.loc[("classification", "cnn"), "% of teacher latency"] == pytest.approx(2.5)
    assert table.loc[("classification", "cnn"), "pareto"] and table.loc[("classification", "bert-tiny"), "pareto"]
    assert table.loc[("classification", "bilstm"), "pareto"]  # better than cnn, faster than bert-tiny
    assert table.loc[("tagging", "bilstm"), "pareto"] and not table.loc[("tagging", "bert-tiny"), "pareto"]


def test_answer_is_written_from_the_numbers(board, tmp_path):
    strict = results.answer(board, tolerance=1.0)
    assert "**smsa** (teacher 90.0): pick **bert-tiny** 88.5 ± 0.7" in strict  # nothing else within a point
    assert "**nergrit** (teacher 80.0): pick **bilstm** 71.0 ± 1.4" in strict  # bert-tiny is within 1.4 (its sd)
    assert "### Classification" in strict and "### Tagging" in strict
    loose = results.answer(board, tolerance=3.0)
    assert "pick **bilstm** 86.0 ± 1.4 (mse, Δ -4.0), 1.00 ms" in loose and "20× the teacher's speed" in loose
    assert "best bert-tiny 88.5 ± 0.7 is within 3.0 points" in loose
    one_seed = {d: {m: {v: s[:1] for v, s in vs.items()} for m, vs in ms.items()} for d, ms in QUALITY.items()}
    single = results.scoreboard(results.study_frame(make_study(tmp_path / "one-seed", one_seed)))
    assert "rests on one seed" in results.answer(single) and "±" not in results.answer(single)


def messages(board, **limits):
    return {r.dataset: (r.model, r.message) for r in recommend.recommend(board, **limits)}


def test_recommend_picks_the_best_student_within_the_budget(board):
    assert messages(board)["smsa"][0] == "bert-tiny"  # no limit: the best F1
    tight = messages(board, max_latency_ms=2)
    assert tight["smsa"][0] == "bilstm" and tight["nergrit"][0] == "bilstm"
    assert ("test F1 86.00 ± 1.41 over 2 seeds, Δ to the teacher -4.00; 1.00 ms per batch of 1 (torch)"
            in tight["smsa"][1])
    assert messages(board, max_latency_ms=2, max_ram_mb=25)["smsa"][0] == "cnn"
    assert messages(board, max_size_mb=1.0, engine="int8")["smsa"][0] == "bilstm"  # int8 files are a quarter
    assert messages(board, max_latency_ms=9, batch=32)["smsa"][0] == "cnn"  # bilstm takes 10 ms per 32
    only = recommend.recommend(board, dataset="SmSA", max_latency_ms=2)
    assert [r.dataset for r in only] == ["smsa"] and only[0].row["variant"] == "mse"


def test_recommend_says_which_limit_excludes_everything(board):
    one = messages(board, max_latency_ms=0.1, max_size_mb=200)["smsa"]
    assert one[0] is None
    assert ("--max-latency-ms 0.1 alone excludes every student: the cheapest by latency, cnn (test F1 84.00), "
            "needs --max-latency-ms 0.5") in one[1]
    assert "--max-size-mb" not in one[1]
    both = messages(board, max_latency_ms=0.1, max_ram_mb=1)["smsa"][1]
    assert "--max-latency-ms 0.1 alone" in both and "--max-ram-mb 1 alone" in both and "bilstm" not in both
    together = messages(board, max_latency_ms=0.6, max_size_mb=3.5)["smsa"]  # cnn is fast enough, bilstm small enough
    assert together[0] is None
    assert "nothing fits all limits at once" in together[1]
    assert "The closest, cnn (test F1 84.00), would need --max-size-mb 4." in together[1]


def test_recommend_refuses_what_the_profiles_cannot_answer(board, tmp_path):
    with pytest.raises(KdExamError, match="no torch latency at batch 8"):
        recommend.recommend(board, batch=8)
    with pytest.raises(KdExamError, match="dataset casa has no finished runs"):
        recommend.recommend(board, dataset="casa")
    unprofiled = results.scoreboard(results.study_frame(make_study(tmp_path / "half", profiled=("smsa",))))
    assert "nergrit: no profiled student yet" in messages(unprofiled)["nergrit"][1]
    with pytest.raises(KdExamError, match="no profile.json under"):
        results.costs(make_study(tmp_path / "none", profiled=()))


def test_kdexam_recommend_for_a_tight_and_a_loose_budget(study, capsys):
    assert cli.main(["recommend", "--study", str(study), "--max-latency-ms", "2", "--max-size-mb", "100"]) == 0
    out = capsys.readouterr().out
    assert "latency <= 2 ms, size <= 100 MB" in out and "smsa: bilstm (mse)" in out and "nergrit: bilstm" in out
    assert cli.main(["recommend", "--study", str(study), "-d", "smsa"]) == 0
    assert "smsa: bert-tiny (mse)" in capsys.readouterr().out
    assert cli.main(["recommend", "--study", str(study), "--max-ram-mb", "5"]) == 0
    assert "--max-ram-mb 5 alone excludes every student: the cheapest by ram, cnn" in capsys.readouterr().out
    assert cli.main(["recommend", "--study", str(study), "--format", "json", "--max-latency-ms", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["dataset"], r["model"]) for r in rows] == [("smsa", "bilstm"), ("nergrit", "bilstm")]
    assert rows[0]["row"]["f1_sd"] == pytest.approx(1.41421, abs=1e-4)
    assert cli.main(["recommend", "--study", str(study / "nope")]) == 1
    assert "not found" in capsys.readouterr().err


def test_figures_and_tables_are_saved(board, study, tmp_path):
    for name, fig in (("pareto-latency", plots.plot_pareto(board, "latency")),
                      ("pareto-size", plots.plot_pareto(board, "size")), ("heatmap", plots.plot_heatmap(board)),
                      ("latency", plots.plot_latency(rundir.read_json(study / "profile" / "smsa" / "profile" /
                                                                       rundir.PROFILE)))):
        assert plots.save_figure(fig, tmp_path, name).stat().st_size > 1000
    path = results.save_table(results.cost_table(board), tmp_path, "costs")
    assert pd.read_csv(path, index_col=[0, 1]).loc[("smsa", "cnn"), "× b1"] == 40.0


def test_export_html_is_standalone_and_hides_code(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("secret_code = 1")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "**visible answer**"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), cell]
    nbformat.write(nb, tmp_path / "a.ipynb")
    html = notebook.export_html(tmp_path / "a.ipynb", tmp_path / "a.html").read_text()
    assert "visible answer" in html and "Title" in html and "secret_code" not in html
    assert notebook.export_html_report("", tmp_path) is None
    assert notebook.export_html_report(tmp_path / "a.ipynb", tmp_path).name == "report.html"


def test_quality_tables_work_before_any_profile(tmp_path):
    board = results.scoreboard(results.study_frame(make_study(tmp_path / "s", profiled=())))
    assert results.leaderboard(board).loc[("nergrit", "bilstm"), "test F1"] == "71.00 ± 1.41"
    assert results.cost_table(board)["size MB"].isna().all()
    assert "pick **bert-tiny**" in results.answer(board)  # no costs: the pick is the best


def test_run_table_marks_runs_that_resumed_after_an_interrupt():
    base = dict(dataset="smsa", variant="mse", seed=0, train_examples=10, best_epoch=1, f1=0.5)
    df = pd.DataFrame([{**base, "model": "bilstm", "train_seconds": 30.0, "wall_seconds": 40.0,
                        "resumed_from_epoch": 0},
                       {**base, "model": "cnn", "train_seconds": 30.0, "wall_seconds": 40.0, "resumed_from_epoch": 2},
                       {**base, "model": "teacher", "train_seconds": 90.0, "wall_seconds": 20.0,
                        "resumed_from_epoch": None}])  # recorded before resumed_from_epoch: inferred
    table = results.run_table(df)
    assert table["model"].tolist() == ["teacher", "bilstm", "cnn"]
    assert table["wall s"].tolist() == ["20 (resumed)", "40", "40 (resumed)"]


def test_recommend_says_when_the_limit_falls_inside_a_latency_spread(board):
    board = board.assign(torch_ms_b1_p25=board["torch_ms_b1"] * 0.8, torch_ms_b1_p75=board["torch_ms_b1"] * 1.3)
    assert results.batches(board) == [1, 32]  # the spread columns are not batch sizes
    assert "× b1" in results.cost_table(board).columns
    (rec,) = recommend.recommend(board, dataset="smsa", max_latency_ms=3.5)  # bert-tiny: 3.0 ms, spread 2.4-3.9
    assert rec.model == "bert-tiny"
    assert "CAUTION: the limit 3.5 ms lies inside the measured spread" in rec.message
    assert "bert-tiny 2.40-3.90 ms" in rec.message
    assert "this pick may change" in rec.message
    (rec,) = recommend.recommend(board, dataset="smsa", max_latency_ms=10)  # every spread below the limit
    assert "CAUTION" not in rec.message
    (rec,) = recommend.recommend(board, dataset="smsa", max_latency_ms=0.45)  # cnn 0.5 ms: nothing fits, but it may
    assert rec.model is None and "cnn 0.40-0.65 ms" in rec.message and "the answer may change" in rec.message


def test_timing_reports_the_interquartile_range():
    from kdlib import profile

    t = profile._timing([0.001, 0.002, 0.003, 0.004, 0.005], 5)
    assert (t.p25_ms, t.median_ms, t.p75_ms) == pytest.approx((2.0, 3.0, 4.0))


def test_the_papers_claims_are_checked_on_the_scoreboard(board):
    claims = results.paper_claims(board).set_index("claim")
    gap = claims.loc["the best BiLSTM's test F1 minus its teacher's (mean)"]
    assert gap["ours"].startswith("-6.50") and gap["datasets"] == 2  # smsa -4 (mse 86 vs 90), nergrit -9 (71 vs 80)
    assert claims.loc["BiLSTM speed-up over the teacher, CPU, batch 1 (median)", "ours"] == "20.0x"
    assert claims.loc["BiLSTM (ONNX) speed-up over the teacher (PyTorch), batch 1 (median)", "ours"] == "100.0x"
    assert claims.loc["BiLSTM size as a share of the teacher's (median)", "ours"] == "0.7%"
    # smsa: bert-tiny (88.5 F1, 3 ms) beats the best word student on F1 but costs more: the word student stands
    latency = [c for c in claims.index if c.endswith("latency, batch 1")][0]
    assert claims.loc[latency, "ours"] == "2 of 2 datasets"


def test_speed_ups_and_size_are_also_given_against_the_bert_base_shaped_reference(study):
    from kdlib.profile_tables import REFERENCE_NAME

    name = REFERENCE_NAME.format("bert-base")
    path = study / "profile" / "smsa" / "profile" / rundir.PROFILE
    prof = rundir.read_json(path)
    prof["models"].append({**prof["models"][0], "model": name, "safetensors_bytes": 600.0 * 2**20})
    prof["latency"] += [{**row, "model": name, "median_ms": 3 * row["median_ms"]}  # 3x the teacher's time
                        for row in prof["latency"] if row["model"] == "teacher" and row["engine"] == "torch"]
    rundir.write_json(path, prof)
    board = results.scoreboard(results.study_frame(study))
    assert name not in set(board["model"])  # a timing-only model has no F1 and is no student
    costs = results.cost_table(board)
    assert costs.loc[("smsa", "bilstm"), "× b1"] == 20.0 and costs.loc[("smsa", "bilstm"), "× BERT-base b1"] == 60.0
    assert costs.loc[("smsa", "bilstm"), "ONNX × BERT-base b32"] == pytest.approx(300.0)  # 1200 ms / 4 ms
    assert costs.loc[("smsa", "bilstm"), "% of BERT-base size"] == pytest.approx(0.5)  # 3 MB of 600
    assert pd.isna(costs.loc[("nergrit", "bilstm"), "× BERT-base b1"])  # nergrit's profile timed no reference
    claims = results.paper_claims(board).set_index("claim")
    ref = "BiLSTM speed-up over a BERT-base-shaped model (timing only), CPU, batch 1 (median)"
    assert claims.loc[ref, "ours"] == "60.0x" and claims.loc[ref, "datasets"] == 1
    assert claims.loc["BiLSTM size as a share of a BERT-base-shaped model's (median)", "ours"] == "0.5%"
    assert claims.loc["BiLSTM speed-up over the teacher, CPU, batch 1 (median)", "datasets"] == 2


def test_the_papers_ratio_claims_count_only_the_profiled_datasets(tmp_path):
    board = results.scoreboard(results.study_frame(make_study(tmp_path / "s", profiled=("smsa",))))
    claims = results.paper_claims(board).set_index("claim")
    assert claims.loc["the best BiLSTM's test F1 minus its teacher's (mean)", "datasets"] == 2
    assert claims.loc["BiLSTM speed-up over the teacher, CPU, batch 1 (median)", "datasets"] == 1
    assert not any("BERT-base" in c for c in claims.index)  # no reference was timed: no rows for it
    unprofiled = results.scoreboard(results.study_frame(make_study(tmp_path / "t", profiled=())))
    claims = results.paper_claims(unprofiled).set_index("claim")
    assert claims.loc["BiLSTM size as a share of the teacher's (median)", "ours"] == "not profiled"


@pytest.mark.parametrize("ran, cap, patience, best, expected", [
    (7, 20, 4, 3, "early stopping"),  # stopped before the cap
    (15, 15, 3, 13, "epoch cap"),  # HoASA's first teacher: best 13 of 15, patience 3 not used up
    (15, 15, 3, 12, "early stopping"),  # patience ran out exactly at the cap
    (25, 25, 3, 25, "epoch cap"),  # still improving at the last epoch
])
def test_what_ended_a_run_early_stopping_or_its_epoch_cap(ran, cap, patience, best, expected):
    from kdlib import results

    m = {"history": [{"epoch": e} for e in range(1, ran + 1)], "params": {"epochs": cap, "patience": patience},
         "best_epoch": best}
    assert results.stopped_by(m) == expected
    assert results.stopped_by({"best_epoch": 3}) is None  # a run that records no history


def test_report_names_the_runs_cut_by_their_epoch_cap(study, capsys):
    metrics = study / "teacher" / "nergrit" / "teacher" / rundir.METRICS
    m = rundir.read_json(metrics)
    rundir.write_json(metrics, {**m, "best_epoch": 13, "history": [{"epoch": e} for e in range(1, 16)],
                                "params": {"epochs": 15, "patience": 3}})
    assert cli.main(["report", "--study", str(study), "--runs"]) == 0
    out = capsys.readouterr().out
    assert "STOPPED BY THE EPOCH CAP, not by early stopping" in out and "nergrit teacher (best epoch 13 of 15)" in out
    assert "epoch cap" in out.split("every run")[1]  # and the run table's stopped_by column says so


def test_report_names_teachers_whose_max_length_cuts_test_examples(study, capsys):
    from kdlib import results

    metrics = study / "teacher" / "nergrit" / "teacher" / rundir.METRICS
    m = rundir.read_json(metrics)
    rundir.write_json(metrics, {**m, "max_length": 128, "truncated": {
        "valid": {"examples": 10, "examples_cut": 0, "words": 100, "words_cut": 0},
        "test": {"examples": 200, "examples_cut": 16, "words": 1000, "words_cut": 20}}})
    assert cli.main(["report", "--study", str(study)]) == 0
    out = capsys.readouterr().out
    assert "TRUNCATED inputs" in out and "nergrit 8.0% of test examples at 128 sub-words (2.0% of its words" in out
    frame = results.collect(study)
    assert frame.loc[frame["model"] == "teacher", "test_examples_cut"].dropna().tolist() == [0.08]
    below = frame.assign(test_examples_cut=frame["test_examples_cut"].where(frame["model"] != "teacher", 0.005))
    assert results.truncation_note(below) == ""  # under 1% of the test examples: not worth a line
