"""A study file -> a list of notebook runs -> papermill, in dependency order, resumable.

Each run is one papermill execution of a numbered notebook into its own folder,
`<output_dir>/<study>/<stage>/<dataset>/<variant>/`, holding the executed notebook, params.json, metrics.json, the
model, and `done.json` written last. Folders with done.json are skipped (unless forced); folders without it are
rerun, and training inside them resumes from its last epoch checkpoint.

Runs execute as Dask tasks (kdlib.parallel): `jobs` at once on this machine, or on an existing Dask cluster. A run
is submitted once every run it needs is done; one that fails blocks only the runs that need it.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kdlib import parallel, params, published, rundir
from kdlib.config import AblationVariant, Study, Variant
from kdlib.errors import ConfigError, KdExamError
from kdlib.params import (
    AblationParams,
    AnalysisParams,
    DistillParams,
    ProfileParams,
    TeacherParams,
    defaults,
    get_student,
)

log = logging.getLogger(__name__)

NOTEBOOKS = {"teacher": "01_teacher.ipynb", "distill": "02_distill.ipynb"}
NOTEBOOKS.update({"ablation-loss": "03_ablation_loss.ipynb", "ablation-embedding": "04_ablation_embedding.ipynb",
                  "ablation-augmentation": "05_ablation_augmentation.ipynb"})
NOTEBOOKS.update({"profile": "06_profile.ipynb", "analysis": "07_analysis.ipynb"})
REPO_ROOT = Path(__file__).resolve().parents[1]


def notebooks_folder() -> Path:
    """The numbered notebooks: inside the installed package (a wheel ships them as kdlib/notebooks), else the
    checkout's notebooks/ (an editable install)."""
    packaged = Path(__file__).resolve().parent / "notebooks"
    return packaged if (packaged / NOTEBOOKS["teacher"]).is_file() else REPO_ROOT / "notebooks"
EXCLUSIVE_STAGES = {"profile"}  # they measure latency and memory: with --jobs N they run alone, one at a time


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


def variant_name(v: Variant) -> str:
    return params.variant_name(v.loss, v.temperature, v.alpha)


def plan(study: Study, *, root: Path | None = None, notebooks_dir: Path | None = None,
         data_dir: str | None = None) -> list[Run]:
    """Every run of a study, teachers first; parameters are absolute paths and literals only. `root` (default: the
    working directory) holds the outputs folder unless the study's output_dir is absolute."""
    from kdlib.data import resolve_data_dir

    root = Path.cwd() if root is None else root
    notebooks_dir = notebooks_dir or notebooks_folder()
    study_dir = study.study_dir(root)
    # a study of your own datasets only may have no IndoNLU folder at all (its Tang rule then has no POS lexicon)
    indonlu = any(d not in study.own_datasets for d in study.datasets)
    data = str(resolve_data_dir(data_dir or study.data_dir, must_exist=indonlu))
    models_dir = str(study_dir.parent / "models")
    runs: list[Run] = []
    caches: dict[str, dict[str, str]] = {d: {} for d in study.datasets}  # cache_dir per dataset, for borrowers
    if study.teachers_from:  # another study's finished teachers: nothing to train here
        teacher_dirs = borrowed_teachers(study, root)
        caches = {d: {"cache_dir": str(rundir.teacher_cache_dir(study_dir, d))} for d in study.datasets}
    else:
        teacher_dirs = {d: rundir.teacher_dir(study_dir, d) for d in study.datasets}
        for dataset, teacher_dir in teacher_dirs.items():  # teachers first: every student needs one
            runs.append(Run("teacher", dataset, "teacher", notebooks_dir / NOTEBOOKS["teacher"], teacher_dir, {
                **defaults(TeacherParams), "models_dir": models_dir, **study.teacher_for(dataset),
                "dataset": study.dataset_param(dataset), "out_dir": str(teacher_dir), "data_dir": data,
                "seed": study.seeds[0], "threads": study.threads, "device": study.device}))
    distill: list[tuple[tuple[int, int, int], Run]] = []
    # Run order: seed by seed, then the file's order of students (list cheap ones first) and datasets, so a long
    # study has every student's first seed (the KD-vs-no-KD picture) before any second seed.
    for s_rank, student in enumerate(study.students):
        for d_rank, (dataset, teacher_dir) in enumerate(teacher_dirs.items()):
            if student not in study.students_for(dataset):
                continue
            for seed_rank, seed in enumerate(study.seeds_for(student)):
                dirs = {v: rundir.student_dir(study_dir, dataset, student, variant_name(v), seed)
                        for v in study.variants_for(student)}
                baseline = next((d for v, d in dirs.items() if v.loss == "ce"), None)
                settings = study.distill_for(dataset, student)
                _check_transfer(settings, dataset, f"{study.path}: {dataset} x {student}")
                for v, out in sorted(dirs.items(), key=lambda kv: kv[0].loss != "ce"):  # baselines first
                    parameters = {
                        **defaults(DistillParams), "embedding_dir": str(rundir.embedding_cache_dir(study_dir)),
                        **settings, **(NO_TEACHER_DATA if v.loss == "ce" else {}),
                        "dataset": study.dataset_param(dataset), "student": student,
                        "teacher_dir": str(teacher_dir), "out_dir": str(out), "data_dir": data, "loss": v.loss,
                        "alpha": float(v.alpha), "temperature": float(v.temperature), "seed": seed,
                        "threads": study.threads, "device": study.device,
                        "student_options": study.student_options.get(student, {}),
                        "baseline_dir": str(baseline) if baseline and v.loss != "ce" else "",
                        "train_teacher_if_missing": False, **caches[dataset]}
                    run = Run("distill", dataset, out.name, notebooks_dir / NOTEBOOKS["distill"], out, parameters,
                              needs=(teacher_dir,))
                    distill.append(((seed_rank, s_rank, d_rank), run))
    runs += [run for _, run in sorted(distill, key=lambda item: item[0])]  # a stable sort: baselines stay first
    runs += plan_ablations(study, study_dir, teacher_dirs, data, caches, notebooks_dir)
    runs = _teacher_logit_sets(runs, study)
    runs += profile_runs(study, runs, study_dir, notebooks_dir, data)
    check_folders(study, runs)
    return runs


