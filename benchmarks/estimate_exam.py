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
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import common

from kdlib import config, data, models, params, runner, teachers
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


def main() -> None:
    p = common.arguments(__doc__.splitlines()[0], train=300)
    p.add_argument("--params", default=str(runner.REPO_ROOT / "params" / "exam-offline.yaml"))
    p.add_argument("--jobs", type=int, default=2, help="runs at once in the estimate (default: %(default)s)")
    p.set_defaults(eval=300)
    args = common.settle(p.parse_args(), "estimate")
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
