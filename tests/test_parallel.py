"""The runner on Dask: parallel runs in dependency order, threads split, failures isolated, resume after a kill.

Most tests drive `runner.execute` with a stand-in notebook that records when and how it ran (a kernel start, no
torch), so they are fast; one drives `kdexam run --jobs 2` on the real notebooks and kills it half-way.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import pytest

from kdlib import cli, parallel, rundir, runner

PARAMETERS = """\
name = ""  # run name
out_dir = ""  # run folder
seconds = 0.0  # how long the run takes
fail = False  # raise instead of finishing
threads = 0  # as the runner passes it
wait_for = ""  # a file another run writes when it starts: proves the two run at the same time
"""
BODY = """\
import json, os, time
from pathlib import Path
record = {"name": name, "threads": threads, "start": time.time(), "worker_pid": os.getppid()}
Path(out_dir, "started.json").write_text(json.dumps(record))
deadline = time.time() + 40
while wait_for and not Path(wait_for).exists():
    if time.time() > deadline:
        raise TimeoutError(f"{wait_for} never appeared: the runs did not run at the same time")
    time.sleep(0.1)
time.sleep(seconds)
if fail:
    raise RuntimeError(f"{name} was told to fail")
record["end"] = time.time()
Path(out_dir, "record.json").write_text(json.dumps(record))
"""


@pytest.fixture(scope="module")
def notebook(tmp_path_factory) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path_factory.mktemp("nb") / "stand_in.ipynb"
    nbformat.write(nb, path)
    return path


def make_run(notebook: Path, root: Path, name: str, *, needs: tuple[str, ...] = (), **params) -> runner.Run:
    stage, dataset, variant = name.split("/")
    out = root / name
    return runner.Run(stage, dataset, variant, notebook, out,
                      {"name": name, "out_dir": str(out), "seconds": 0.0, "fail": False, "threads": 0, **params},
                      needs=tuple(root / n for n in needs))


def record(run: runner.Run) -> dict:
    return json.loads((run.out_dir / "record.json").read_text())


def matrix(notebook: Path, root: Path, *, fail_b: bool) -> list[runner.Run]:
    return [make_run(notebook, root, "teacher/a/teacher", seconds=1.0),
            make_run(notebook, root, "teacher/b/teacher", fail=fail_b),
            make_run(notebook, root, "distill/a/s1", needs=("teacher/a/teacher",),
                     wait_for=str(root / "distill/a/s2/started.json")),
            make_run(notebook, root, "distill/a/s2", needs=("teacher/a/teacher",),
                     wait_for=str(root / "distill/a/s1/started.json")),
            make_run(notebook, root, "distill/b/s1", needs=("teacher/b/teacher",))]


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
@pytest.mark.skipif(not parallel._kernel_config(), reason="pyzmq without CurveZMQ: the kernel runs unencrypted")
def test_one_run_in_this_process_writes_done_last_and_its_kernel_start_is_quiet(notebook, tmp_path, capfd):
    run = make_run(notebook, tmp_path, "teacher/a/teacher")
    runner.execute_run(run)
    assert record(run)["name"] == "teacher/a/teacher" and rundir.is_done(run.out_dir)
    assert "without encryption" not in capfd.readouterr().err  # ipykernel's warning on an unencrypted kernel


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_two_jobs_run_in_dependency_order_split_threads_and_isolate_a_failure(notebook, tmp_path):
    lines: list[str] = []
    runs = matrix(notebook, tmp_path, fail_b=True)
    summary = runner.execute(runs, jobs=2, echo=lambda line: lines.append(f"{time.time():.1f} {line}"))

    assert sorted(summary.done) == ["distill/a/s1", "distill/a/s2", "teacher/a/teacher"], "\n".join(lines)
    assert summary.blocked == ["distill/b/s1"] and not summary.ok
    (name, executed, error), = summary.failed
    assert name == "teacher/b/teacher" and error == "RuntimeError: teacher/b/teacher was told to fail"
    assert executed == str(tmp_path / "teacher/b/teacher/stand_in.ipynb") and Path(executed).exists()
    assert not rundir.is_done(runs[1].out_dir) and not rundir.is_done(runs[4].out_dir)
    assert not (runs[4].out_dir / "started.json").exists()  # a blocked run never starts

    teacher, s1, s2 = record(runs[0]), record(runs[2]), record(runs[3])
    assert min(s1["start"], s2["start"]) >= teacher["end"]  # students wait for their teacher
    assert s1["worker_pid"] != s2["worker_pid"]  # then run at the same time (each waited for the other) in two
    #                                               worker processes
    assert {r["threads"] for r in (teacher, s1, s2)} == {max(1, parallel.usable_cores() // 2)}
    assert json.loads((runs[2].out_dir / "params.json").read_text())["parameters"]["threads"] == s1["threads"]
    assert any(" started distill/a/s1 on worker" in line for line in lines)
    assert "FAILED teacher/b/teacher: RuntimeError" in summary.render()

    # resume: the three finished runs are skipped, the failed one and the one it blocked are redone; a profile
    # run (it measures latency) is ready from the start but runs alone, after the others
    runs = [*matrix(notebook, tmp_path, fail_b=False), make_run(notebook, tmp_path, "profile/a/profile",
                                                                 needs=("teacher/a/teacher",))]
    summary = runner.execute(runs, jobs=2, echo=lines.append)
    assert sorted(summary.done) == ["distill/b/s1", "profile/a/profile", "teacher/b/teacher"]
    assert len(summary.skipped) == 3 and summary.ok
    profile = record(runs[-1])
    assert all(profile["start"] > record(r)["end"] for r in (runs[1], runs[4]))


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_a_redone_run_keeps_its_old_results_until_it_starts(notebook, tmp_path):
    teacher = make_run(notebook, tmp_path, "teacher/a/teacher")
    analysis = make_run(notebook, tmp_path, "analysis/all/analysis", needs=("teacher/a/teacher",))
    for run in (teacher, analysis):  # both finished once
        runner.execute_run(run)
    (teacher.out_dir / rundir.DONE).unlink()  # the teacher is to be redone, and this time it fails
    assert runner.outdated_runs([teacher, analysis]) == [analysis.out_dir]
    failing = runner.Run(**{**teacher.__dict__, "parameters": {**teacher.parameters, "fail": True}})
    summary = runner.execute([failing, analysis], redo={analysis.out_dir})
    assert summary.blocked == ["analysis/all/analysis"]
    assert rundir.is_done(analysis.out_dir) and record(analysis)  # never started: its old results are all there

    before = record(analysis)["end"]
    summary = runner.execute([teacher, analysis], redo={analysis.out_dir})
    assert summary.done == ["teacher/a/teacher", "analysis/all/analysis"] and record(analysis)["end"] > before


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_a_run_whose_worker_is_killed_is_reported_failed_not_done(notebook, tmp_path):
    import dask
    from distributed import LocalCluster

    runs = [make_run(notebook, tmp_path, "teacher/a/teacher", seconds=60.0),
            make_run(notebook, tmp_path, "distill/a/s1", needs=("teacher/a/teacher",)),
            make_run(notebook, tmp_path, "teacher/b/teacher", seconds=0.0)]

    def kill_worker_when_started():
        started = runs[0].out_dir / "started.json"
        while not started.exists():
            time.sleep(0.2)
        os.kill(json.loads(started.read_text())["worker_pid"], signal.SIGKILL)

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        killer = threading.Thread(target=kill_worker_when_started, daemon=True)
        killer.start()
        summary = runner.execute(runs, scheduler=cluster.scheduler_address, echo=lambda line: None)
        killer.join(timeout=5)
    (name, _, error), = summary.failed
    assert name == "teacher/a/teacher" and error.startswith("KilledWorker")
    assert summary.blocked == ["distill/a/s1"] and summary.done == ["teacher/b/teacher"]
    assert not rundir.is_done(runs[0].out_dir) and rundir.is_done(runs[2].out_dir)


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_ctrl_c_returns_the_summary_so_far_and_leaves_unfinished_runs_unmarked(notebook, tmp_path):
    runs = [make_run(notebook, tmp_path, "teacher/a/teacher", seconds=60.0),
            make_run(notebook, tmp_path, "distill/a/s1", needs=("teacher/a/teacher",))]

    def interrupt_when_started():
        while not (runs[0].out_dir / "started.json").exists():
            time.sleep(0.1)
        signal.raise_signal(signal.SIGINT)  # delivered to the main thread, where execute() waits

    # A shell's background job (`make test &`) inherits SIGINT ignored; Ctrl-C at a terminal has Python's handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_when_started, daemon=True).start()
    try:
        summary = runner.execute(runs, jobs=1, echo=lambda line: None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert summary.interrupted and not summary.ok
    assert summary.unfinished == ["teacher/a/teacher", "distill/a/s1"] and not summary.done + summary.blocked
    assert "INTERRUPTED: 2 run(s) left unfinished" in summary.render()
    assert not rundir.is_done(runs[0].out_dir)
    time.sleep(3)
    assert not _kernels_in(tmp_path)  # the kernel went with its worker


@pytest.mark.parametrize("flags, message", [
    (["--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"], "--jobs 2 is for the local executor"),
    (["--executor", "dask"], "--executor dask needs --scheduler ADDRESS"),
    (["--jobs", "0"], "--jobs must be at least 1"),
])
def test_run_flags_are_checked(flags, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    params = tmp_path / "study.yaml"
    params.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")))
    assert cli.main(["run", str(params), *flags]) == 1
    assert message in capsys.readouterr().err


STUDY = """
study: kill
output_dir: {out}
datasets: [smsa]
teacher: {{base_model: tiny-random, epochs: 1, lr: 0.001, max_length: 32, max_train_examples: 40}}
distill:
  students: [bilstm]
  variants: [mse, ce]
  epochs: 1
  max_train_examples: 40
  student_options: {{bilstm: {{emb_dim: 8, hidden: 8}}}}
