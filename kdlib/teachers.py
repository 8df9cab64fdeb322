"""The teacher: fine-tune it on one dataset (notebooks/01_teacher), and the `Teacher` handle every later stage reads.

`run_teacher` reads its dataset, fine-tunes the base encoder with kdlib.train, scores it with IndoNLU's metric and
writes its run folder: model/ (weights and tokenizer), teacher.json (what a student needs to read it), metrics.json,
and the logit cache of every split. `Teacher.load(run_dir)` opens a finished run once: its model folder, tokenizer,
max length and logit cache, for the distillation, ablation and profile code. `done.json` is left to the caller
(the notebook's last cell), so a run whose notebook fails after training is still redone.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kdlib import augment, data, models, progress, rundir
from kdlib import cache as cache_lib
from kdlib.errors import ConfigError, KdExamError
from kdlib.params import OFFLINE_TEACHER, TINY_RANDOM, TeacherParams
from kdlib.train import (
    Collator,
    FitResult,
    TrainConfig,
    device_name,
    fallback_label,
    fit,
    predict_logits,
    prediction_record,
    predictions,
    resolve_device,
    score_ids,
    set_seed,
    set_threads,
)

log = logging.getLogger(__name__)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1"


@dataclass
class RunResult:
    """What a recipe returns to its notebook."""

    metrics: dict
    history: list[dict]
    out_dir: Path


class Teacher:
    """A finished teacher run, opened once: its model folder, tokenizer, max length and logit cache.

    `Teacher.load(run_dir)` reads teacher.json (and nothing else); the tokenizer and the model load on first use.
    Its logits come from the cache under the teacher's folder (or `cache_dir`, which also receives what a miss
    computes); the model runs only on a miss.
    """

    def __init__(self, run_dir: str | os.PathLike, info: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.info = info
        self._model = None

    @classmethod
    def load(cls, run_dir: str | os.PathLike, *, dataset: str = "") -> Teacher:
        run_dir = Path(run_dir)
        if not (run_dir / rundir.TEACHER_INFO).exists():
            what = f" for {dataset}" if dataset else ""
            raise ConfigError(f"{run_dir} holds no finished teacher{what}; run notebooks/01_teacher first "
                              "(kdexam run does this in order).")
        return cls(run_dir, rundir.read_json(run_dir / rundir.TEACHER_INFO))

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def max_length(self) -> int:
        return int(self.info["max_length"])

    @property
    def word_position(self) -> str:
        """Which sub-word of a word its tagging head reads (params.WORD_POSITIONS; "first" for teachers from
        before the setting)."""
        return self.info.get("word_position", "first")

    @property
    def logit_train_examples(self) -> int | None:
        """How many train examples the teacher run cached logits for (data.subset_indices); None: all."""
        return self.info.get("logit_train_examples")

    @cached_property
    def metrics(self) -> dict:
        path = self.run_dir / rundir.METRICS
        return rundir.read_json(path) if path.exists() else {}

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_dir)

    def model(self, device: str = "cpu"):
        """The fine-tuned model, loaded once (on `device`: "auto", "cpu" or "cuda")."""
        if self._model is None:
            self._model = models.load_model(self.model_dir).to(resolve_device(device))
        return self._model

    def features(self, ds, spec: data.DatasetSpec, tokenizer=None) -> list[dict]:
        """A split's BERT inputs as the teacher reads them (its tokenizer, max length and word position)."""
        return bert_features(ds, tokenizer or self.tokenizer, spec, self.max_length, self.word_position)

    def logits(self, spec: data.DatasetSpec, split: str, ds, *, cache_dir: str | os.PathLike = "",
               device: str = "cpu", model=None) -> list[np.ndarray]:
        """The teacher's unit-level logits on `ds` (named `split` in the cache), from the cache or computed once."""
        key = cache_lib.cache_key(cache_lib.fingerprint_model_dir(self.model_dir, cache_dir or None), spec.key,
                                  cache_lib.fingerprint_examples(ds.to_list()),
                                  {"max_length": self.max_length,  # the default position keeps the older keys
                                   **({"word_position": self.word_position} if self.word_position != "first" else {})})

        def compute() -> list[np.ndarray]:
            net = model if model is not None else self.model(device)
            return predict_logits(net, self.features(ds, spec), Collator(pad_id=self.tokenizer.pad_token_id),
                                  desc=f"teacher {split}")

        cache = cache_lib.LogitCache(Path(cache_dir) / "logits" if cache_dir else self.run_dir / "logits",
                                     read_also=[self.run_dir / "logits"])
        return cache.get_or_compute(split, key, compute)

    def train_logits(self, spec: data.DatasetSpec, train, indices: list[int], *, cache_dir: str | os.PathLike = "",
                     device: str = "cpu") -> list[np.ndarray]:
        """The teacher's logits on train examples `indices` (a data.subset_indices set), read from its cache.

        The teacher run caches the subset its `logit_train_examples` names; a set inside it is read from there. A
        set outside it (a student capped higher than the study planned) is its own cache entry, which the teacher
        fills once, here.
        """
        cached_idx = data.subset_indices(len(train), self.logit_train_examples)
        position = {i: k for k, i in enumerate(cached_idx)}
        if all(i in position for i in indices):
            logits = self.logits(spec, "train", train.select(cached_idx), cache_dir=cache_dir, device=device)
            return [logits[position[i]] for i in indices]
        log.info("train examples outside the teacher's cached %s: their logits are computed once now",
                 self.logit_train_examples)
        return self.logits(spec, "train", train.select(indices), cache_dir=cache_dir, device=device)

    def transfer_logits(self, spec: data.DatasetSpec, name: str, examples: list[dict], *,
                        cache_dir: str | os.PathLike = "", device: str = "cpu") -> list[np.ndarray]:
        """The teacher's logits on the extra examples of a transfer set, cached under their content.

        The teacher reads its own mask token where the augmentation masked a word. Any change of the examples, the
        teacher or its settings changes the key, so the same transfer set is labelled once for every seed reading
        it.
        """
        mask = self.tokenizer.mask_token
        if mask is None and any(augment.MASK_WORD in str(ex) for ex in examples):
            raise ConfigError(f"the teacher's tokenizer in {self.run_dir} has no mask token; use p_mask: 0.")
        teacher_view = augment.as_dataset(augment.replace_mask(examples, spec, mask or ""))
        return self.logits(spec, f"transfer-{name}", teacher_view, cache_dir=cache_dir, device=device)


