"""A study's published folder read back: what earlier sessions or other machines finished, whose run folders are not
on this machine (kdlib.publish writes the folder; `reports/<study>/` is the one place results are committed).

- `runs.csv`: one row per finished run (kdlib.results.COLUMNS, run_dir relative to the study folder);
- `settings.json`: when each of those runs finished and its settings (its parameters without
  kdlib.rundir.NOT_SETTINGS, paths into the outputs folder written from OUTPUTS), so the runner can tell a published
  run from one the study file has changed, and a teacher trained again from the one the published students read;
- `profiles/<dataset>.json`: each profiled dataset's profile.json (kdlib.profile), so costs survive too;
- `runs/<run_dir>/predictions.json.gz`: each student and teacher run's test predictions, so the paired CIs
  (kdlib.stats) over test examples and the teachers' per-label comparisons (kdlib.publish) survive too. A
  published row's run_dir is that folder: it is a run folder holding only them.

A long study on 2 cores outlives its machine: `kdexam run` skips a dataset whose runs and profile are all published
with the study file's settings (kdlib.runner), and the analysis and `kdexam recommend` read the published rows and
profiles beside this machine's (kdlib.results.study_frame).
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd

from kdlib import rundir
from kdlib.errors import KdExamError

RUNS = "runs.csv"
SETTINGS = "settings.json"
PROFILES = "profiles"
OUTPUTS = "{outputs}"  # the outputs folder, in published settings
RUN_FILES = "runs"  # runs/<run_dir>/: what a published run keeps of its folder (its predictions)
PACKED = ".gz"  # a run folder's file, gzipped: predictions.json.gz


def runs(folder: str | os.PathLike | None) -> pd.DataFrame | None:
    """The published runs.csv of `folder` (None when there is none), run_dir as written (relative to the study)."""
    path = Path(folder) / RUNS if folder else None
    if path is None or not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError) as e:
        raise KdExamError(f"{path}: unreadable ({e}); restore it from git (`git checkout -- {path}`) or delete it to "
                          "use this machine's runs only.") from None
    if "run_dir" not in table.columns:
        raise KdExamError(f"{path}: has no run_dir column, so it is not a kd-exam runs.csv; restore or delete it.")
    return table


def absent_rows(frame: pd.DataFrame, study_dir: str | os.PathLike, folder: str | os.PathLike | None) -> pd.DataFrame:
    """The published rows of runs that `frame` (this machine's runs of the study) does not hold, their run_dir made
    the published folder's runs/<relative> (its predictions, if published; else paired statistics fall back to the
    seeds). A run found here
    replaces its published row, and a dataset whose teacher was trained again here keeps none of its published rows:
    they were distilled from another run of the teacher."""
    table = runs(folder)
    if table is None or table.empty:
        return pd.DataFrame(columns=frame.columns)
    study_dir = Path(study_dir)
    here = {relative(d, study_dir) for d in frame["run_dir"]}
    kept = table[~table["run_dir"].isin(here) & ~table["dataset"].isin(retrained(study_dir, folder))]
    return kept.assign(run_dir=[str(run_folder(folder, d)) for d in kept["run_dir"]]).reindex(columns=frame.columns)


def run_folder(folder: str | os.PathLike, relative_dir: str) -> Path:
    """Where the published folder keeps what it keeps of a run (see the module docstring)."""
    return Path(folder) / RUN_FILES / relative_dir


def retrained(study_dir: str | os.PathLike, folder: str | os.PathLike | None) -> set[str]:
    """The datasets whose teacher run here is not the published one (it finished at another time, or the folder does
    not say when its teacher finished): their published runs and profile, distilled from or measured on another
    run of the teacher, no longer count."""
    teachers = Path(study_dir) / "teacher"
    if not teachers.is_dir():
        return set()
    recorded = settings(folder)
    found = set()
    for d in teachers.iterdir():
        run = rundir.teacher_dir(study_dir, d.name)
        if rundir.is_done(run):
            mine = (rundir.read_or_skip(run / rundir.DONE) or {}).get("finished")
            theirs = recorded.get(relative(run, study_dir), {}).get("finished")
            if mine is None or mine != theirs:
                found.add(d.name)
    return found


def relative(run_dir: str | os.PathLike, study_dir: str | os.PathLike, folder: str | os.PathLike | None = None) -> str:
    """A run folder relative to its study, as runs.csv and settings.json name it; a published row's (under
    `folder`/runs, see absent_rows) relative to that."""
    run_dir = Path(run_dir).resolve()
    if folder is not None and run_dir.is_relative_to(base := (Path(folder) / RUN_FILES).resolve()):
        return run_dir.relative_to(base).as_posix()
    return Path(os.path.relpath(run_dir, Path(study_dir).resolve())).as_posix()


def write_packed(path: str | os.PathLike, obj: dict) -> Path:
    """JSON, compact and gzipped with no time stamp: the same content gives the same bytes (git sees no change)."""
    with rundir.atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(), mtime=0))
    return Path(path)


def read_packed(path: str | os.PathLike) -> dict | None:
    """A gzipped JSON object (write_packed); None, with a warning naming it, when it is corrupt."""
    try:
        value = json.loads(gzip.decompress(Path(path).read_bytes()))
    except (OSError, EOFError, ValueError) as e:
        rundir.log.warning("%s: unreadable (%s); restore it from git. Left out until then.", path, e)
        return None
    return value if isinstance(value, dict) else None


def settings(folder: str | os.PathLike | None) -> dict[str, dict]:
    """Published runs' records (relative run folder -> {"finished", "parameters"}, see `record`); {} when the folder
    has none."""
    path = Path(folder) / SETTINGS if folder else None
    if path is None or not path.is_file():
        return {}
    table = _read(path)
    if not all(isinstance(v, dict) and isinstance(v.get("parameters"), dict | None) for v in table.values()):
        raise KdExamError(f"{path}: not a kd-exam settings file (run folder -> finished, parameters); restore it "
                          "from git or delete it.")
    return table


def record(run_dir: str | os.PathLike) -> dict | None:
    """A finished run as settings.json holds it: when it finished (done.json) and its settings (params.json without
    NOT_SETTINGS, the outputs folder written as OUTPUTS; None for a run made outside the runner, which has none);
    None for a run that is not finished."""
    if not rundir.is_done(run_dir):
        return None
    finished = (rundir.read_or_skip(Path(run_dir) / rundir.DONE) or {}).get("finished")
    path = Path(run_dir) / rundir.PARAMS
    recorded = rundir.read_or_skip(path) if path.is_file() else None
    parameters = (recorded or {}).get("parameters")
    if not isinstance(parameters, dict):
        return {"finished": finished, "parameters": None}
    root = str(rundir.outputs_root(parameters.get("out_dir") or run_dir))

    def portable(value):
        return OUTPUTS + value[len(root):] if isinstance(value, str) and value.startswith(root) else value

    return {"finished": finished, "parameters": {k: portable(v) for k, v in sorted(parameters.items())
                                                 if k not in rundir.NOT_SETTINGS}}


def profiles(folder: str | os.PathLike | None) -> dict[str, tuple[Path, dict]]:
    """Published profiles per dataset: dataset -> (its file, the profile.json it holds)."""
    folder = Path(folder) / PROFILES if folder else None
    if folder is None or not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.glob("*.json")):
        prof = _read(path)
        if "models" not in prof or "latency" not in prof:
            raise KdExamError(f"{path}: not a kd-exam profile (no models/latency); restore it from git or delete it.")
        found[str(prof.get("dataset", path.stem))] = (path, prof)
    return found


def _read(path: Path) -> dict:
    """A published JSON file; a corrupt one is an error that says to restore it (it is committed), not to redo."""
    try:
        return rundir.read_json(path)
    except KdExamError as e:
        raise KdExamError(f"{str(e).split('; ')[0]}; restore it from git (`git checkout -- {path}`) or delete "
                          "it.") from None


def default_folder(study_dir: str | os.PathLike) -> Path | None:
    """A published folder given as the study itself (it holds runs.csv): `kdexam recommend --study reports/S`."""
    return Path(study_dir) if (Path(study_dir) / RUNS).is_file() else None