"""


def _kernels_in(folder: Path) -> list[int]:
    """Processes (kernels) still working inside `folder`."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["cwd"]):
        if proc.info["cwd"] and Path(proc.info["cwd"]).is_relative_to(folder):
            pids.append(proc.pid)
    return pids


@pytest.mark.slow
def test_kdexam_run_jobs_2_killed_half_way_redoes_only_unfinished_runs(tmp_path, _tiny_master, capsys):
    params = tmp_path / "study.yaml"
    params.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")))
    study = tmp_path / "out" / "kill"
    argv = ["run", str(params), "--data-dir", str(_tiny_master), "--jobs", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "kdlib.cli", *argv], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    teacher = study / "teacher" / "smsa" / "teacher"
    deadline = time.time() + 240
    while not (rundir.is_done(teacher) and list(study.glob("distill/*/*/params.json"))):
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its Dask workers: its whole process group
    proc.wait()
    finished = {p.parent.relative_to(study).as_posix() for p in study.glob("*/*/*/done.json")}
    assert "teacher/smsa/teacher" in finished and len(finished) < 3  # killed with students half-way
    time.sleep(3)  # orphaned kernels notice their parent is gone within a second and exit
    assert not _kernels_in(study)

    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"done {3 - len(finished)}, skipped (already done) {len(finished)}, failed 0, blocked 0" in out
    redone = {line.split("] ")[1].split(":")[0] for line in out.splitlines() if ": done in" in line}
    assert redone == {p.parent.relative_to(study).as_posix() for p in study.glob("*/*/*/done.json")} - finished