def check_folders(study: Study, runs: list[Run]) -> None:
    """Every run folder name is short and plain (rundir.FOLDER_NAME), and no two runs share a folder: two entries
    of a list that plan the same run (mse with and without a temperature, which mse ignores) are refused."""
    seen: dict[Path, Run] = {}
    for run in runs:
        if not rundir.FOLDER_NAME.fullmatch(run.variant):
            raise ConfigError(f"{study.path}: run {run.name}: its folder name {run.variant!r} ({len(run.variant)} "
                              f"characters) must be {rundir.FOLDER_RULE}; rename the file or folder it is named after.")
        other = seen.setdefault(run.out_dir, run)
        if other is not run:
            differ = [f"{k} {other.parameters.get(k)!r} vs {run.parameters.get(k)!r}" for k in
                      sorted(set(run.parameters) | set(other.parameters), key=str)
                      if other.parameters.get(k) != run.parameters.get(k)]
            differ_text = "; ".join(differ) or "the same settings"
            raise ConfigError(f"{study.path}: two entries plan the same run {run.name} ({differ_text}); list each "
                              "dataset, seed, student and variant once.")


def borrowed_teachers(study: Study, root: Path) -> dict[str, Path]:
    """The teacher folders, per dataset, of the study named in `teachers_from` (see missing_teachers); a name that
    names no study folder is an error, dry run or not."""
    source = study.teachers_dir(root)
    if source.resolve() == study.study_dir(root).resolve():
        raise ConfigError(f"{study.path}: teachers_from {study.teachers_from!r} is this study's own folder; drop it "
                          "to train its teachers.")
    if not (source / "teacher").is_dir():
        known = sorted(p.parent.name for p in source.parent.glob("*/teacher") if p.is_dir())
        raise ConfigError(f"{study.path}: teachers_from {study.teachers_from!r}: no study with teachers at {source} "
                          f"(studies with teachers there: {', '.join(known) or 'none'}); run that study first, or "
                          "fix the name.")
    return {d: rundir.teacher_dir(source, d) for d in study.datasets}


def missing_teachers(study: Study, root: Path) -> str:
    """'' when every borrowed teacher is finished, else what is missing and how to get it."""
    if not study.teachers_from:
        return ""
    missing = [d for d, t in borrowed_teachers(study, root).items() if not rundir.is_done(t)]
    if not missing:
        return ""
    return (f"{study.path}: teachers_from {study.teachers_from!r}: no finished teacher for {', '.join(missing)} in "
            f"{study.teachers_dir(root) / 'teacher'}. Run that study first (with these datasets in it), or drop "
            "teachers_from to train teachers in this study.")


# A no-KD baseline learns from the labelled train split only: a transfer set's extra examples carry no labels but
# the teacher's. It keeps the recipe's embeddings and word dropout, so KD and no-KD differ only by the teacher.
NO_TEACHER_DATA = {"transfer": "train", "transfer_size": 1.0}


def _check_transfer(settings: dict[str, Any], dataset: str, where: str) -> None:
    transfer, size = settings.get("transfer", "train"), settings.get("transfer_size", 1.0)
    if transfer == "train" and size != 1:
        raise ConfigError(f"{where}: transfer_size {size!r} with transfer: train; the train split is itself (1), "
                          "name a transfer set (tang, indonlu, ...) to grow it.")
    if dataset == "facqa" and transfer not in ("train", "tang"):
        raise ConfigError(f"{where}: FacQA needs a question per passage; an unlabelled pool ({transfer}) has none. "
                          "Use transfer: tang for facqa (per_dataset.facqa.distill).")