def resolve_base_model(name: str, models_dir: str | os.PathLike, dd: data.datasets.DatasetDict,
                       spec: data.DatasetSpec) -> str:
    """A hub id or folder usable by from_pretrained; builds the offline or tiny-random base on first use."""
    models_dir = Path(models_dir)
    if name == OFFLINE_TEACHER:
        from kdlib.offline_teacher import import_offline_teacher

        return str(import_offline_teacher(models_dir / "multilingual-e5-small"))
    if name == TINY_RANDOM:
        folder = models_dir / f"tiny-random-{spec.key}{_own_suffix(spec)}"
        if not (folder / "config.json").exists():
            tokenizer = data.train_wordpiece(data.texts_for_tokenizer(dd, spec), vocab_size=2000)
            models.save_random_bert(folder, tokenizer)
        return str(folder)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if _offline():
        raise ConfigError(f"base model {name!r} is neither a local folder nor available offline (HF_HUB_OFFLINE=1). "
                          f"Use base_model: offline (the bundled multilingual-e5-small) or a local folder.")
    return name


def _own_suffix(spec: data.DatasetSpec) -> str:
    """Your own dataset's tiny-random base is named after its content too: two studies may both have an 'ulasan'."""
    if spec.source is None:
        return ""
    return "-" + cache_lib.fingerprint_examples([spec.source])[:8]


NO_LIMIT = 1_000_000  # sub-words: "tokenize the whole example" for truncation()


def bert_features(ds, tokenizer, spec: data.DatasetSpec, max_length: int, word_position: str = "first") -> list[dict]:
    enc = ds.map(data.encode_for_bert, batched=True, remove_columns=ds.column_names,
                 fn_kwargs={"tokenizer": tokenizer, "spec": spec, "max_length": max_length,
                            "word_position": word_position})
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids", "word_index", "labels")
            if c in enc.column_names]
    return enc.select_columns(keep).to_list()


