"""The benchmarks run end to end on seconds-long settings (--tiny) and print their tables."""
from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from kdlib import config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch, tmp_path, _tiny_master):
    """Run benchmarks/<name>.py's main() in this process with --tiny, on the tiny slice of the real data."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def run(name: str, *argv: str) -> str:
        module = importlib.import_module(name)
        monkeypatch.setattr(sys, "argv", [name, "--tiny", "--data-dir", str(_tiny_master), "--work", str(tmp_path),
                                          *argv])
        module.main()

    return run


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_bench_cache_prints_speed_up_per_student(bench, capsys):
    bench("bench_cache", "--students", "bilstm", "cnn")
    out = capsys.readouterr().out
    assert "bench_cache: smsa, 40 train examples" in out and "speed-up per epoch" in out
    assert [line.split()[0] for line in out.splitlines() if line.strip().endswith("x") or "x " in line][-2:] \
        == ["bilstm", "cnn"]


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_bench_loader_prints_the_batching_variants(bench, capsys):
    bench("bench_loader", "--students", "bilstm")
    out = capsys.readouterr().out
    assert "bucketed, dynamic padding (kdlib)" in out and "random, padded to the longest" in out


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_bench_peers_runs_a_contender_in_its_own_process(bench, capsys):
    bench("bench_peers", "--contenders", "kdlib")
    out = capsys.readouterr().out
    assert "bench_peers: smsa, student bilstm" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("kdlib "))
    assert "failed" not in row and "1.00x" in row


@pytest.mark.slow
def test_bench_predict_prints_ratios_to_the_teacher_pipeline(bench, capsys):
    bench("bench_predict", "--repeats", "1", "--starts", "1")
    out = capsys.readouterr().out
    assert "bilstm: export labels 100.00%" in out and "bench_predict: smsa, 64 test texts" in out
    rows = {line.split()[0]: line for line in out.splitlines() if "(kdexam predict)" in line or "(transformers" in line}
    assert set(rows) == {"bilstm", "cnn", "teacher"} and "1.00" in rows["teacher"]


def test_bench_runner_study_is_a_valid_study(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        bench_runner = importlib.import_module("bench_runner")
    finally:
        sys.path.remove(str(BENCHMARKS))
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(bench_runner.STUDY.format(out=tmp_path, datasets=["smsa", "emot"], train=50)))
    study = config.load_params(path)
    assert study.datasets == ("smsa", "emot") and len(study.students) * len(study.variants) == 4


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_bench_bilstm_checks_both_encoders_agree_and_prints_ratios(monkeypatch, capsys, _tiny_master):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("bench_bilstm")
    monkeypatch.setattr(sys, "argv", ["bench_bilstm", "--examples", "40", "--data-dir", str(_tiny_master)])
    module.main()
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.split()[:1] in (["smsa"], ["nergrit"])]
    assert [r[0] for r in rows] == ["smsa", "smsa", "nergrit", "nergrit"]
    assert rows[0][1] == "packed" and rows[0][4] == rows[0][5] == "1.00"  # the baseline of the ratios


PUBLISHED_STUDY = """\
study: tinypub
datasets: [smsa]
seeds: [0]
teacher: {base_model: tiny-random, epochs: 4, patience: 1}
distill:
  students: [bilstm]
  variants: [{loss: kl, temperature: 2, alpha: 0.5}, ce]
  epochs: 10
  patience: 2
  transfer: tang
  transfer_size: 2
