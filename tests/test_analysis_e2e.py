"""06_profile and 07_analysis through papermill via `kdexam run` on a tiny study, then `kdexam recommend`.

The teacher and students are trained here directly (their notebooks have their own end-to-end test), marked done,
so `kdexam run` skips them and executes only the profile and analysis notebooks.
"""
from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest

from kdlib import cli, distill, params, rundir, teachers

pytestmark = pytest.mark.slow

STUDY = """
study: e2e-analysis
output_dir: {out}
datasets: [smsa]
teacher: {{base_model: tiny-random, epochs: 1, lr: 0.001, max_length: 64}}
distill:
  students: [bilstm, cnn]
  variants: [mse]
  epochs: 1
  student_options: {{bilstm: {{emb_dim: 8, hidden: 8}}, cnn: {{emb_dim: 8, filters: 4}}}}
profile: {{thread_counts: [1], batch_sizes: [1, 4], warmup: 1, runs: 2, memory: false, max_test_examples: 16}}
"""


def _errors(notebook) -> list:
    cells = json.loads(notebook.read_text())["cells"]
    return [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]


def test_profile_and_analysis_notebooks_run_and_write_the_report(tmp_path, _tiny_master, capsys):
    study_file = tmp_path / "study.yaml"
    study_file.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")))
    study = tmp_path / "out" / "e2e-analysis"
    teacher = study / "teacher" / "smsa" / "teacher"
    teachers.run_teacher(params.TeacherParams(
        dataset="smsa", out_dir=str(teacher), data_dir=str(_tiny_master), epochs=1,
                                        models_dir=str(tmp_path / "out" / "models"), lr=1e-3, max_length=64))
    rundir.mark_done(teacher)
    for student, options in (("bilstm", {"emb_dim": 8, "hidden": 8}), ("cnn", {"emb_dim": 8, "filters": 4})):
        out = study / "distill" / "smsa" / f"{student}-mse-s0"
        distill.run_distill(params.DistillParams(dataset="smsa", student=student, teacher_dir=str(teacher), epochs=1,
                                            out_dir=str(out), data_dir=str(_tiny_master), student_options=options))
        rundir.mark_done(out)

    assert cli.main(["run", str(study_file), "--data-dir", str(_tiny_master)]) == 0
    assert "done 2, skipped (already done) 3, failed 0" in capsys.readouterr().out

    profile_dir = study / "profile" / "smsa" / "profile"
    assert rundir.is_done(profile_dir) and not _errors(profile_dir / "06_profile.ipynb")
    prof = rundir.read_json(profile_dir / "profile.json")
    assert [m["model"] for m in prof["models"]] == ["teacher", "bilstm", "cnn"]
    assert all(m["onnx_match"] for m in prof["models"]) and prof["settings"]["runs"] == 2

    analysis = study / "analysis" / "all" / "analysis"
    assert rundir.is_done(analysis) and not _errors(analysis / "07_analysis.ipynb")
    for name in ("pareto-latency", "pareto-size", "heatmap-delta"):
        assert (analysis / "figures" / f"{name}.png").stat().st_size > 1000
    assert (analysis / "tables" / "leaderboard.csv").exists() and (analysis / "tables" / "costs.csv").exists()
    headline = pd.read_csv(analysis / "tables" / "headline.csv", keep_default_na=False).set_index("dataset")
    assert list(headline.columns) == ["teacher", "bilstm", "cnn", "best student"]
    assert "SmSA (single sentence" in headline.index[0] and headline.index[-1].startswith("size, % of our teacher")
    html = (analysis / "report.html").read_text()
    assert "Which student is best?" in html and "data:image/png;base64" in html and "pick" in html

    assert cli.main(["recommend", "--study", str(study), "--max-latency-ms", "1000", "--max-size-mb", "100"]) == 0
    assert "smsa: " in (out := capsys.readouterr().out) and "test F1" in out
    assert cli.main(["recommend", "--study", str(study), "--max-latency-ms", "0.000001"]) == 0
    assert "--max-latency-ms 1e-06 alone excludes every student" in capsys.readouterr().out

    assert cli.main(["run", str(study_file), "--data-dir", str(_tiny_master)]) == 0  # everything done: all skipped
    assert "done 0, skipped (already done) 5" in capsys.readouterr().out