def truncation(ds, tokenizer, spec: data.DatasetSpec, max_length: int) -> dict[str, int]:
    """What `max_length` cuts off one split: its examples, those longer than `max_length` sub-words, and for tagging
    its words and those the cut hides (the teacher and the BERT students never see them; they are scored as
    train.fallback_label). Counted against the same split tokenized without a limit."""
    cut = bert_features(ds, tokenizer, spec, max_length)
    whole = bert_features(ds, tokenizer, spec, NO_LIMIT)
    out = {"examples": len(cut), "examples_cut": sum(len(a["input_ids"]) < len(b["input_ids"])
                                                      for a, b in zip(cut, whole))}
    if spec.is_tagging:
        out |= {"words": sum(len(f["word_index"]) for f in cut),
                "words_cut": sum(i < 0 for f in cut for i in f["word_index"])}
    return out


def gold_labels(ds, spec: data.DatasetSpec) -> list:
    return ds[{"single": "label", "pair": "label", "aspect": "labels"}.get(spec.shape, "tags")]


def run_teacher(p: TeacherParams) -> RunResult:
    """Fine-tune the teacher on one dataset (or take one already fine-tuned), score it, and cache its logits on every
    split."""
    from transformers import AutoTokenizer

    started = time.perf_counter()
    spec = data.get_spec(p.dataset)
    threads = set_threads(p.threads)
    device = resolve_device(p.device)
    set_seed(p.seed)
    out = Path(p.out_dir)
    dd = data.load_indonlu(spec, p.data_dir)
    dd["valid"] = data.cap(dd["valid"], p.max_valid_examples)  # one fixed subset, like a capped train split
    train_ds = data.cap(dd["train"], p.max_train_examples)
    report = progress.writer(out, what="teacher")
    if p.fine_tune:
        base = resolve_base_model(p.base_model, p.models_dir, dd, spec)
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=_offline())
        model = models.BertTaskModel.from_encoder(base, spec, pooling=p.pooling)
        log.info("teacher head reads %s", "every word's first sub-word" if spec.is_tagging else
                 {"mean": "the mean of the last hidden states", "cls": "[CLS] through the pooler"}[model.pooling])
        if p.freeze_embeddings:
            model.word_embeddings().weight.requires_grad_(False)
        feats = {s: bert_features(dd[s], tokenizer, spec, p.max_length, p.word_position) for s in ("valid", "test")}
        feats["train_used"] = bert_features(train_ds, tokenizer, spec, p.max_length, p.word_position)
        collator = Collator(pad_id=tokenizer.pad_token_id)
        cfg = TrainConfig(epochs=p.epochs, lr=p.lr, batch_size=p.batch_size, patience=p.patience, loss="ce",
                          seed=p.seed)
        result = fit(model, feats["train_used"], feats["valid"], gold_labels(dd["valid"], spec), spec, cfg,
                     out / "work", collator, device=device, progress=report)
    else:  # a teacher fine-tuned elsewhere: its head's labels are matched to the dataset's by name
        base = _finetuned_model(p.base_model)
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=_offline())
        model = models.BertTaskModel.from_finetuned(base, spec).to(device)
        result = FitResult()
    model_dir = out / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rundir.write_json(out / rundir.TEACHER_INFO, {"dataset": spec.key, "base_model": p.base_model,
                                                  "max_length": p.max_length,
                                                  **({"word_position": p.word_position}
                                                     if p.word_position != "first" else {}),
                                           "logit_train_examples": p.logit_train_examples,
                                           "pooling": _pooling_record(model, spec, p.word_position)})

    teacher = Teacher.load(out)
    scores, logits_seconds = {}, 0.0
    logit_sets = {**dd, "train": data.cap(dd["train"], p.logit_train_examples)}  # students' train examples only
    for split in data.SPLITS:
        t0 = time.perf_counter()
        report(phase=f"teacher logits: {split} ({len(logit_sets[split])} examples)")
        logits = teacher.logits(spec, split, logit_sets[split], model=model)
        logits_seconds += time.perf_counter() - t0
        if split != "train":
            pred = predictions(logits, fallback_label(spec))
            scores[split] = score_ids(spec, gold_labels(dd[split], spec), pred)
            if split == "test":
                rundir.write_json(out / rundir.PREDICTIONS, prediction_record(spec, gold_labels(dd[split], spec), pred))
    metrics = {
        "stage": "teacher", "dataset": spec.key, "shape": spec.shape, "model": "teacher", "variant": p.base_model,
        "seed": p.seed, "fine_tuned_here": p.fine_tune,
        "metric": spec.metric, "f1": scores["test"]["f1"], "valid": scores["valid"], "test": scores["test"],
        "parameters": models.count_parameters(model), "train_examples": len(train_ds) if p.fine_tune else 0,
        "train_split_examples": len(dd["train"]), "valid_examples": len(dd["valid"]),
        "logit_train_examples": len(logit_sets["train"]), "pooling": _pooling_record(model, spec, p.word_position),
        "best_epoch": result.best_epoch, "max_length": p.max_length,
        "truncated": {s: truncation(dd[s], tokenizer, spec, p.max_length) for s in ("valid", "test")},
        "resumed_from_epoch": result.resumed_from_epoch,  # > 0: wall_seconds covers the last attempt only
        "train_seconds": result.train_seconds, "logits_seconds": logits_seconds,
        "wall_seconds": time.perf_counter() - started, "threads": threads, "device": device_name(device),
        "history": result.history, "params": asdict(p), "environment": rundir.environment(),
    }
    rundir.write_json(out / rundir.METRICS, metrics)
    return RunResult(metrics, result.history, out)


