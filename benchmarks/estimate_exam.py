"""How long a study takes on this machine, without running it: rates measured on a slice, extrapolated by words.

    python benchmarks/estimate_exam.py --params params/exam-offline.yaml

Measured here, with kdlib's own code on a slice of SmSA and `--threads` torch threads (default 1: one run per core
with `kdexam run --jobs <cores>`): for the teacher and each student, training words per second (one epoch of
kdlib's training step in its batch order) and inference words per second (kdlib.train.predict_logits); and the fixed
cost of one run (a papermill execution of 02_distill on 8 examples: kernel start, imports, data, model, scoring).
Then, for each dataset d of the study, with W(d, split) = examples x mean words:

    teacher(d) = O + E_t * (W_train / r_train + W_valid / r_infer) + (W_train + W_valid + W_test) / r_infer
    student(d, s) = O + E_s * (W_train / r_train(s) + W_valid / r_infer(s)) + (W_valid + W_test) / r_infer(s)

(validation every epoch; the teacher's logits on every split once; each student's final scoring), summed over
datasets, students and variants (a no-KD run costs what a KD run does). E_t, E_s: the study's epochs (upper
bound, no early stop) and a likelier count with early stopping (best epoch assumed at epochs/3, plus patience).
With --jobs N each run has threads = cores / N and N run at once, so wall ~= total / N. On a loaded machine a run
gets less than its cores; the rates are also given per CPU second (what the run costs on a quiet machine).
Profile and analysis runs are not included.

With --from-runs (no training, seconds): the same question answered from the published runs instead,

    python benchmarks/estimate_exam.py --from-runs [reports/exam-offline/runs.csv ...] --params params/exam-offline.yaml

(default: every reports/*/runs.csv). For each model kind (teacher and each student) a training rate in words per
second is fitted over the published runs: sum(train examples x transfer multiplier x mean words x epochs run) /
sum(train_seconds). A run's settings (its transfer set, epochs, patience, min_epochs) come from a runs.csv column
of that name, else the published settings.json beside it, else the study file whose `study` name (or `published`
folder) is the runs.csv's folder (--runs-params, default params/*.yaml), as planned by kdlib.runner.plan; a run
without epochs_run ran max(best_epoch + patience, min_epochs) epochs, at most its epochs. Then for every dataset of
--params, from its planned runs (per_student seeds, variants, transfer sets; per_dataset caps; profile runs):

    run = O(stage) + train examples (after max_train_examples) x transfer multiplier x mean words x E / rate(kind)

O(stage): the median of wall_seconds - train_seconds over the published runs of that stage (teacher or distill,
resumed runs left out); E = min(epochs, max(ceil(epochs/3) + patience, min_epochs)); a no-KD run reads the train
split only (the runner's rule); a profile run costs --profile-seconds. One table row per dataset, in CPU-h (one
thread a run, as `kdexam run --jobs <cores>` runs them), and whether it fits one session (--session-cpu-h).
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import common
import yaml

from kdlib import config, data, models, params, runner, teachers
from kdlib.errors import one_line_errors
from kdlib.train import BucketBatchSampler, TrainConfig, feature_length, predict_logits

STUDENTS = ("bilstm", "cnn", "bert-tiny", "bert-mini", "bert-small")


def clock(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure(args, data_dir: Path, teacher_dir: Path) -> dict[str, dict[str, float]]:
    """Words per second (wall and CPU) of training and inference for the teacher and every student."""
    spec = data.get_spec(args.dataset)
    dd = data.load_indonlu(args.dataset, str(data_dir))
    n_words = {s: sum(len(data.example_words(ex, spec)) for ex in dd[s]) for s in data.SPLITS}
    logits = common.cached_logits(teacher_dir, args.dataset, data_dir)
    rates = {}
    for name in ("teacher", *STUDENTS):
        if name == "teacher":  # fine-tune a fresh copy of the teacher's base for one epoch on the slice
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(teacher_dir / "model")
            base = teachers.resolve_base_model(args.teacher, args.models_dir, dd, spec)
            model = models.BertTaskModel.from_encoder(base, spec)
            model.word_embeddings().weight.requires_grad_(False)
            feats = {s: teachers.bert_features(dd[s], tokenizer, spec, 128) for s in ("train", "valid")}
            collator, cfg = common.Collator(pad_id=tokenizer.pad_token_id), TrainConfig(epochs=1, batch_size=16,
                                                                                         loss="ce")
        else:
            inputs = common.student_inputs(name, args.dataset, data_dir, teacher_dir)
            model, collator = inputs.model, inputs.collator
            feats = {"train": common.with_logits(inputs.features["train"], logits), "valid": inputs.features["valid"]}
            cfg = TrainConfig(epochs=1, lr=inputs.lr, batch_size=32, loss="mse")
        trainee = common.Trainee(model.train(), cfg, math.ceil(len(feats["train"]) / cfg.batch_size))
        sampler = BucketBatchSampler([feature_length(f) for f in feats["train"]], cfg.batch_size, shuffle=True)
        for batch in sampler:  # one epoch of kdlib's training step, in kdlib's batch order
            trainee.step(collator, [feats["train"][i] for i in batch])
        train_wall, train_cpu = trainee.seconds, trainee.cpu_seconds
        _, infer_wall, infer_cpu = clock(predict_logits, model, feats["valid"], collator)
        rates[name] = {"train": n_words["train"] / train_wall, "train_cpu": n_words["train"] / train_cpu,
                       "infer": n_words["valid"] / infer_wall, "infer_cpu": n_words["valid"] / infer_cpu}
    return rates


def run_overhead(args, data_dir: Path, teacher_dir: Path) -> float:
    """Wall seconds of a near-empty 02_distill run through papermill: what every run pays besides its training."""
    with tempfile.TemporaryDirectory() as out:
        out_dir = Path(out) / "run"
        run = runner.Run("distill", args.dataset, "overhead", runner.REPO_ROOT / "notebooks" / "02_distill.ipynb",
                         out_dir, {**runner.recipe_defaults(params.DistillParams), "dataset": args.dataset,
                                   "student": "cnn", "teacher_dir": str(teacher_dir), "out_dir": str(out_dir),
                                   "data_dir": str(data_dir), "max_train_examples": 8, "epochs": 1,
                                   "threads": args.threads, "student_options": {"emb_dim": 8, "filters": 4},
                                   "train_teacher_if_missing": False})
        started = time.perf_counter()
        runner.execute_run(run)
        return time.perf_counter() - started


def estimate(study: config.Study, sizes, rates, overhead: float, cpu: bool) -> dict[str, float]:
    """Total seconds of the study's teacher and distill runs: with every epoch, and with early stopping."""
    tr, inf = ("train_cpu", "infer_cpu") if cpu else ("train", "infer")
    totals = {"upper": 0.0, "likely": 0.0}
    for d in study.datasets:
        w = sizes[d]
        teacher = study.teacher_for(d)
        r = rates["teacher"]
        e_t = teacher.get("epochs", params.TeacherParams.epochs)
        for key, e in (("upper", e_t), ("likely", e_t)):
            totals[key] += overhead + e * (w["train"] / r[tr] + w["valid"] / r[inf]) + sum(w.values()) / r[inf]
        for student in study.students:
            s = study.distill_for(d, student)
            epochs = s.get("epochs", params.DistillParams.epochs)
            patience = s.get("patience", params.DistillParams.patience)
            r = rates[student]
            per_epoch = w["train"] / r[tr] + w["valid"] / r[inf]
            fixed = overhead + (w["valid"] + w["test"]) / r[inf]
            likely = min(epochs, math.ceil(epochs / 3) + patience)
            n = len(study.variants) * len(study.seeds)
            totals["upper"] += n * (fixed + epochs * per_epoch)
            totals["likely"] += n * (fixed + likely * per_epoch)
    return totals


