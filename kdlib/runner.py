"""A study file -> a list of notebook runs -> papermill, in dependency order, resumable.

Each run is one papermill execution of a numbered notebook into its own folder,
`<output_dir>/<study>/<stage>/<dataset>/<variant>/`, holding the executed notebook, params.json, metrics.json, the
model, and `done.json` written last. Folders with done.json are skipped (unless forced); folders without it are
rerun, and training inside them resumes from its last epoch checkpoint.
"""
from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from kdlib import rundir
from kdlib.config import Study, Variant
from kdlib.errors import ConfigError
from kdlib.exam import DistillParams, TeacherParams

log = logging.getLogger(__name__)

NOTEBOOKS = {"teacher": "01_teacher.ipynb", "distill": "02_distill.ipynb"}
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    stage: str
    dataset: str
    variant: str
    notebook: Path
    out_dir: Path
    parameters: dict[str, Any]
    needs: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.dataset}/{self.variant}"


def recipe_defaults(cls) -> dict[str, Any]:
    """Every defaulted field of a recipe's params: a run never inherits a notebook's tiny demo defaults."""
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def variant_name(v: Variant) -> str:
    if v.loss == "ce":
        return "no-kd"
    name = v.loss if v.loss == "mse" else f"{v.loss}-T{v.temperature:g}"
    return name if v.alpha == 0 else f"{name}-a{v.alpha:g}"


def plan(study: Study, *, root: Path = REPO_ROOT, notebooks_dir: Path | None = None,
         data_dir: str | None = None) -> list[Run]:
    """Every run of a study, teachers first; parameters are absolute paths and literals only."""
    from kdlib.data import resolve_data_dir

    notebooks_dir = notebooks_dir or root / "notebooks"
    study_dir = study.study_dir(root)
    data = str(resolve_data_dir(data_dir or study.data_dir))
    models_dir = str(study_dir.parent / "models")
    runs: list[Run] = []
    teacher_dirs = {d: study_dir / "teacher" / d / "teacher" for d in study.datasets}
    for dataset, teacher_dir in teacher_dirs.items():  # teachers first: every student needs one
        runs.append(Run("teacher", dataset, "teacher", notebooks_dir / NOTEBOOKS["teacher"], teacher_dir,
                        {**recipe_defaults(TeacherParams), "models_dir": models_dir, **study.teacher_for(dataset),
                         "dataset": dataset,
                         "out_dir": str(teacher_dir), "data_dir": data, "seed": study.seeds[0],
                         "threads": study.threads}))
    for student in study.students:  # in the file's order: list cheap students first to see results early
        for dataset, teacher_dir in teacher_dirs.items():
            for seed in study.seeds:
                dirs = {v: study_dir / "distill" / dataset / f"{student}-{variant_name(v)}-s{seed}"
                        for v in study.variants}
                baseline = next((d for v, d in dirs.items() if v.loss == "ce"), None)
                for v, out in sorted(dirs.items(), key=lambda kv: kv[0].loss != "ce"):  # baselines first
                    runs.append(Run("distill", dataset, out.name, notebooks_dir / NOTEBOOKS["distill"], out, {
                        **recipe_defaults(DistillParams), **study.distill_for(dataset, student),
                        "dataset": dataset, "student": student,
                        "teacher_dir": str(teacher_dir), "out_dir": str(out), "data_dir": data, "loss": v.loss,
                        "alpha": float(v.alpha), "temperature": float(v.temperature), "seed": seed,
                        "threads": study.threads, "student_options": study.student_options.get(student, {}),
                        "baseline_dir": str(baseline) if baseline and v.loss != "ce" else "",
                        "train_teacher_if_missing": False}, needs=(teacher_dir,)))
    return runs


def check_parameters(runs: list[Run]) -> None:
    """papermill only warns on unknown parameters; we refuse before running anything."""
    import papermill

    known: dict[Path, set[str]] = {}
    for run in runs:
        if run.notebook not in known:
            if not run.notebook.exists():
                raise ConfigError(f"notebook {run.notebook} not found.")
            known[run.notebook] = set(papermill.inspect_notebook(str(run.notebook)))
        unknown = sorted(set(run.parameters) - known[run.notebook])
        if unknown:
            raise ConfigError(f"{run.name}: parameter(s) {', '.join(unknown)} are not in the parameters cell of "
                              f"{run.notebook.name} (it has: {', '.join(sorted(known[run.notebook]))}).")


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # run, executed notebook, error
    blocked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked

    def render(self) -> str:
        lines = [f"done {len(self.done)}, skipped (already done) {len(self.skipped)}, failed {len(self.failed)}, "
                 f"blocked {len(self.blocked)}"]
        lines += [f"  FAILED {name}: {error}\n         see {nb}" for name, nb, error in self.failed]
        lines += [f"  BLOCKED {name}: a run it needs did not finish" for name in self.blocked]
        return "\n".join(lines)


def execute_run(run: Run, *, kernel: str = "python3") -> None:
    """One papermill execution; done.json is written only after the notebook finished without error."""
    import papermill

    run.out_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_json(run.out_dir / "params.json", {"run": run.name, "notebook": run.notebook.name,
                                                    "parameters": run.parameters})
    started = time.perf_counter()
    papermill.execute_notebook(str(run.notebook), str(run.out_dir / run.notebook.name), parameters=run.parameters,
                               kernel_name=kernel, cwd=str(run.out_dir), progress_bar=False, log_output=False)
    rundir.mark_done(run.out_dir, run=run.name, seconds=round(time.perf_counter() - started, 1))


def execute(runs: list[Run], *, force: bool = False, kernel: str = "python3", echo=print) -> Summary:
    """Run what is not done yet, in order; a failure blocks only the runs that need it."""
    from papermill.exceptions import PapermillExecutionError

    summary = Summary()
    unfinished: set[Path] = set()
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {run.name}"
        if force and run.out_dir.exists():
            shutil.rmtree(run.out_dir)
        if rundir.is_done(run.out_dir):
            summary.skipped.append(run.name)
            echo(f"{tag}: already done, skipped")
            continue
        if any(n in unfinished or not rundir.is_done(n) for n in run.needs):
            summary.blocked.append(run.name)
            unfinished.add(run.out_dir)
            echo(f"{tag}: blocked")
            continue
        echo(f"{tag}: running {run.notebook.name} -> {run.out_dir}")
        started = time.perf_counter()
        try:
            execute_run(run, kernel=kernel)
        except PapermillExecutionError as e:
            summary.failed.append((run.name, str(run.out_dir / run.notebook.name), f"{e.ename}: {e.evalue}"))
            unfinished.add(run.out_dir)
            echo(f"{tag}: FAILED ({e.ename}: {e.evalue})")
            continue
        summary.done.append(run.name)
        echo(f"{tag}: done in {time.perf_counter() - started:.0f}s")
    return summary


def run_study(path: str, *, force: bool = False, dry_run: bool = False, kernel: str = "python3",
              data_dir: str | None = None, root: Path = REPO_ROOT, echo=print) -> Summary:
    from kdlib.config import load_params

    study = load_params(path)
    runs = plan(study, root=root, data_dir=data_dir)
    check_parameters(runs)
    echo(f"study {study.name}: {len(runs)} runs -> {study.study_dir(root)}")
    if dry_run:
        for run in runs:
            state = "done" if rundir.is_done(run.out_dir) else "to run"
            echo(f"  {run.name} ({state})")
        return Summary(skipped=[r.name for r in runs])
    summary = execute(runs, force=force, kernel=kernel, echo=echo)
    echo(summary.render())
    sys.stdout.flush()
    return summary