def backfill_predictions(run_dir: str | os.PathLike) -> bool:
    """Write predictions.json into a finished teacher run from before teachers wrote one: its test predictions from
    its cached test logits (the teacher runs once more if that cache is gone). It is written only if it reproduces
    the test F1 in the run's metrics.json; False (and nothing written) if not, or if its test split cannot be read
    here."""
    run_dir = Path(run_dir)
    target = run_dir / rundir.PREDICTIONS
    if target.is_file():
        return True
    metrics = rundir.read_json(run_dir / rundir.METRICS)
    settings = metrics.get("params") or {}
    spec = data.get_spec(settings.get("dataset") or metrics["dataset"])
    try:
        test = data.load_split(spec, "test", settings.get("data_dir") or None)
    except (OSError, KdExamError) as err:
        log.warning("no test predictions for %s: its test split is not readable here (%s)", run_dir, err)
        return False
    gold = gold_labels(test, spec)
    pred = predictions(Teacher.load(run_dir).logits(spec, "test", test), fallback_label(spec))
    if abs(score_ids(spec, gold, pred)["f1"] - metrics["f1"]) > 1e-9:
        log.warning("no test predictions for %s: its cached test logits do not give its recorded test F1", run_dir)
        return False
    rundir.write_json(target, prediction_record(spec, gold, pred))
    return True


def _finetuned_model(name: str) -> str:
    """fine_tune: false takes a model as it is: a local folder or a hub id, never a base to be trained."""
    if name in (OFFLINE_TEACHER, TINY_RANDOM):
        raise ConfigError(f"fine_tune: false takes a teacher already fine-tuned on this task (a folder or hub id), "
                          f"not {name!r}, which is a base model to fine-tune; set fine_tune: true.")
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if _offline() or name.startswith((".", "/", "~")):
        raise ConfigError(f"base model {name!r} is not a local folder" + (" and HF_HUB_OFFLINE=1 forbids the hub"
                                                                          if _offline() else "") + ".")
    return name


def _pooling_record(model: models.BertTaskModel, spec: data.DatasetSpec, word_position: str = "first") -> str:
    """What the head reads, for the record: a tagging head reads every word, whatever `pooling` says."""
    if not spec.is_tagging:
        return model.pooling
    return "words (tagging)" if word_position == "first" else f"words (tagging, {word_position} sub-word)"
