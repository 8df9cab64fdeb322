"""What the benchmarks share: a slice of a dataset, a fine-tuned teacher, student inputs, and a teacher run on the fly.

Every benchmark measures its contenders in one process run, on the same data, student and epochs, and prints a
table of ratios; absolute numbers depend on the machine and its load, ratios much less. SmSA (single-sentence
classification) is the default task: its teacher and students read the same examples one to one.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm: progress bars would drown the tables
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import get_linear_schedule_with_warmup  # noqa: E402

from kdlib import data, models, params, rundir, teachers  # noqa: E402
from kdlib.train import Collator, TrainConfig, batch_loss, set_threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def arguments(description: str, *, train: int = 1000, epochs: int = 2) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", default=None, help="IndoNLU data (default: $KDEXAM_DATA_DIR or data/indonlu)")
    p.add_argument("--dataset", default="smsa", help="a classification dataset (default: %(default)s)")
    p.add_argument("--train", type=int, default=train, help="train examples (default: %(default)s)")
    p.add_argument("--eval", type=int, default=500, help="valid and test examples (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=epochs, help="student epochs (default: %(default)s)")
    p.add_argument("--teacher", default="offline",
                   help="teacher base model: offline (multilingual-e5-small), tiny-random, a hub id or a folder")
    p.add_argument("--teacher-dir", default=None,
                   help="a finished 01_teacher run to use (copied, never written) instead of fine-tuning one")
    p.add_argument("--threads", type=int, default=1, help="torch threads for every contender (default: %(default)s)")
    p.add_argument("--work", default=str(REPO / "outputs" / "benchmarks"),
                   help="scratch folder; data slices and teachers there are reused (default: %(default)s)")
    p.add_argument("--models-dir", default=str(REPO / "outputs" / "models"), help="where base models are built")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run: tiny-random teacher, 64 examples")
    return p


def settle(args: argparse.Namespace, name: str) -> argparse.Namespace:
    """Apply --tiny, fix the thread count, and make the scratch folder."""
    if args.tiny:
        args.teacher, args.train, args.eval, args.epochs = "tiny-random", 64, 32, 1
    args.work = Path(args.work)
    args.scratch = args.work / name
    args.scratch.mkdir(parents=True, exist_ok=True)
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    return args


def slice_dataset(src: Path, dst: Path, key: str, n_train: int, n_eval: int) -> Path:
    """The first n examples of each split of one dataset, as files in IndoNLU's layout under `dst`."""
    spec = data.get_spec(key)
    for split, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        source, target = spec.path(src, split), spec.path(dst, split)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".txt":
            raise SystemExit(f"{key} is a tagging dataset; the benchmarks compare classification students.")
        delimiter = "\t" if source.suffix == ".tsv" else ","
        with source.open(encoding="utf-8", newline="") as f:
            rows = [row for _, row in zip(range(n + (source.suffix == ".csv")), csv.reader(f, delimiter=delimiter))]
        with target.open("w", encoding="utf-8", newline="") as f:
            csv.writer(f, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return dst


def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """(data slice, finished teacher folder) for the benchmark's settings; the teacher is reused across runs."""
    name = f"{args.dataset}-{args.train}-{args.eval}"
    data_dir = slice_dataset(data.resolve_data_dir(args.data_dir), args.work / "data" / name, args.dataset,
                             args.train, args.eval)
    teacher_dir = args.work / "teachers" / f"{name}-{Path(args.teacher).name}"
    if args.teacher_dir:
        if not rundir.is_done(args.teacher_dir) and not (Path(args.teacher_dir) / rundir.TEACHER_INFO).exists():
            raise SystemExit(f"{args.teacher_dir} holds no finished teacher.")
        teacher_dir = args.scratch / "teacher-given"
        if not teacher_dir.exists():  # a copy: the student runs may add cache entries, never to someone's run
            shutil.copytree(args.teacher_dir, teacher_dir, ignore=shutil.ignore_patterns("work", "*.ipynb"))
    elif not (teacher_dir / rundir.TEACHER_INFO).exists():
        tiny = args.teacher == params.TINY_RANDOM
        teachers.run_teacher(params.TeacherParams(
            dataset=args.dataset, out_dir=str(teacher_dir), base_model=args.teacher, data_dir=str(data_dir),
            models_dir=args.models_dir, max_length=128, epochs=1, lr=1e-3 if tiny else 5e-5, batch_size=16,
            threads=args.threads))
    sliced = data.load_indonlu(args.dataset, str(data_dir))
    args.train, args.eval = len(sliced["train"]), len(sliced["test"])  # what there was, for the tables
    return data_dir, teacher_dir


@dataclass
class Inputs:
    """One student's inputs on the slice: the model, the features of each split and the collator."""

    model: nn.Module
    features: dict[str, list[dict]]
    collator: Collator
    gold: dict[str, list]
    lr: float


def student_inputs(student: str, dataset: str, data_dir: Path, teacher_dir: Path, options: dict | None = None,
                   *, seed: int = 0) -> Inputs:
    """What distill.run_distill builds for a student, on the full slice: features, model, collator (same seed)."""
    from transformers import AutoTokenizer

    spec, spec_student = data.get_spec(dataset), params.get_student(student)
    dd = data.load_indonlu(spec.key, str(data_dir))
    torch.manual_seed(seed)
    if spec_student.kind == "word":
        vocab = data.Vocab.build(data.example_words(ex, spec) for ex in dd["train"])
        encode = lambda ds: ds.map(data.encode_for_words, batched=True, remove_columns=ds.column_names,  # noqa: E731
                                   fn_kwargs={"vocab": vocab, "spec": spec, "max_words": 256}).to_list()
        model = models.build_student(student, spec, vocab=vocab, **(options or {}))
        collator = Collator(pad_id=vocab.pad_id)
    else:
        tokenizer = AutoTokenizer.from_pretrained(teacher_dir / "model")
        max_length = rundir.read_json(teacher_dir / rundir.TEACHER_INFO)["max_length"]
        encode = lambda ds: teachers.bert_features(ds, tokenizer, spec, max_length)  # noqa: E731
        collator = Collator(pad_id=tokenizer.pad_token_id)
    features = {s: encode(dd[s]) for s in data.SPLITS}
    if spec_student.kind != "word":  # as run_distill: pieces: train keeps the training text's pieces
        used = {i for f in features["train"] for i in f["input_ids"]}
        model = models.build_student(student, spec, tokenizer=tokenizer, used_ids=used, **(options or {}))
    gold = {s: teachers.gold_labels(dd[s], spec) for s in data.SPLITS}
    return Inputs(model, features, collator, gold, spec_student.lr_for(options or {}))


def cached_logits(teacher_dir: Path, dataset: str, data_dir: Path) -> list[np.ndarray]:
    """The teacher's train-split logits from its cache (computed there if missing)."""
    spec = data.get_spec(dataset)
    return teachers.Teacher.load(teacher_dir).logits(spec, "train", data.load_indonlu(spec.key, str(data_dir))["train"])


def with_logits(features: Sequence[dict], logits: Sequence[np.ndarray]) -> list[dict]:
    return [{**f, "teacher_logits": t} for f, t in zip(features, logits)]


def teacher_features(teacher_dir: Path, dataset: str, data_dir: Path) -> tuple[nn.Module, list[dict], Collator]:
    """The fine-tuned teacher and its own inputs for the train split (for running it on the fly)."""
    from transformers import AutoTokenizer

    spec = data.get_spec(dataset)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir / "model")
    max_length = rundir.read_json(teacher_dir / rundir.TEACHER_INFO)["max_length"]
    train = data.load_indonlu(spec.key, str(data_dir))["train"]
    teacher = models.load_model(teacher_dir / "model").eval().requires_grad_(False)
    return teacher, teachers.bert_features(train, tokenizer, spec, max_length), Collator(pad_id=tokenizer.pad_token_id)