# ----------------------------------------------------------------------------------------------------------------
# --from-runs: rates fitted on the published runs, no training

# The profile stage (notebook 06) of one dataset, wall seconds with one run at a time: KEPS's profile of 2026-12-02
# (2-core AMD EPYC, beside one training job: 1,695.98 s; the study's profile: section: thread_counts [1, 0],
# batch_sizes [1, 32], 20 runs, the BERT-base reference). Kept as a conservative figure: on 2026-12-03's 2-core
# Intel Xeon the same profile took 844 s (CASA), 1,670 s (WReTE) and 879 s (KEPS). Taken as the same for every dataset.
PROFILE_SECONDS = 1696.0
KINDS = ("teacher", "bilstm", "cnn", "bert-tiny", "bert-mini", "bert-small", "pruned")
RUN_COLUMNS = ("transfer", "transfer_size", "epochs", "patience", "min_epochs", "max_train_examples")  # win if set


def likely_epochs(p: dict) -> int:
    """The estimate's epochs: best epoch assumed at a third of the bound, then patience, at least min_epochs."""
    return min(p["epochs"], max(math.ceil(p["epochs"] / 3) + p["patience"], p.get("min_epochs") or 1))


def ran_epochs(row: dict, p: dict) -> float:
    """Epochs a published run trained: epochs_run, else max(best_epoch + patience, min_epochs), at most epochs."""
    if _given(row.get("epochs_run")):
        return float(row["epochs_run"])
    n = max(int(row["best_epoch"]) + int(p["patience"]), int(p.get("min_epochs") or 1))
    return float(min(n, int(p["epochs"])) if _given(p.get("epochs")) else n)