def _teacher_logit_sets(runs: list[Run], study: Study) -> list[Run]:
    """Each teacher caches train logits on the largest capped train set its KD students read (data.subset_indices
    nests them), not on the whole split, unless the study sets teacher logit_train_examples itself."""
    wanted: dict[str, list[int | None]] = {}
    for r in runs:
        if r.stage != "teacher" and r.parameters.get("loss", "ce") != "ce":
            wanted.setdefault(r.dataset, []).append(r.parameters.get("max_train_examples"))
    out = []
    for r in runs:
        caps = wanted.get(r.dataset)
        if r.stage == "teacher" and caps and None not in caps and "logit_train_examples" not in study.teacher_for(
                r.dataset):
            r = replace(r, parameters={**r.parameters, "logit_train_examples": max(caps)})
        out.append(r)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Ablation stages (notebooks 03-05): one run per dataset x student x variant x seed, like distill runs. The last
# run of each (stage, dataset, student) grid needs all the others, so its notebook's tables and winners see the
# whole grid, whatever order or parallelism executes the runs.

def ablation_variant_name(kind: str, v: AblationVariant, *, bert: bool = False) -> str:
    """Folder-safe names: 'kl-T2-a0.5', 'word2vec-frozen', 'vec-cc.id.300', 'init-random', 'tang-x5'."""
    from kdlib.augment import transfer_name
    from kdlib.embeddings import source_name

    if kind == "loss":
        return variant_name(Variant(v.settings["loss"], v.settings["alpha"], v.settings["temperature"]))
    if bert:
        return "init-" + Path(v.student_options["init"]).name
    if kind == "embedding":
        return source_name(v.settings["embedding"]) + ("-frozen" if v.settings.get("freeze_embeddings") else "")
    return transfer_name(v.settings["transfer"], v.settings["transfer_size"])


def plan_ablations(study: Study, study_dir: Path, teacher_dirs: dict[str, Path], data: str,
                   caches: dict[str, dict[str, str]], notebooks_dir: Path) -> list[Run]:
    """The runs of the study's ablation section, after its other runs; none without an ablation: section. In-domain
    vectors are kept in the study's own folder (they are pickles: no study loads another's)."""
    if study.ablation is None:
        return []
    runs: list[Run] = []
    for stage in study.ablation.stages:
        name = f"ablation-{stage.kind}"
        for student in study.ablation.students:
            bert = stage.kind == "embedding" and get_student(student).kind != "word"
            variants = stage.bert_variants if bert else stage.variants
            for dataset, teacher_dir in teacher_dirs.items():
                grid = []
                for seed in study.ablation.seeds:  # seeds outside: a whole first seed of the grid comes first
                    for v in variants:
                        label = ablation_variant_name(stage.kind, v, bert=bert)
                        out = rundir.run_dir(study_dir, name, dataset, f"{student}-{label}-s{seed}")
                        grid.append(Run(name, dataset, out.name, notebooks_dir / NOTEBOOKS[name], out, {
                            **defaults(AblationParams), "embedding_dir": str(rundir.embedding_cache_dir(study_dir)),
                            **caches[dataset], **study.distill_for(dataset, student), **stage.settings, **v.settings,
                            "dataset": study.dataset_param(dataset), "student": student,
                            "teacher_dir": str(teacher_dir), "out_dir": str(out), "data_dir": data, "seed": seed,
                            "threads": study.threads, "device": study.device,
                            "student_options": {**study.student_options.get(student, {}), **v.student_options},
                            "stage": name, "variant": label, "train_teacher_if_missing": False}, needs=(teacher_dir,)))
                last = grid[-1]
                grid[-1] = replace(last, needs=(teacher_dir, *(r.out_dir for r in grid[:-1])))
                runs += grid
    return runs


def profile_runs(study: Study, runs: list[Run], study_dir: Path, notebooks_dir: Path, data: str) -> list[Run]:
    """With a profile: section: per dataset, a profile run once its teacher and students are done; then one analysis
    of the whole study once every profile is done (it writes report.html from its own executed notebook)."""
    if study.profile is None:
        return []
    profiles = []
    for dataset in study.datasets:
        out = rundir.profile_dir(study_dir, dataset)
        needs = tuple(r.out_dir for r in runs if r.dataset == dataset and r.stage in ("teacher", "distill"))
        profiles.append(Run("profile", dataset, "profile", notebooks_dir / NOTEBOOKS["profile"], out, {
            **defaults(ProfileParams), **study.profile, "study_dir": str(study_dir),
            "dataset": study.dataset_param(dataset),
            "out_dir": str(out), "data_dir": data, "prepare_if_missing": False}, needs=needs))
    out = rundir.analysis_dir(study_dir)
    notebook = notebooks_dir / NOTEBOOKS["analysis"]
    analysis = Run("analysis", rundir.ALL, "analysis", notebook, out, {
        **defaults(AnalysisParams), "study_dir": str(study_dir), "out_dir": str(out),
        "executed_notebook": str(out / notebook.name), "published_dir": study.published,
        "prepare_if_missing": False}, needs=tuple(r.out_dir for r in profiles))
    return [*profiles, analysis]


