"""`kdexam report --publish`: the committed folder of a study, on synthetic run folders (no training)."""
from __future__ import annotations

import matplotlib
import pandas as pd
import pytest

from kdlib import cli, publish, rundir
from kdlib.errors import KdExamError
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
    gap = publish.gap_table(frame).set_index(["model", "variant"])
    assert gap.loc[("bilstm", "kl-T2-a0.5"), "smsa"] == pytest.approx(-3.0)
    assert gap.loc[("bilstm", "kl-T2-a0.5"), "nergrit"] == pytest.approx(3.0)
    assert gap.loc[("bilstm", "kl-T2-a0.5"), "mean gap"] == pytest.approx(0.0)


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
        f"{n}.csv" for n in ("f1", "kd_vs_no_kd", "gap_to_teacher", "teacher_check", "teachers_vs_indonlu", "runs"))
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