def multiplier(p: dict) -> float:
    """Training examples per train example: the transfer set's size (a no-KD run plans transfer: train, 1)."""
    return 1.0 if p.get("transfer", "train") == "train" else float(p.get("transfer_size") or 1.0)


def _given(value) -> bool:
    return value is not None and value == value and value != ""  # not None, NaN or empty


def planned_runs(study: config.Study, data_dir: str) -> list[runner.Run]:
    """Every teacher, distill and profile run of a study, as `kdexam run` plans them (a study that borrows its
    teachers with teachers_from trains none: planned without it, its teacher runs dropped)."""
    runs = runner.plan(dataclasses.replace(study, teachers_from=None), root=runner.REPO_ROOT, data_dir=data_dir)
    return [r for r in runs if r.stage in ("distill", "profile") or (r.stage == "teacher" and not study.teachers_from)]


def study_for(folder: Path, study_files: list[Path]) -> Path | None:
    """The study file whose study name is the published folder's name, else one whose `published:` is that folder."""
    raws = {}
    for path in study_files:
        try:
            raws[path] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
    named = [p for p, raw in raws.items() if isinstance(raw, dict) and raw.get("study") == folder.name]
    pointing = [p for p, raw in raws.items() if isinstance(raw, dict) and isinstance(raw.get("published"), str)
                and (p.parent / raw["published"]).resolve() == folder.resolve()]
    return next(iter(named + pointing), None)