"""
PUBLISHED_RUNS = """\
stage,dataset,model,variant,seed,kd,train_examples,best_epoch,resumed_from_epoch,train_seconds,wall_seconds,run_dir,epochs_run
teacher,smsa,teacher,tiny-random,0,False,40,1,0,160.0,260.0,teacher/smsa/teacher,2
distill,smsa,bilstm,kl-T2-a0.5,0,True,40,3,0,400.0,420.0,distill/smsa/bilstm-kl-T2-a0.5-s0,
distill,smsa,bilstm,no-kd,0,False,40,2,0,160.0,180.0,distill/smsa/bilstm-no-kd-s0,4
"""
ESTIMATED_STUDY = """\
study: tinyexam
datasets: [smsa]
seeds: [0, 1]
teacher: {base_model: tiny-random, epochs: 3, patience: 1, max_train_examples: 20}
distill:
  students: [bilstm]
  variants: [{loss: kl, temperature: 2, alpha: 0.5}, ce]
  epochs: 6
  patience: 1
  min_epochs: 4
  transfer: tang
  transfer_size: 3
  max_train_examples: 20
profile: {}
"""


def test_estimate_exam_from_runs_fits_rates_without_training(monkeypatch, tmp_path, capsys, _tiny_master):
    """Rates from a hand-written runs.csv, the estimate for a small study, one number checked by hand."""
    published = tmp_path / "reports" / "tinypub"
    published.mkdir(parents=True)
    (published / "runs.csv").write_text(PUBLISHED_RUNS)
    (tmp_path / "tinypub.yaml").write_text(PUBLISHED_STUDY)
    (tmp_path / "tinyexam.yaml").write_text(ESTIMATED_STUDY)
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("estimate_exam")
    monkeypatch.setattr(sys, "argv", [
        "estimate_exam", "--from-runs", str(published / "runs.csv"), "--runs-params", str(tmp_path / "tinypub.yaml"),
        "--params", str(tmp_path / "tinyexam.yaml"), "--data-dir", str(_tiny_master), "--profile-seconds", "900",
        "--session-cpu-h", "0.4", "--work", str(tmp_path / "never-written")])
    module.main()
    out = capsys.readouterr().out
    # Same dataset published and estimated, so its mean words cancel. Published (words in units of mean words):
    # teacher 40 x 2 epochs in 160 s -> 0.5/s; bilstm: KD 40 x 2 (tang x2 from tinypub.yaml) x 5 epochs (best 3 +
    # patience 2) + no-KD 40 x 1 x 4 epochs = 560 in 560 s -> 1/s. Overheads (wall - train): teacher 100 s,
    # student median 20 s. Estimated, 20 train examples (the cap), epochs: teacher min(3, ceil(3/3) + 1) = 2,
    # students min(6, max(ceil(6/3) + 1, 4)) = 4: teacher 100 + 20 x 2 / 0.5 = 180 s; per seed KD
    # 20 + 20 x 3 x 4 = 260 s and no-KD 20 + 20 x 4 = 100 s, two seeds: 720 s = 0.2 h; profile 900 s = 0.25 h.
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["smsa"])
    assert row[1] == "20" and row[3:] == ["5", "0.05", "0.2", "0.25", "0.5", "no"], out
    rates = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["teacher"],
                                                                                                 ["bilstm"])}
    assert rates["bilstm"][1] == "2" and rates["teacher"][1] == "1"
    assert not (tmp_path / "never-written").exists()  # no scratch folder, nothing trained


def test_estimate_exam_from_runs_names_a_missing_runs_csv(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("estimate_exam")
    monkeypatch.setattr(sys, "argv", ["estimate_exam", "--from-runs", str(tmp_path / "nope" / "runs.csv")])
    with pytest.raises(SystemExit, match=r"--from-runs: no such file .*nope/runs.csv; give published runs.csv"):
        module.main()


def test_a_benchmark_names_bad_input_on_one_line_not_with_a_traceback(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delenv("KDEXAM_DATA_DIR", raising=False)
    module = importlib.import_module("estimate_exam")
    published = tmp_path / "runs.csv"
    published.write_text(PUBLISHED_RUNS)
    monkeypatch.setattr(sys, "argv", ["estimate_exam.py", "--from-runs", str(published), "--data-dir",
                                      str(tmp_path / "no-data")])
    with pytest.raises(SystemExit, match=r"^estimate_exam: error: data folder .*no-data does not exist"):
        module.main()
