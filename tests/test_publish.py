"""`kdexam report --publish`: the committed folder of a study, on synthetic run folders (no training)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from kdlib import cli, publish, rundir
from kdlib.errors import ConfigError, KdExamError
from tests.test_report import make_study

matplotlib.use("Agg")

# smsa: the teacher (0.90) beats the no-KD BiLSTM; nergrit's (0.60) does not
QUALITY = {
    "smsa": {"teacher": {"offline": [(0, 0.90, 0.88)]},
             "bilstm": {"kl-T2-a0.5": [(0, 0.86, 0.84), (1, 0.88, 0.86)], "no-kd": [(0, 0.80, 0.80), (1, 0.82, 0.81)]},
             "cnn": {"kl-T2-a0.5": [(0, 0.84, 0.83)]}},
    "nergrit": {"teacher": {"offline": [(0, 0.60, 0.60)]},
                "bilstm": {"kl-T2-a0.5": [(0, 0.62, 0.6), (1, 0.64, 0.61)], "no-kd": [(0, 0.64, 0.6), (1, 0.66, 0.6)]},
                "cnn": {"kl-T2-a0.5": [(0, 0.50, 0.5)]}},
}


@pytest.fixture
def study(tmp_path):
    return make_study(tmp_path / "outputs" / "s", QUALITY, profiled=())


def test_kd_table_pairs_each_student_with_its_no_kd_runs(study):
    kd = publish.kd_table(rundir_frame(study))
    assert list(zip(kd["dataset"], kd["model"])) == [("nergrit", "bilstm"), ("smsa", "bilstm")]  # cnn: no no-KD
    smsa = kd[kd["dataset"] == "smsa"].iloc[0]
    assert smsa["KD"] == "kl-T2-a0.5" and smsa["no KD"] == "no-kd"
    assert smsa["margin"] == pytest.approx(6.0) and smsa["seeds"] == 2
    assert kd[kd["dataset"] == "nergrit"].iloc[0]["margin"] == pytest.approx(-2.0)


def test_teacher_check_and_gap(study):
    frame = rundir_frame(study)
    check = publish.teacher_check(frame).set_index("dataset")
    assert check.loc["smsa", "beats BiLSTM"] == "yes" and check.loc["nergrit", "beats BiLSTM"] == "NO"
    assert check.loc["nergrit", "no-KD BiLSTM F1"] == pytest.approx(65.0)
    problems = publish.teacher_problems(frame)
    assert len(problems) == 1 and problems[0].startswith("the nergrit teacher (60.00 test F1) does not beat")
    assert "word_position" not in problems[0]  # a head that does not read words at their first sub-word
    # a tagging teacher that read each word's first sub-word: the hint names the first-content setting
    metrics_file = study / "teacher" / "nergrit" / "teacher" / rundir.METRICS
    rundir.write_json(metrics_file, {**rundir.read_json(metrics_file), "pooling": "words (tagging)"})
    problem, = publish.teacher_problems(rundir_frame(study))
    assert "word_position: first-content" in problem
    gap = publish.gap_table(frame).set_index(["model", "variant"])
    assert gap.loc[("bilstm", "kl-T2-a0.5"), "smsa"] == pytest.approx(-3.0)
    assert gap.loc[("bilstm", "kl-T2-a0.5"), "nergrit"] == pytest.approx(3.0)
    assert gap.loc[("bilstm", "kl-T2-a0.5"), "mean gap"] == pytest.approx(0.0)


def _save_predictions(run, pred, gold=(("B-PER", "O", "B-LOC"), ("B-ORG", "O", "B-LOC"), ("B-PER", "I-PER", "O"))):
    rundir.write_json(run / rundir.PREDICTIONS, {"split": "test", "metric": "chunk_f1_macro",
                                                 "gold": [list(g) for g in gold], "pred": [list(p) for p in pred]})


def test_teacher_labels_show_where_a_losing_teacher_loses(study, tmp_path):
    # nergrit's teacher never finds the one ORG chunk (F1 0 against the BiLSTM's 100: -100 / 3 labels macro
    # points); on LOC it finds 1 of 2 (p 1, r 1/2: 66.67) against seeds that find both; PER: both right
    _save_predictions(study / "teacher" / "nergrit" / "teacher",
                      [("B-PER", "O", "B-LOC"), ("O", "O", "O"), ("B-PER", "I-PER", "O")])
    for seed in (0, 1):
        _save_predictions(study / "distill" / "nergrit" / f"bilstm-no-kd-s{seed}",
                          [("B-PER", "O", "B-LOC"), ("B-ORG", "O", "B-LOC"), ("B-PER", "I-PER", "O")])
    frame = rundir_frame(study)
    table = publish.teacher_labels(frame)
    assert set(table["dataset"]) == {"nergrit"}  # smsa's teacher beats its BiLSTM: not examined
    rows = table.set_index("label")
    assert list(table["label"]) == ["ORG", "LOC", "PER"]  # the biggest deficit first
    assert rows.loc["ORG", "teacher F1"] == 0.0 and rows.loc["ORG", "no-KD BiLSTM F1"] == 100.0
    assert rows.loc["ORG", "macro points"] == pytest.approx(-33.33) and rows.loc["ORG", "test support"] == 1
    assert rows.loc["LOC", "teacher F1"] == pytest.approx(66.67) and rows.loc["PER", "Δ"] == 0.0
    assert rows.loc["LOC", "BiLSTM seeds"] == 2
    assert len(publish.teacher_labels(frame, worst=1)) == 1
    problem, = publish.teacher_problems(frame)
    assert "it loses most on ORG (F1 0.0 against 100.0; 1 in test; -33.3 macro points) and LOC" in problem
    out = tmp_path / "published"
    publish.publish(study, out)
    assert "| ORG " in (out / "README.md").read_text()
    assert len(pd.read_csv(out / "tables" / "teacher_labels.csv")) == 3
    # the teacher's predictions are published with the students', so the table survives the run folders
    assert (out / "runs" / "teacher" / "nergrit" / "teacher" / "predictions.json.gz").is_file()


def test_publish_writes_a_small_relative_folder_and_the_cli_says_so(study, tmp_path, capsys):
    out = tmp_path / "reports" / "s"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "old.csv").write_text("left from an earlier publish")
    assert cli.main(["report", "--study", str(study), "--publish", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PROBLEM: the nergrit teacher" in printed and f"published: {out}" in printed
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == len(rundir_frame(study)) and not runs["run_dir"].str.startswith("/").any()
    assert set(runs["run_dir"]) >= {"teacher/smsa/teacher", "distill/smsa/bilstm-no-kd-s1"}
    assert sorted(p.name for p in (out / "tables").iterdir()) == sorted(
        f"{n}.csv" for n in ("f1", "kd_vs_no_kd", "gap_to_teacher", "teacher_check", "teacher_labels",
                             "teachers_vs_indonlu", "runs", "headline", "time"))
    indonlu = pd.read_csv(out / "tables" / "teachers_vs_indonlu.csv").set_index("dataset")
    assert indonlu.loc["smsa", "XLM-R base (IndoNLU)"] == 91.39 and indonlu.loc["smsa", "our teacher"] == 90.0
    assert indonlu.loc["nergrit", "Δ to IndoBERT base (p1)"] == pytest.approx(60.0 - 69.87)
    assert (out / "figures" / "f1.png").stat().st_size > 1000 and (out / "figures" / "kd_margins.png").is_file()
    readme = (out / "README.md").read_text()
    assert "**Problems:** the nergrit teacher" in readme and "| smsa" in readme
    assert f"kdexam report --study {study} --publish {out}" in readme


def test_publish_refuses_an_empty_study_and_an_oversized_folder(tmp_path, study, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdExamError, match="no finished run"):
        publish.publish(tmp_path / "empty", tmp_path / "r")
    monkeypatch.setattr(publish, "MAX_MB", 0.0001)
    with pytest.raises(KdExamError, match=r"MiB, over the 0.0001 MiB a published study may take"):
        publish.publish(study, tmp_path / "big")


def rundir_frame(study):
    from kdlib import results

    return results.collect(study)


def test_a_republish_keeps_the_runs_of_earlier_sessions(study, tmp_path):
    import shutil

    out = tmp_path / "reports" / "s"
    publish.publish(study, out)
    before = pd.read_csv(out / "runs.csv")
    shutil.rmtree(study / "distill" / "smsa")  # a new machine: the smsa students' folders are gone
    rundir.write_json(study / "distill" / "smsa" / "cnn-no-kd-s0" / rundir.METRICS, {
        "stage": "distill", "dataset": "smsa", "model": "cnn", "variant": "no-kd", "seed": 0, "kd": False, "f1": 0.7,
        "valid": {"f1": 0.7}, "parameters": 10})
    rundir.mark_done(study / "distill" / "smsa" / "cnn-no-kd-s0")
    publish.publish(study, out)
    after = pd.read_csv(out / "runs.csv")
    assert len(after) == len(before) + 1 and set(before["run_dir"]) < set(after["run_dir"])
    kd = pd.read_csv(out / "tables" / "kd_vs_no_kd.csv")
    smsa = kd[(kd["dataset"] == "smsa") & (kd["model"] == "bilstm")].iloc[0]
    assert smsa["margin"] == pytest.approx(6.0)  # from the kept rows: a seed-paired CI
    assert "from an earlier publish" in (out / "README.md").read_text()
    (out / "runs.csv").write_text("not,a\nruns file\n")
    with pytest.raises(KdExamError, match="has no run_dir column"):
        publish.publish(study, out)


def test_a_publish_without_an_analysis_here_keeps_the_published_analysis_figures(study, tmp_path):
    out = tmp_path / "reports" / "s"
    publish.publish(study, out)
    figure = out / "figures" / "analysis" / "pareto-latency.png"  # drawn by an earlier machine's analysis
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"png")
    (out / "figures" / "stale.png").write_bytes(b"old")
    publish.publish(study, out)  # this machine has runs but no analysis: report.html's figures must stay
    assert figure.read_bytes() == b"png" and not (out / "figures" / "stale.png").exists()
    assert (out / "figures" / "f1.png").is_file()
    analysis = study / publish.ANALYSIS
    (analysis / "figures").mkdir(parents=True)
    (analysis / "figures" / "heatmap-delta.png").write_bytes(b"new")
    rundir.mark_done(analysis)
    publish.publish(study, out)  # an analysis here replaces them
    assert not figure.exists() and (out / "figures" / "analysis" / "heatmap-delta.png").read_bytes() == b"new"


# ---------------------------------------------------------------------------------------------------------------
# A study that outlives its machine: profiles and settings are published, read back by the analysis and recommend
# (kdlib.results.study_frame) and by the runner, which skips the datasets published in full (kdlib.published).

@pytest.mark.slow  # several publishes, each drawing its figures
def test_profiles_and_costs_survive_a_new_machine(tmp_path, capsys):
    import shutil

    from kdlib import published, results

    study = make_study(tmp_path / "outputs" / "s", QUALITY, profiled=("smsa",))
    out = tmp_path / "reports" / "s"
    publish.publish(study, out)
    assert sorted(p.name for p in (out / "profiles").iterdir()) == ["smsa.json"]
    costs = pd.read_csv(out / "tables" / "costs.csv")
    assert set(costs["dataset"]) == {"smsa"} and "× b1" in costs.columns
    readme = (out / "README.md").read_text()
    assert "## Costs on the profiled datasets" in readme and "## The paper's claims on our numbers" in readme
    # nergrit has runs but no profile yet (its runs still going): the claims and the analysis leave it out, and say so
    assert "Left out until their runs and profile finish: nergrit" in readme
    headline = pd.read_csv(out / "tables" / "headline.csv")["dataset"].str.lower()
    assert headline.str.startswith("smsa").any() and not headline.str.startswith("nergrit").any()
    claims = pd.read_csv(out / "tables" / "paper_claims.csv").set_index("claim")
    assert claims.loc["BiLSTM speed-up over the teacher, CPU, batch 1 (median)", "datasets"] == 1  # smsa only
    assert set(results.study_frame(study)["dataset"]) == {"smsa", "nergrit"}  # recommend still names nergrit
    before = results.study_frame(study, profiled_only=True)
    assert set(before["dataset"]) == {"smsa"} and before.attrs["in_progress"] == ["nergrit"]
    assert results.in_progress_note(before).startswith("Left out until their runs and profile finish: nergrit")
    shutil.rmtree(study)  # a new machine: nothing under outputs/
    after = results.study_frame(out, profiled_only=True)  # the published folder as the study
    key = ["dataset", "model", "variant", "seed"]
    assert after.sort_values(key)[key + ["f1", "size_mb", "torch_ms_b1"]].reset_index(drop=True).equals(
        before.sort_values(key)[key + ["f1", "size_mb", "torch_ms_b1"]].reset_index(drop=True))
    assert cli.main(["recommend", "--study", str(out), "--max-latency-ms", "3"]) == 0
    text = capsys.readouterr().out
    assert "smsa" in text and "export it: kdexam export" not in text  # no weights here to export
    assert "to export it: its model is not on this machine" in text
    assert "kdexam run params/s.yaml -d smsa --force" in text
    assert "kdexam export --study outputs/s --dataset smsa --student" in text
    # a later session profiles nergrit on its machine: both profiles count, its own one first
    again = make_study(tmp_path / "outputs" / "s", {"nergrit": QUALITY["nergrit"]}, profiled=("nergrit",))
    frame = results.study_frame(again, published=out, profiled_only=True)
    assert set(frame.dropna(subset=["size_mb"])["dataset"]) == {"smsa", "nergrit"}
    assert len(frame[frame["dataset"] == "smsa"]) == len(before) and (frame["dataset"] == "nergrit").sum() > 1
    assert frame.attrs["in_progress"] == [] and results.in_progress_note(frame) == ""
    publish.publish(again, out)
    assert sorted(published.profiles(out)) == ["nergrit", "smsa"]
    (out / "profiles" / "smsa.json").write_text("{ truncated")
    with pytest.raises(KdExamError, match=r"smsa.json: truncated or corrupt JSON .*restore it from git"):
        results.study_frame(out)


@pytest.mark.slow  # several publishes, each drawing its figures
def test_a_teacher_trained_again_here_retires_its_datasets_published_runs_and_profile(tmp_path):
    import shutil

    from kdlib import published, results

    study = make_study(tmp_path / "outputs" / "s", QUALITY, profiled=("smsa", "nergrit"))
    out = tmp_path / "reports" / "s"
    publish.publish(study, out)
    shutil.rmtree(study)
    # a new machine trains smsa's teacher again; its students and profile are not done yet
    make_study(study, {"smsa": {"teacher": {"offline": [(0, 0.91, 0.9)]}}}, profiled=())
    rundir.mark_done(study / "teacher" / "smsa" / "teacher", finished="2031-01-01T00:00:00+0000")
    frame = results.study_frame(study, published=out)
    smsa = frame[frame["dataset"] == "smsa"]
    assert list(smsa["model"]) == ["teacher"] and smsa["f1"].iloc[0] == 0.91  # no student of the old teacher
    assert smsa["size_mb"].isna().all()  # nor the old teacher's profile
    nergrit = frame[frame["dataset"] == "nergrit"]
    assert len(nergrit) == 6 and nergrit["size_mb"].notna().all()
    publish.publish(study, out)
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs[(runs["dataset"] == "smsa") & (runs["stage"] == "teacher")]["run_dir"]) == ["teacher/smsa/teacher"]
    assert not (runs["stage"] == "distill")[runs["dataset"] == "smsa"].any()
    assert sorted(published.profiles(out)) == ["nergrit"]
    assert set(published.settings(out)) <= set(runs["run_dir"]) | {"profile/nergrit/profile"}


def test_the_runner_skips_datasets_published_in_full_with_the_same_settings(tmp_path, tiny_data_dir, capsys):
    import shutil
    import textwrap

    from kdlib import config, runner
    from tests.test_profile import STUDY

    path = tmp_path / "params" / "study.yaml"
    path.parent.mkdir()
    text = textwrap.dedent(STUDY.format(out=tmp_path / "out")) + "profile: {runs: 3, thread_counts: [1]}\n"
    path.write_text(text + "published: ../reports/tiny-profile\n")
    study = config.load_params(path)
    assert study.published == str(tmp_path / "reports" / "tiny-profile")
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    study_dir = study.study_dir(tmp_path)
    for run in runs:  # every smsa run finished on "the old machine", as the runner leaves it
        if run.dataset != "smsa":
            continue
        rundir.write_json(run.out_dir / rundir.PARAMS, {"run": run.name, "parameters": run.parameters})
        if run.stage == "profile":
            rundir.write_json(run.out_dir / rundir.PROFILE, {
                "stage": "profile", "dataset": "smsa", "machine": {},
                "models": [{"model": "teacher", "parameters": 10, "safetensors_bytes": 40}],
                "latency": [{"model": "teacher", "engine": "torch", "threads": 1, "batch": 1, "inputs": "real",
                             "median_ms": 2.0}]})
        else:
            model = "teacher" if run.stage == "teacher" else run.parameters["student"]
            rundir.write_json(run.out_dir / rundir.METRICS, {
                "stage": run.stage, "dataset": "smsa", "model": model, "variant": "v", "seed": 0, "f1": 0.5,
                "valid": {"f1": 0.5}, "parameters": 10})
        rundir.mark_done(run.out_dir)
    publish.publish(study_dir, study.published)
    shutil.rmtree(study_dir)

    def dry_run() -> str:
        runner.run_study(str(path), dry_run=True, root=tmp_path, data_dir=str(tiny_data_dir))
        return capsys.readouterr().out

    shown = dry_run()
    smsa = [r.name for r in runs if r.dataset == "smsa"]
    assert all(f"{name} (published)" in shown for name in smsa) and "published in" in shown
    assert "profile/nergrit/profile (to run)" in shown and "analysis/all/analysis (to run)" in shown
    kept, dropped = runner.drop_published(study, runs, tmp_path)
    assert dropped == smsa and kept[-1].needs == (rundir.profile_dir(study_dir, "nergrit"),)
    assert kept[-1].parameters["published_dir"] == study.published
    # a changed setting: smsa is no longer the published one, so it runs here in full
    path.write_text(text.replace("variants: [mse, ce]", "variants: [mse, ce]\n  epochs: 7")
                    + "published: ../reports/tiny-profile\n")
    assert "teacher/smsa/teacher (to run)" in dry_run() and "(published)" not in dry_run()
    # a teacher trained again here: its published students were distilled from the other run, so they run here
    path.write_text(text + "published: ../reports/tiny-profile\n")
    teacher = rundir.teacher_dir(study_dir, "smsa")
    rundir.mark_done(teacher, finished="2031-01-01T00:00:00+0000")
    assert "(published)" not in (shown := dry_run()) and "distill/smsa/bilstm-mse-s0 (to run)" in shown
    shutil.rmtree(teacher)
    # a study without a profile: section: a dataset is complete with its teacher and students
    path.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")) + "published: ../reports/tiny-profile\n")
    assert "teacher/smsa/teacher (published)" in dry_run()
    # without its profile published, a dataset of a study with a profile: section is not complete
    path.write_text(text + "published: ../reports/tiny-profile\n")
    (Path(study.published) / "profiles" / "smsa.json").unlink()
    assert "(published)" not in dry_run()
    # ... nor when a --stage selection leaves out what is missing: its teacher runs, as the full run would have it
    runner.run_study(str(path), dry_run=True, root=tmp_path, data_dir=str(tiny_data_dir), stages=["teacher"])
    assert "teacher/smsa/teacher (to run)" in (shown := capsys.readouterr().out) and "(published)" not in shown
    path.write_text(text + "published: 3\n")
    with pytest.raises(ConfigError, match="published: the study's published folder"):
        config.load_params(path)


@pytest.mark.slow  # several publishes, each drawing its figures
def test_published_predictions_keep_the_cis_paired_over_test_examples(study, tmp_path):
    import shutil

    import numpy as np

    from kdlib import results

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 200).tolist()
    for run in (study / "distill").rglob(rundir.DONE):  # every student: right on 60-90% of the examples
        pred = [g if rng.random() < 0.6 + 0.3 * ("kl" in run.parent.name) else (g + 1) % 3 for g in gold]
        rundir.write_json(run.parent / rundir.PREDICTIONS, {"split": "test", "metric": "macro_f1", "gold": gold,
                                                            "pred": pred})
    before = publish.kd_table(results.collect(study))
    out = tmp_path / "reports" / "s"
    publish.publish(study, out)
    packed = sorted((out / "runs").rglob("predictions.json.gz"))
    assert len(packed) == len(list((study / "distill").rglob(rundir.PREDICTIONS)))
    first = packed[0].read_bytes()
    publish.publish(study, out)
    assert packed[0].read_bytes() == first  # same predictions, same bytes: git sees no change
    shutil.rmtree(study)  # a new machine
    after = publish.kd_table(results.study_frame(out))
    cols = ["dataset", "model", "margin", "ci_low", "ci_high"]
    assert after[cols].round(6).equals(before[cols].round(6))
    for path in packed:
        path.write_bytes(b"not gzip")  # corrupt: a warning, and the CIs fall back to the seeds
    seeds_only = publish.kd_table(results.study_frame(out))
    assert seeds_only[cols].notna().all().all() and not seeds_only[cols].round(6).equals(before[cols].round(6))


def test_a_published_pick_gets_how_to_train_and_export_it_not_an_export_command(tmp_path):
    from kdlib import export, recommend

    out = tmp_path / "reports" / "exam"
    out.mkdir(parents=True)
    (out / "runs.csv").write_text("run_dir\n")
    rec = recommend.Recommendation("keps", "cnn", "KEPS: CNN (KD)", {"variant": "kl-T2-a0.5"})
    assert export.recommended_command(out, rec) is None
    assert rec.export_hint.startswith("its model is not on this machine")
    assert "`kdexam run params/exam.yaml -d keps --force`" in rec.export_hint
    assert rec.export_hint.endswith("`kdexam export --study outputs/exam --dataset keps --student cnn --variant "
                                    "kl-T2-a0.5 --out exports/keps-cnn`")
    assert '"export_hint": "its model' in recommend.recommendations_json([rec])


def test_the_headline_table_gives_each_dataset_the_best_kd_variant_group_averages_and_median_costs(tmp_path):
    study = make_study(tmp_path / "outputs" / "s", QUALITY, profiled=("smsa",))
    teacher = study / "teacher" / "smsa" / "teacher" / rundir.METRICS  # a capped teacher is named in its row
    rundir.write_json(teacher, {**rundir.read_json(teacher), "train_examples": 2000, "train_split_examples": 11000})
    out = tmp_path / "reports" / "s"
    publish.publish(study, out)
    table = pd.read_csv(out / "tables" / "headline.csv", keep_default_na=False).set_index("dataset")
    assert list(table.columns) == ["teacher", "bilstm", "cnn", "best student"]
    smsa = table.loc["SmSA (single sentence, train capped at 2,000 of 11,000)"]
    assert smsa["teacher"] == "90.00" and smsa["bilstm"] == "87.00 ± 1.41"  # KD only: no-KD's 81 is not shown
    assert smsa["cnn"] == "84.00" and smsa["best student"] == "bilstm"
    assert table.loc["classification average (1)", "cnn"] == "84.00"
    # nergrit is not profiled yet (its runs still going): the published headline leaves it out; the table has it
    assert not any(d.startswith("NERGrit") or d.startswith("tagging") for d in table.index)
    from kdlib import results

    whole = results.headline(rundir_frame(study)).set_index("dataset")
    nergrit = whole.loc["NERGrit (tagging)"]
    assert nergrit["bilstm"] == "63.00 ± 1.41" and nergrit["best student"] == "bilstm"
    assert whole.loc["tagging average (1)", "teacher"] == "60.00"
    speed = table.loc["speed-up over our teacher, batch 1 (ONNX), median of 1"]  # smsa's profile only
    assert speed["teacher"] == "1.0× (2.0×)" and speed["bilstm"] == "20.0× (100.0×)"
    assert speed["cnn"] == "40.0× (200.0×)"
    assert table.loc["size, % of our teacher, median of 1", "bilstm"] == "0.7%"
    readme = (out / "README.md").read_text()
    assert readme.index("## The exam in one table") < readme.index("## Test F1 per dataset")
    assert "| SmSA (single sentence, train capped at 2,000 of 11,000) |" in readme
    # averages run over the datasets every model has: a dataset still missing a student is left out of them
    frame = rundir_frame(study)
    two = frame[~((frame["dataset"] == "nergrit") & (frame["model"] == "cnn"))]
    assert "tagging average" not in " ".join(results.headline(two)["dataset"])
    three = pd.concat([frame, frame[frame["dataset"] == "smsa"].assign(dataset="emot"),
                       frame[(frame["dataset"] == "smsa") & (frame["stage"] == "teacher")].assign(dataset="casa")])
    average = results.headline(three).set_index("dataset").loc["classification average (2 of 3, those every model has)"]
    assert average["teacher"] == "90.00" and average["cnn"] == "84.00"
    assert results.headline(frame[frame["stage"] == "ablation-loss"]).empty


def test_the_time_table_sums_each_datasets_runs_and_profile_per_stage(tmp_path):
    rows = [("teacher", "smsa", 600.0), ("distill", "smsa", 100.0), ("distill", "smsa", 140.0),
            ("teacher", "nergrit", 300.0), ("distill", "nergrit", 60.0), ("ablation-loss", "smsa", 999.0)]
    frame = pd.DataFrame(rows, columns=["stage", "dataset", "wall_seconds"])
    rundir.write_json(tmp_path / "profiles" / "smsa.json", {"dataset": "smsa", "models": [], "latency": [],
                                                            "wall_seconds": 700.0, "machine": {"cpu": "Test CPU"}})
    table = publish.time_table(frame, tmp_path).set_index("dataset")
    assert list(table.index) == ["smsa", "nergrit", "all"]  # IndoNLU's order, then the sum
    assert table.loc["smsa", "students s"] == 240 and table.loc["smsa", "student runs"] == 2
    assert table.loc["smsa", "total h"] == pytest.approx((600 + 240 + 700) / 3600, abs=0.01)
    assert pd.isna(table.loc["nergrit", "profile s"]) and table.loc["nergrit", "total h"] == pytest.approx(0.1)
    assert table.loc["all", "teacher s"] == 900 and table.loc["all", "profile s"] == 700
    assert table.loc["all", "machine"] == "Test CPU"  # the ablation's 999 s is another study's question
    assert publish.time_table(frame[frame["stage"] == "ablation-loss"], tmp_path).empty
    # a teacher resumed at its 23rd epoch recorded its last attempt's wall time only: its epochs' seconds count
    resumed = frame.assign(train_seconds=[4460.0, 90.0, 130.0, 250.0, 50.0, 900.0])
    table = publish.time_table(resumed, tmp_path).set_index("dataset")
    assert table.loc["smsa", "teacher s"] == 4460 and table.loc["smsa", "students s"] == 240