NOT_SETTINGS = rundir.NOT_SETTINGS  # where a run lives or how it runs, not what it computes


def _recipe_default(stage: str, key: str) -> Any:
    """The default a run made before `key` existed had (a new parameter defaults to the old behaviour)."""
    cls = params.STAGE_PARAMS.get(stage)
    return defaults(cls).get(key, MISSING) if cls else MISSING


def _outputs_root_str(out_dir: str | Path) -> str:
    return str(rundir.outputs_root(out_dir))


def changed_settings(run: Run) -> list[str]:
    """For a finished run: how its recorded parameters differ from the planned ones, as 'key: old -> new'.

    A run made outside the runner (a notebook run by hand into the study's folder) has no params.json: it is taken
    as it is. One whose params.json cannot be read is reported, since its settings cannot be checked."""
    path = run.out_dir / rundir.PARAMS
    if not path.exists():
        return []
    try:
        recorded = rundir.read_json(path)["parameters"]
        old_root = _outputs_root_str(recorded.get("out_dir") or run.out_dir)
    except (OSError, KdExamError, KeyError, TypeError, AttributeError) as e:
        reason = "truncated or corrupt" if isinstance(e, KdExamError) else type(e).__name__
        return [f"its {path.name} is unreadable ({reason}), so its settings are unknown; delete {run.out_dir} to "
                "redo it"]
    return settings_diff(run, recorded, old_root)


def settings_diff(run: Run, recorded: dict, old_root: str) -> list[str]:
    """How `recorded` (a run's parameters, its paths under the outputs folder `old_root`) differs from the planned
    ones, as 'key: old -> new'. Paths into the outputs folder (teacher_dir) are compared relative to it, so a moved
    outputs folder does not make a run stale."""
    new_root = _outputs_root_str(run.out_dir)

    def portable(value: Any) -> Any:
        return new_root + value[len(old_root):] if isinstance(value, str) and value.startswith(old_root) else value

    diffs = []
    for key in sorted(set(run.parameters) - NOT_SETTINGS):
        old = portable(recorded[key]) if key in recorded else _recipe_default(run.stage, key)
        if old is not MISSING and old != run.parameters[key]:  # MISSING: a key this kd-exam no longer knows
            diffs.append(f"{key}: {'(default) ' if key not in recorded else ''}{old!r} -> {run.parameters[key]!r}")
    return diffs