def test_tracking_mlflow_logs_a_finished_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from kdlib import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = runner.Run("distill", "smsa", "bilstm-mse-s0", Path("02_distill.ipynb"), tmp_path / "run", {})
    rundir.write_json(run.out_dir / "params.json", {"parameters": {"student": "bilstm", "student_options":
                                                                   {"emb_dim": 16}, "epochs": 2}})
    rundir.write_json(run.out_dir / "metrics.json", {"f1": 0.5, "test": {"f1": 0.5}, "params": {"x": 1},
                                                     "history": [{"epoch": 1, "valid_f1": 0.25},
                                                                 {"epoch": 2, "valid_f1": 0.4}]})
    (run.out_dir / "02_distill.ipynb").write_text("{}")
    lines: list[str] = []
    tracking.mlflow_logger("study", tmp_path / "mlruns", echo=lines.append)(run)
    assert not [line for line in lines if "could not log" in line], lines

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (logged,) = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    assert logged.info.run_name == "distill/smsa/bilstm-mse-s0" and logged.data.tags["dataset"] == "smsa"
    assert logged.data.params == {"student": "bilstm", "student_options.emb_dim": "16", "epochs": "2"}
    assert logged.data.metrics["f1"] == 0.5 and logged.data.metrics["test.f1"] == 0.5
    assert [m.value for m in client.get_metric_history(logged.info.run_id, "epoch.valid_f1")] == [0.25, 0.4]
    assert {a.path for a in client.list_artifacts(logged.info.run_id)} == {"02_distill.ipynb", "metrics.json"}
    assert (tmp_path / "mlruns" / "artifacts").is_dir()