def published_runs(paths: list[Path], study_files: list[Path], data_dir: str) -> tuple[list[dict], list[str]]:
    """The rows of the published runs.csv files with each run's settings under "p"; duplicates (a teacher published
    by two studies) once. Also notes on what was left out."""
    import pandas as pd

    rows, notes, seen = [], [], set()
    for path in paths:
        folder = path.parent
        recorded = {}
        if (folder / "settings.json").is_file():
            recorded = {k: v.get("parameters", {}) for k, v in json.loads((folder / "settings.json").read_text(
                encoding="utf-8")).items()}
        planned, study_path = {}, study_for(folder, study_files)
        if study_path is not None:
            study = config.load_params(study_path)
            root = study.study_dir(runner.REPO_ROOT)
            planned = {r.out_dir.relative_to(root).as_posix(): r.parameters for r in planned_runs(study, data_dir)}
        skipped = 0
        for row in pd.read_csv(path).to_dict("records"):
            key = tuple(row.get(c) for c in ("stage", "dataset", "model", "variant", "seed", "train_seconds",
                                             "wall_seconds"))
            if key in seen or row.get("stage") not in ("teacher", "distill"):
                continue
            seen.add(key)
            p = {**planned.get(row.get("run_dir"), {}), **recorded.get(row.get("run_dir"), {}),
                 **{c: row[c] for c in RUN_COLUMNS if _given(row.get(c))}}
            try:
                if _given(row.get("transfer_examples")):
                    row["multiplier"] = float(row["transfer_examples"]) / float(row["train_examples"])
                else:
                    row["multiplier"] = multiplier(p) if row["stage"] == "distill" else 1.0
                row["epochs_used"] = ran_epochs(row, p)
            except (KeyError, TypeError, ValueError):  # no settings for a run without epochs_run
                skipped += 1
                continue
            rows.append(row)
        if skipped:
            notes.append(f"{path}: {skipped} run(s) left out: no settings found (no study file "
                         f"{'matched' if study_path is None else 'plans them'}, no settings.json entry)")
    return rows, notes


def fit_rates(rows: list[dict], mean_words: dict[str, float]) -> dict[str, dict]:
    """Per model kind: training words per second over its published runs, and what it rests on."""
    out = {}
    for row in rows:
        r = out.setdefault(row["model"], {"runs": 0, "words": 0.0, "seconds": 0.0, "each": []})
        words = row["train_examples"] * row["multiplier"] * mean_words[row["dataset"]] * row["epochs_used"]
        r["runs"] += 1
        r["words"] += words
        r["seconds"] += row["train_seconds"]
        r["each"].append(words / row["train_seconds"])
    for r in out.values():
        r["rate"] = r["words"] / r["seconds"]
    return out


def overheads(rows: list[dict]) -> dict[str, float]:
    """Per stage: the median of wall - train seconds (what a run pays besides training), resumed runs left out."""
    out = {}
    for stage in ("teacher", "distill"):
        gaps = [r["wall_seconds"] - r["train_seconds"] for r in rows
                if r["stage"] == stage and not (r.get("resumed_from_epoch") or 0)]
        out[stage] = statistics.median(gaps) if gaps else 0.0
    return out


def estimate_from_runs(study: config.Study, runs: list[runner.Run], sizes, rates, overhead: dict[str, float],
                       profile_seconds: float) -> list[dict]:
    """Per dataset: train examples used, mean words, and seconds of the teacher, the students and the profile."""
    out = []
    for d in study.datasets:
        split, words = int(sizes[d]["train"]), float(sizes[d]["mean_words"])
        row = {"dataset": d, "train": set(), "teacher_train": set(), "mean_words": words, "runs": 0,
               "teacher": 0.0, "students": 0.0, "profile": 0.0}
        for run in (r for r in runs if r.dataset == d):
            p = run.parameters
            if run.stage == "profile":
                row["profile"] += profile_seconds
                continue
            kind = "teacher" if run.stage == "teacher" else p["student"]
            if kind not in rates:
                raise SystemExit(f"no published run of {kind} to fit its rate on: pass --from-runs with a runs.csv "
                                 "that has some.")
            n = min(split, p.get("max_train_examples") or split)
            row["teacher_train" if kind == "teacher" else "train"].add(n)
            mult = 1.0 if kind == "teacher" else multiplier(p)
            row["runs"] += 1
            row["teacher" if kind == "teacher" else "students"] += (
                    overhead[run.stage] + n * mult * words * likely_epochs(p) / rates[kind]["rate"])
        out.append(row)
    return out