def _finished_at(run_dir: Path) -> float | None:
    """When done.json says the run finished (copied folders keep it; file times do not)."""
    from datetime import datetime

    try:
        return datetime.strptime(rundir.read_json(run_dir / rundir.DONE)["finished"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except (OSError, KdExamError, KeyError, TypeError, ValueError):
        return None


def stale_runs(runs: list[Run]) -> dict[Path, list[str]]:
    """Finished runs whose parameters the study file has since changed, every finished run that read one of them
    (a student of a changed teacher read that teacher's logits), and every finished run that read a run finished
    after it (a teacher redone since, here or in the study its teachers come from); in plan order."""
    names = {r.out_dir: r.name for r in runs}
    stale: dict[Path, list[str]] = {}
    for run in runs:  # plan order: a run's needs come before it
        if not rundir.is_done(run.out_dir):
            continue
        finished = _finished_at(run.out_dir)
        upstream = [f"it read {names.get(n, n)}, which changed" for n in run.needs if n in stale]
        upstream += [f"it read {names.get(n, n)}, which was redone after it" for n in run.needs if n not in stale
                     and finished is not None and rundir.is_done(n) and (_finished_at(n) or 0) > finished]
        diff = changed_settings(run) or upstream
        if diff:
            stale[run.out_dir] = diff
    return stale


def drop_published(study: Study, runs: list[Run], root: Path,
                   planned: list[Run] | None = None) -> tuple[list[Run], list[str]]:
    """With a `published:` folder (kdlib.published): the runs of every dataset whose runs (teacher, students,
    ablations, and its profile when the study has a profile: section) are all published with the planned settings
    are dropped where they are not on this machine, and the analysis stops waiting for them (it reads them from the
    folder). A dataset published in part, or whose teacher was trained again here, is run here in full: its
    students need its teacher, its profile every model. `planned`: the study's whole plan when `runs` is a selection
    (--stage, -d): a dataset is complete by all its runs, so `--stage teacher` on a dataset published in part runs
    its teacher, as the full run would. Returns the runs left and the names of those dropped."""
    if not study.published:
        return runs, []
    study_dir = study.study_dir(root)
    table = published.runs(study.published)
    listed = set(table["run_dir"]) if table is not None else set()
    recorded, profiled = published.settings(study.published), published.profiles(study.published)
    retrained = published.retrained(study_dir, study.published)

    def is_published(run: Run) -> bool:
        key = published.relative(run.out_dir, study_dir)
        settings = recorded.get(key, {}).get("parameters")
        return ((run.stage == "profile" and run.dataset in profiled or key in listed) and settings is not None
                and not settings_diff(run, settings, published.OUTPUTS))

    per_dataset: dict[str, list[Run]] = {}
    for run in planned or runs:
        if run.stage != "analysis":
            per_dataset.setdefault(run.dataset, []).append(run)
    complete = {d for d, mine in per_dataset.items() if d not in retrained and all(map(is_published, mine))}
    dropped = [r for r in runs if r.dataset in complete and r.stage != "analysis" and not rundir.is_done(r.out_dir)]
    gone = {r.out_dir for r in dropped}
    kept = [replace(r, needs=tuple(n for n in r.needs if n not in gone)) for r in runs if r.out_dir not in gone]
    return kept, [r.name for r in dropped]


def interim_analysis(runs: list[Run]) -> list[Run]:
    """`kdexam run --interim`: the study's analysis reads what is finished now (here and published) instead of
    waiting for the profiles still to do; a later run redoes it after them (outdated_runs), so an interim report
    never outlives the runs it left out. Every other run is unchanged."""
    if not any(r.stage == "analysis" for r in runs):
        raise ConfigError("--interim runs the study's analysis now, but no analysis run is selected: the study needs "
                          "a profile: section, and --stage (if given) must include analysis.")
    return [replace(r, needs=tuple(n for n in r.needs if rundir.is_done(n))) if r.stage == "analysis" else r
            for r in runs]


def outdated_runs(runs: list[Run], redo: Collection[Path] = ()) -> list[Path]:
    """Finished runs that need a run which will run now (new, unfinished or redone): the analysis of a study that
    gained a dataset, a profile whose dataset gained a student. They are redone after it; their old folder is
    replaced only when that run has finished, so nothing is lost if it fails."""
    pending = {r.out_dir for r in runs if r.out_dir in redo or not rundir.is_done(r.out_dir)}
    outdated = []
    for run in runs:  # plan order: a run's needs come before it
        if run.out_dir not in pending and any(n in pending for n in run.needs):
            pending.add(run.out_dir)
            outdated.append(run.out_dir)
    return outdated


def restarts(runs: list[Run]) -> list[Path]:
    """Unfinished runs begun with other settings than the planned ones: resuming their checkpoint would mix the
    two (the training loop refuses to), and an unfinished run is no result to keep, so they start afresh."""
    return [r.out_dir for r in runs if not rundir.is_done(r.out_dir) and (r.out_dir / rundir.PARAMS).exists()
            and changed_settings(r)]


def refuse_stale(runs: list[Run], stale: dict[Path, list[str]]) -> None:
    names = {r.out_dir: r.name for r in runs}
    shown = [f"{names[p]} ({'; '.join(d[:3])})" for p, d in list(stale.items())[:5]]
    more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
    raise ConfigError(f"{len(stale)} finished run(s) were made with other settings than the study file now has: "
                      f"{', '.join(shown)}{more}. Rerun with --rerun-changed to redo them (their folders are "
                      "replaced), restore the old settings, or give the study a new name to keep both.")


def check_parameters(runs: list[Run]) -> None:
    """Every parameter a run passes is a field of its notebook's parameters class (kdlib.params.STAGE_PARAMS):
    papermill would only warn, and the notebook would refuse it late, so we refuse before running anything."""
    for run in runs:
        if not run.notebook.exists():
            raise ConfigError(f"notebook {run.notebook} not found.")
        cls = params.STAGE_PARAMS[run.stage]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(run.parameters) - known)
        if unknown:
            raise ConfigError(f"{run.name}: parameter(s) {', '.join(unknown)} are not parameters of "
                              f"{run.notebook.name} ({cls.__name__} has: {', '.join(sorted(known))}).")


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # run, executed notebook, error
    blocked: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # still queued or running when interrupted
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked and not self.unfinished

    def render(self) -> str:
        lines = [f"done {len(self.done)}, skipped (already done) {len(self.skipped)}, failed {len(self.failed)}, "
                 f"blocked {len(self.blocked)}" + (f", unfinished {len(self.unfinished)}" if self.interrupted else "")
                 + f" in {self.seconds:.0f}s"]
        lines += [f"  FAILED {name}: {error}\n         see {nb}" for name, nb, error in self.failed]
        lines += [f"  BLOCKED {name}: a run it needs did not finish" for name in self.blocked]
        if self.interrupted:
            lines.append(f"  INTERRUPTED: {len(self.unfinished)} run(s) left unfinished (no done.json); rerun the "
                         "same command to resume them")
        return "\n".join(lines)


def execute_run(run: Run, *, kernel: str = parallel.THIS_INTERPRETER) -> None:
    """One papermill execution in this process; done.json is written only after the notebook finished."""
    parallel.execute_notebook(run.name, run.notebook, run.out_dir, run.parameters, kernel)


def execute(runs: list[Run], *, force: bool = False, kernel: str = parallel.THIS_INTERPRETER, jobs: int = 1,
            scheduler: str | None = None, echo=print, on_done: Callable[[Run], None] | None = None,
            redo: Collection[Path] = ()) -> Summary:
    """Run what is not done yet as Dask tasks, each once the runs it needs are done; a failure blocks only those.

    Local: `jobs` worker processes. `scheduler`: an existing Dask cluster. A run is submitted only when it can
    start (not as a task depending on its teacher's task), so Dask places it on any free worker. Ctrl-C (or SIGTERM
    from the CLI) returns the summary so far with `interrupted` set: unfinished runs have no done.json. Runs in
    `redo` are redone, as `force` redoes all; a finished run's folder is replaced only when the run starts, so one
    that never starts (its teacher failed) keeps its results.
    """
    started = time.perf_counter()
    plan = _Queue(runs, {r.out_dir for r in runs} if force else set(redo), kernel, echo)
    if plan.summary.skipped:
        echo(f"{len(plan.summary.skipped)} run(s) already done: skipped")
    if plan.waiting:
        with parallel.client(jobs, scheduler) as c:
            c.subscribe_topic(plan.topic, lambda event: echo(
                f"  started {event[1]['run']} on worker {event[1]['worker']} ({event[1]['threads']} threads)"))
            echo(f"{plan.total} run(s) to do on {scheduler or f'{jobs} local worker process(es)'}")
            try:
                plan.run_all(c, on_done)
            except KeyboardInterrupt:
                plan.summary.interrupted = True
                plan.summary.unfinished = [r.name for r in [*plan.running.values(), *plan.waiting]]
                c.cancel(list(plan.running))
            finally:
                plan.release_all()
        if not plan.summary.interrupted:
            plan.summary.blocked += [r.name for r in plan.waiting]  # needs that can never finish (a cycle)
    plan.summary.seconds = time.perf_counter() - started
    return plan.summary


class RunLock:
    """The lock a `kdexam run` process holds on a run while the run is in flight: a second `kdexam run` of the same
    study (another terminal, a second nohup) waits for that run instead of running it into the same folder, then
    takes it as done or, if the other process stopped first, runs it. An advisory fcntl lock on a file beside the
    run folder (a redone run's folder is deleted; the lock must outlive it); the kernel drops it when its process
    dies, so a killed runner leaves no stale lock. Where fcntl is missing (Windows), no lock is taken."""

    def __init__(self, out_dir: Path):
        self.path = out_dir.parent / f".{out_dir.name}.lock"
        self.file = None

    def acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.file = handle
        return True

    def holder(self) -> str:
        """The pid the holding process wrote, for messages."""
        try:
            return self.path.read_text(encoding="utf-8").strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the file drops the lock
            self.file = None


class _Queue:
    """The runs of one `execute`: those waiting, those running (by their Dask future), and each run's state."""

    def __init__(self, runs: list[Run], redo: set[Path], kernel: str, echo):
        self.summary, self.redo, self.kernel, self.echo = Summary(), redo, kernel, echo
        self.locks: dict[Path, RunLock] = {}  # the runs in flight here
        self.elsewhere: set[Path] = set()  # ready runs another kdexam process is running now
        self.waiting = []
        for run in runs:
            if rundir.is_done(run.out_dir) and run.out_dir not in redo:
                self.summary.skipped.append(run.name)
            else:
                self.waiting.append(run)
        self.total, self.topic = len(self.waiting), f"kdexam-{uuid.uuid4().hex}"
        self.state: dict[Path, str] = {r.out_dir: "waiting" for r in self.waiting}  # running, done, failed, blocked
        self.running: dict[Any, Run] = {}

    def tag(self, run: Run) -> str:
        return f"[{self.total - len(self.waiting) - len(self.running)}/{self.total}] {run.name}"

    def need_state(self, path: Path) -> str:
        return self.state.get(path) or ("done" if rundir.is_done(path) else "missing")

    def run_all(self, c, on_done: Callable[[Run], None] | None) -> None:
        queue: set = set()
        shown = ProgressShown(self.echo)
        self.submit_ready(c, queue)
        while queue or self.elsewhere:
            finished = [f for f in queue if f.done()]
            if not finished:  # a run's latest progress line, from its progress.json, now and then
                shown.poll(list(self.running.values()), self.total - len(self.waiting) - len(self.running), self.total)
                time.sleep(POLL_SECONDS)
                if self.elsewhere:
                    self.submit_ready(c, queue)
                continue
            for future in finished:
                queue.discard(future)
                self.finish(future, on_done)
            self.submit_ready(c, queue)

    def release_all(self) -> None:
        for lock in self.locks.values():
            lock.release()
        self.locks.clear()

    def finish(self, future, on_done: Callable[[Run], None] | None) -> None:
        run = self.running.pop(future)
        outcome = _outcome(future, run)
        self.locks.pop(run.out_dir).release()
        self.state[run.out_dir] = outcome.status
        if outcome.status == "done":
            self.summary.done.append(run.name)
            self.echo(f"{self.tag(run)}: done in {outcome.seconds:.0f}s")
            if on_done:
                on_done(run)
        else:
            self.summary.failed.append((run.name, str(run.out_dir / run.notebook.name), outcome.error))
            self.echo(f"{self.tag(run)}: FAILED ({outcome.error})")

    def submit_ready(self, c, queue: set) -> None:
        """Submit runs whose needs are done, in plan order, while a worker thread is free; block those whose needs
        cannot be done. Dask would place a task at once, on its guess of how long tasks take (none: ours take
        minutes to hours), so a run could wait behind another while a worker idles; with no more runs in flight than
        worker threads, each starts on a free worker. A run of an EXCLUSIVE stage starts when nothing else runs,
        and nothing after it in the plan starts beside it."""
        capacity = max(1, sum(c.nthreads().values()))
        hold = any(r.stage in EXCLUSIVE_STAGES for r in self.running.values())
        for run in list(self.waiting):
            needs = [self.need_state(n) for n in run.needs]
            if any(s in ("failed", "blocked", "missing") for s in needs):
                self.waiting.remove(run)
                self.state[run.out_dir] = "blocked"
                self.summary.blocked.append(run.name)
                self.echo(f"{self.tag(run)}: blocked (a run it needs did not finish)")
                continue
            if hold or len(self.running) >= capacity or not all(s == "done" for s in needs):
                continue
            if run.stage in EXCLUSIVE_STAGES:
                hold = True
                if self.running:
                    continue
            lock = RunLock(run.out_dir)
            if not lock.acquire():
                if run.out_dir not in self.elsewhere:
                    self.elsewhere.add(run.out_dir)
                    self.echo(f"{self.tag(run)}: running in another kdexam process (pid {lock.holder()}); waiting "
                              "for it")
                continue
            self.elsewhere.discard(run.out_dir)
            if rundir.is_done(run.out_dir) and run.out_dir not in self.redo:  # the other process finished it
                lock.release()
                self.waiting.remove(run)
                self.state[run.out_dir] = "done"
                self.summary.skipped.append(run.name)
                self.echo(f"{self.tag(run)}: done by another kdexam process")
                continue
            self.locks[run.out_dir] = lock
            self.waiting.remove(run)
            if run.out_dir in self.redo and run.out_dir.exists():
                shutil.rmtree(run.out_dir)  # now, not up front: a run that never starts keeps its old results
            rundir.clean_temp_files(run.out_dir)  # a killed attempt's; nothing else writes in a run's folder
            future = c.submit(parallel.notebook_task, run.name, run.notebook, run.out_dir, run.parameters,
                              self.kernel, self.topic, key=f"{run.stage}-{uuid.uuid4().hex}")
            self.running[future], self.state[run.out_dir] = run, "running"
            queue.add(future)


POLL_SECONDS = 1.0  # how often the runner looks for finished runs and progress lines
PROGRESS_EVERY = 15.0  # seconds between two progress lines of one run (a changed line, never a repeated one)


class ProgressShown:
    """Prints, for each running run, its latest progress line (kdlib.progress) when it changed, at most every
    PROGRESS_EVERY seconds, after a bar of the runs done: a 15-minute teacher says where it is."""

    def __init__(self, echo):
        self.echo, self.last_line, self.last_time = echo, {}, {}

    def poll(self, runs: list[Run], done: int, total: int) -> None:
        from kdlib import progress

        now = time.monotonic()
        for run in runs:
            p = progress.read(run.out_dir)
            text = progress.line(p) if p else ""
            if not text or text == self.last_line.get(run.out_dir) or \
                    now - self.last_time.get(run.out_dir, -PROGRESS_EVERY) < PROGRESS_EVERY:
                continue
            self.last_line[run.out_dir], self.last_time[run.out_dir] = text, now
            self.echo(f"{progress.bar(done, total)} | {run.name}: {text}")


def _outcome(future, run: Run) -> parallel.Outcome:
    """A task's Outcome; a task that never reported one (its worker died, it was cancelled) failed."""
    if future.status == "finished":
        return future.result()
    if future.status == "error":
        error = future.exception()
        return parallel.Outcome(run.name, "failed", error=f"{type(error).__name__}: {error}")
    return parallel.Outcome(run.name, "failed", error=f"the task was {future.status}")


def run_study(path: str, *, force: bool = False, dry_run: bool = False, kernel: str = parallel.THIS_INTERPRETER,
              data_dir: str | None = None, root: Path | None = None, jobs: int = 1, scheduler: str | None = None,
              rerun_changed: bool = False, stages: Sequence[str] | None = None,
              datasets: Sequence[str] | None = None, threads: int | None = None, device: str | None = None,
              interim: bool = False, echo=print) -> Summary:
    """Run (or with dry_run list) a study's runs; `stages` keeps only the runs of those stages (teacher, distill,
    ablation-*, profile, analysis) and `datasets` those of these datasets: a run whose needs are outside them and
    not done is blocked, not run; `interim` runs the analysis on what is finished (interim_analysis)."""
    from kdlib.config import load_params

    study = load_params(path)
    root = Path.cwd() if root is None else root
    if threads is not None:
        if threads < 0:
            raise ConfigError(f"--threads {threads}: a number of torch threads per run, >= 1 (0: the cores / --jobs).")
        study = replace(study, threads=threads)
    if device is not None:
        study = replace(study, device=device)
    runs = planned = plan(study, root=root, data_dir=data_dir)
    if stages:
        unknown = sorted(set(stages) - set(NOTEBOOKS))
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(unknown)}: the stages are {', '.join(NOTEBOOKS)}.")
        absent = sorted(set(stages) - {r.stage for r in runs})
        if absent:
            raise ConfigError(f"{path}: has no {', '.join(absent)} runs (its stages: "
                              f"{', '.join(dict.fromkeys(r.stage for r in runs))}).")
        runs = [r for r in runs if r.stage in stages]
    if datasets:
        chosen = {study.dataset_key(str(d)) for d in datasets}
        runs = [r for r in runs if r.dataset in chosen]
    check_parameters(runs)
    runs, elsewhere = (runs, []) if force else drop_published(study, runs, root, planned)
    if interim:
        runs = interim_analysis(runs)
    stale = {} if force else stale_runs(runs)
    # an analysis whose own settings are unchanged only reads other runs' files: one that read a run redone since
    # (an interim analysis, then a dataset finished) is simply redone, like one whose inputs are still to run
    rederived = [r.out_dir for r in runs if r.stage == "analysis" and r.out_dir in stale and not changed_settings(r)]
    for path in rederived:
        del stale[path]
    echo(f"study {study.name}: {len(runs)} runs -> {study.study_dir(root)}")
    if elsewhere:
        echo(f"  {len(elsewhere)} run(s) published in {study.published}, with these settings and not on this machine: "
             "skipped (--force redoes them)")
    missing = missing_teachers(study, root)
    if study.teachers_from:
        echo(f"  teachers from {study.teachers_dir(root)}" + (": SOME MISSING" if missing else " (finished)"))
    outdated = outdated_runs(runs, set(stale))
    outdated += [p for p in rederived if p not in outdated]
    if dry_run:
        for run in runs:
            state = "done" if rundir.is_done(run.out_dir) else "to run"
            if force and state == "done":
                state = "done, redone (--force)"
            elif run.out_dir in stale:
                state = f"done, CHANGED: {'; '.join(stale[run.out_dir][:3])}"
            elif run.out_dir in outdated:
                state = "done, redone after the runs it reads"
            echo(f"  {run.name} ({state})")
        for name in elsewhere:
            echo(f"  {name} (published)")
        if stale:
            echo(f"{len(stale)} finished run(s) CHANGED: a real run refuses to start until you pass --rerun-changed "
                 "(or restore the old settings)")
        if missing:
            raise ConfigError(missing)  # the runs are listed; a real run would refuse to start
        return Summary(skipped=[r.name for r in runs] + elsewhere)
    if missing:
        raise ConfigError(missing)
    if stale and not rerun_changed:
        refuse_stale(runs, stale)
    if stale:
        echo(f"{len(stale)} finished run(s) with changed settings: redone")
    if outdated:
        names = {r.out_dir: r.name for r in runs}
        echo(f"{len(outdated)} finished run(s) read runs that will run now: redone after them "
             f"({', '.join(names[p] for p in outdated[:3])}{', ...' if len(outdated) > 3 else ''})")
    afresh = restarts(runs)
    if afresh:
        echo(f"{len(afresh)} unfinished run(s) were begun with other settings: started afresh, not resumed")
    on_done = None
    if study.tracking == "mlflow":
        from kdlib import tracking

        on_done = tracking.mlflow_logger(study.name, study.study_dir(root).parent / "mlruns", echo=echo)
    summary = execute(runs, force=force, kernel=kernel, jobs=jobs, scheduler=scheduler, echo=echo, on_done=on_done,
                      redo={*stale, *outdated, *afresh})
    summary.skipped += elsewhere
    echo(summary.render())
    sys.stdout.flush()
    return summary