def with_teacher_inputs(features: Sequence[dict], teacher_feats: Sequence[dict]) -> list[dict]:
    """Student features carrying the teacher's own inputs under "teacher" (the two tokenise differently)."""
    return [{**f, "teacher": t} for f, t in zip(features, teacher_feats)]


@dataclass(frozen=True)
class PairCollator:
    """Pads the student's features with its collator and the teacher's (under "teacher") with the teacher's."""

    student: Collator
    teacher: Collator

    def __call__(self, features: list[dict]) -> dict:
        batch = self.student([{k: v for k, v in f.items() if k != "teacher"} for f in features])
        if "teacher" in features[0]:
            batch["teacher"] = self.teacher([f["teacher"] for f in features])
        return batch


class TeacherOnTheFly(nn.Module):
    """A student whose training batches get the teacher's logits computed there and then, as a peer tool does.

    kdlib's loop reads `batch["teacher_logits"]` after the forward pass, so filling it in here runs the teacher on
    every training step; in eval mode (validation) the teacher is not run. The teacher stays frozen in eval mode.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module):
        super().__init__()
        self.student, self.teacher = student, teacher.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        self.student.train(mode)
        self.training = mode
        return self

    def forward(self, batch: dict):
        if self.training and "teacher" in batch:
            with torch.no_grad():
                batch["teacher_logits"] = self.teacher(batch["teacher"]).logits
        return self.student(batch)


class Trainee:
    """One model with kdlib's optimiser, schedule and training step (as in kdlib.train.fit), timing its steps."""

    def __init__(self, model, cfg: TrainConfig, steps: int):
        self.model, self.cfg, self.seconds, self.cpu_seconds = model, cfg, 0.0, 0.0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(cfg.warmup_ratio * steps), steps)

    def step(self, collate, features) -> None:
        started, cpu = time.perf_counter(), time.process_time()
        loss = batch_loss(self.model, collate(features), self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.seconds += time.perf_counter() - started
        self.cpu_seconds += time.process_time() - cpu


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def print_table(title: str, rows: list[dict], notes: Sequence[str] = ()) -> None:
    import pandas as pd

    print(f"\n{title}")
    print(pd.DataFrame(rows).to_string(index=False))
    for note in notes:
        print(f"  {note}")