def from_runs(args) -> None:
    paths = [Path(p) for p in args.from_runs] or sorted((runner.REPO_ROOT / "reports").glob("*/runs.csv"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"--from-runs: no such file {', '.join(missing)}; give published runs.csv files "
                         "(reports/<study>/runs.csv), or none for every reports/*/runs.csv.")
    if not paths:
        raise SystemExit("--from-runs: no reports/*/runs.csv to fit rates on; publish a study first "
                         "(kdexam report --study outputs/S --publish reports/S) or name a runs.csv.")
    data_dir = str(data.resolve_data_dir(args.data_dir))
    study_files = [Path(p) for p in args.runs_params] if args.runs_params else sorted(
        (runner.REPO_ROOT / "params").glob("*.yaml"))
    study = config.load_params(args.params)
    rows, notes = published_runs(paths, study_files, data_dir)
    keys = set(data.DATASETS)
    rows = [r for r in rows if r["dataset"] in keys]
    sizes = data.describe(data_dir, sorted({*study.datasets, *(r["dataset"] for r in rows)})).set_index("key")
    mean_words = sizes["mean_words"].to_dict()
    rates, overhead = fit_rates(rows, mean_words), overheads(rows)
    common.print_table(
        f"training rates from {len(rows)} published runs ({', '.join(str(p) for p in paths)})",
        [{"model": k, "runs": r["runs"], "words trained (M)": round(r["words"] / 1e6, 2),
          "train CPU-h": round(r["seconds"] / 3600, 2), "train words/s": round(r["rate"]),
          "runs' words/s (min-max)": f"{min(r['each']):.0f}-{max(r['each']):.0f}"}
         for k in (*KINDS, *sorted(set(rates) - set(KINDS))) if (r := rates.get(k))],
        [f"words = train examples x transfer multiplier x mean words x epochs run; overhead per run (median wall - "
         f"train seconds): teacher {overhead['teacher']:.0f}s, student {overhead['distill']:.0f}s", *notes])
    runs = planned_runs(study, data_dir)
    estimate = estimate_from_runs(study, runs, sizes.to_dict("index"), rates, overhead, args.profile_seconds)
    table = []
    for e in estimate:
        train = "/".join(str(n) for n in sorted(e["train"])) or "-"
        if e["teacher_train"] and e["teacher_train"] != e["train"]:
            train += f" (teacher {'/'.join(str(n) for n in sorted(e['teacher_train']))})"
        total = e["teacher"] + e["students"] + e["profile"]
        table.append({"dataset": e["dataset"], "train examples": train, "mean words": e["mean_words"],
                      "runs": e["runs"], "teacher CPU-h": round(e["teacher"] / 3600, 2),
                      "students CPU-h": round(e["students"] / 3600, 2), "profile CPU-h": round(e["profile"] / 3600, 2),
                      "total CPU-h": round(total / 3600, 2), "fits": "yes" if total / 3600 <= args.session_cpu_h
                      else "no"})
    sums = {k: round(sum(r[k] for r in table), 2) for k in ("teacher CPU-h", "students CPU-h", "profile CPU-h",
                                                             "total CPU-h")}
    table.append({"dataset": "all", "train examples": "", "mean words": "", "runs": sum(r["runs"] for r in table),
                  **sums, "fits": ""})
    teachers = {d: likely_epochs(r.parameters) for r in runs if r.stage == "teacher" for d in [r.dataset]}
    students = sorted({likely_epochs(r.parameters) for r in runs if r.stage == "distill"})
    common.print_table(
        f"estimate for {Path(args.params).name} from the published runs: CPU-h per dataset (one thread a run), "
        f"session budget {args.session_cpu_h} CPU-h", table,
        ["epochs: every teacher and student runs min(epochs, max(ceil(epochs/3) + patience, min_epochs)) (best "
         "epoch assumed at a third of the bound): students " + "/".join(map(str, students)) + ", teachers "
         + ", ".join(f"{d} {n}" for d, n in teachers.items()),
         "train examples: the train split after max_train_examples; a KD run trains on it x its transfer_size "
         "(per_student transfer: train reads it once), a no-KD run on the train split",
         f"profile: {args.profile_seconds:.0f}s a dataset (--profile-seconds; KEPS's measured profile, "
         "reports/exam-offline/profiles/keps.json wall_seconds); the study's analysis run is not included",
         "not modelled apart from the median overhead: the teacher labelling a transfer set (paid once, by the "
         "dataset's first KD run)"] + (["teachers: borrowed (teachers_from), none trained"] if study.teachers_from
                                       else []))


@one_line_errors
def main() -> None:
    p = common.arguments(__doc__.splitlines()[0], train=300)
    p.add_argument("--params", default=str(runner.REPO_ROOT / "params" / "exam-offline.yaml"))
    p.add_argument("--jobs", type=int, default=2, help="runs at once in the estimate (default: %(default)s)")
    p.add_argument("--from-runs", nargs="*", default=None, metavar="RUNS_CSV",
                   help="estimate from published runs, no training (no file: every reports/*/runs.csv)")
    p.add_argument("--runs-params", nargs="+", default=None, metavar="YAML",
                   help="with --from-runs: study files that say the published runs' settings (default: params/*.yaml)")
    p.add_argument("--session-cpu-h", type=float, default=4.5,
                   help="with --from-runs: CPU-h one session affords (default: %(default)s)")
    p.add_argument("--profile-seconds", type=float, default=PROFILE_SECONDS,
                   help="with --from-runs: CPU seconds of one dataset's profile run (default: %(default)s, KEPS's)")
    p.set_defaults(eval=300)
    args = p.parse_args()
    if args.from_runs is not None:
        return from_runs(args)
    args = common.settle(args, "estimate")
    study = config.load_params(args.params)
    data_dir, teacher_dir = common.prepare(args)
    full = data.describe(args.data_dir or None, study.datasets).set_index("key")
    sizes = {d: {s: float(full.loc[d, s] * full.loc[d, "mean_words"]) for s in data.SPLITS} for d in study.datasets}
    rates = measure(args, data_dir, teacher_dir)
    overhead = run_overhead(args, data_dir, teacher_dir)
    rows = [{"model": m, "train words/s": round(r["train"]), "train words/CPU s": round(r["train_cpu"]),
             "infer words/s": round(r["infer"]), "infer words/CPU s": round(r["infer_cpu"])} for m, r in rates.items()]
    common.print_table(f"rates on {args.dataset} ({args.train} train / {args.eval} valid examples), "
                       f"{args.threads} torch thread(s); per-run overhead {overhead:.0f}s (papermill, imports, data)",
                       rows)
    out = []
    for basis, cpu in (("as measured here (loaded machine)", False), ("CPU time (a quiet machine)", True)):
        t = estimate(study, sizes, rates, overhead, cpu)
        out.append({"basis": basis, "all epochs: h": round(t["upper"] / 3600, 1),
                    "early stopping: h": round(t["likely"] / 3600, 1),
                    f"--jobs {args.jobs}, early stopping: h": round(t["likely"] / 3600 / args.jobs, 1)})
    n_runs = len(study.datasets) * (1 + len(study.students) * len(study.variants) * len(study.seeds))
    common.print_table(f"estimate for {Path(args.params).name}: {n_runs} teacher and distill runs over "
                       f"{len(study.datasets)} datasets ({int(sum(sum(w.values()) for w in sizes.values())):,} words "
                       f"in all splits), {args.threads} thread(s) per run", out,
                       ["all epochs: every run trains its configured epochs; early stopping: students stop at "
                        "ceil(epochs/3) + patience", f"--jobs {args.jobs}: that many runs at once, one per core"])


if __name__ == "__main__":
    main()