@pytest.mark.parametrize("value, ok", [("mlflow", True), ("wandb", False)])
def test_tracking_key_in_a_study_file(value, ok, tmp_path):
    from kdlib import config
    from kdlib.errors import ConfigError

    path = tmp_path / "study.yaml"
    path.write_text(f"study: t\ndatasets: [smsa]\ntracking: {value}\n")
    if ok:
        assert config.load_params(path).tracking == "mlflow"
    else:
        with pytest.raises(ConfigError, match="tracking: 'wandb' is not a tracker; known: mlflow"):
            config.load_params(path)


@pytest.mark.slow  # starts Dask
def test_a_second_runner_waits_for_a_run_another_process_holds(notebook, tmp_path):
    """Two `kdexam run` of one study: a run the other process holds is waited for, then taken as done (or run,
    if the other process stopped without finishing it); the runs that need it start after it, never beside it."""
    teacher = make_run(notebook, tmp_path, "teacher/a/teacher")
    student = make_run(notebook, tmp_path, "distill/a/s1", needs=("teacher/a/teacher",))
    other = runner.RunLock(teacher.out_dir)  # "the other process": its own open file, so its own lock
    assert other.acquire() and not runner.RunLock(teacher.out_dir).acquire()

    def other_finishes() -> None:
        time.sleep(3)
        rundir.mark_done(teacher.out_dir)
        other.release()

    threading.Thread(target=other_finishes).start()
    lines: list[str] = []
    summary = runner.execute([teacher, student], echo=lines.append)
    assert summary.ok and summary.skipped == ["teacher/a/teacher"] and summary.done == ["distill/a/s1"]
    assert not (teacher.out_dir / "record.json").exists()  # never run here
    assert any(f"running in another kdexam process (pid {os.getpid()})" in line for line in lines)
    assert any("teacher/a/teacher: done by another kdexam process" in line for line in lines)
    assert (teacher.out_dir / rundir.DONE).stat().st_mtime <= record(student)["start"]

    # the other process stops without finishing its run: the lock goes with it, and this runner runs it
    again = make_run(notebook, tmp_path, "teacher/b/teacher")
    other = runner.RunLock(again.out_dir)
    assert other.acquire()
    threading.Timer(2, other.release).start()
    summary = runner.execute([again], echo=lines.append)
    assert summary.done == ["teacher/b/teacher"] and record(again)["name"] == "teacher/b/teacher"
    assert runner.RunLock(again.out_dir).acquire()  # released when the run finished
