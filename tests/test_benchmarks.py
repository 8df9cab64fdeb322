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
