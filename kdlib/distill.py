"""Distil one student on one dataset (notebooks/02_distill, and the ablations 03-05): from the teacher's cached
logits on a transfer set, or from labels alone (loss "ce").

`run_distill` reads the dataset and its transfer set (kdlib.augment), builds the student's inputs (words with a
vocabulary and in-domain embeddings, or the teacher's sub-words), trains with kdlib.train, scores the student with
IndoNLU's metric and writes its run folder: model/, metrics.json and predictions.json (test gold and predictions,
for kdlib.stats's paired tests). `done.json` is left to the notebook's last cell.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, fields
from pathlib import Path

import torch

from kdlib import augment, data, embeddings, models, progress, rundir
from kdlib.errors import ConfigError
from kdlib.params import AblationParams, DistillParams, get_student, variant_name
from kdlib.teachers import RunResult, Teacher, gold_labels
from kdlib.train import (
    Collator,
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


def run_distill(p: DistillParams) -> RunResult:
    """Train one student on one dataset: from the teacher's cached logits, or from labels alone (loss "ce").

    An AblationParams also sets the student's initial word embeddings and its transfer set (see kdlib.augment).
    """
    from transformers import AutoTokenizer

    started = time.perf_counter()
    if not isinstance(p, AblationParams):
        p = AblationParams(**{f.name: getattr(p, f.name) for f in fields(p)})
    spec = data.get_spec(p.dataset)
    student = get_student(p.student)
    threads = set_threads(p.threads)
    device = resolve_device(p.device)
    set_seed(p.seed)
    out, teacher = Path(p.out_dir), Teacher.load(p.teacher_dir, dataset=spec.key)
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
        tokenizer = AutoTokenizer.from_pretrained(student_tokenizer_dir(p.student_options, teacher.model_dir))
        encode = lambda ds: teacher.features(ds, spec, tokenizer)  # noqa: E731
        collator = Collator(pad_id=tokenizer.pad_token_id)
        student_extra = augment.replace_mask(transfer.extra, spec, tokenizer.unk_token)
    feats = {"train": encode(train_ds), "valid": encode(dd["valid"]), "test": encode(dd["test"])}
    extra_feats = encode(augment.as_dataset(student_extra)) if student_extra else []
    if vocab is None:  # the pieces the student will ever train on: its embedding rows under pieces: train
        used = {i for f in [*feats["train"], *extra_feats] for i in f["input_ids"]}
        model = models.build_student(p.student, spec, tokenizer=tokenizer, used_ids=used,
                                     teacher_model_dir=teacher.model_dir, **p.student_options)
    if p.loss != "ce":  # a no-KD run never touches the teacher's logits
        for f, logits in zip(feats["train"], teacher.train_logits(spec, dd["train"], train_idx,
                                                                  cache_dir=p.cache_dir, device=p.device)):
            f["teacher_logits"] = logits
        if transfer.extra:
            teacher_extra = teacher.transfer_logits(spec, transfer.name, transfer.extra, cache_dir=p.cache_dir,
                                                    device=p.device)
            for f, logits in zip(extra_feats, teacher_extra, strict=True):
                f["teacher_logits"] = logits
    feats["train"] += extra_feats

    lr = p.lr if p.lr is not None else student.lr_for(p.student_options)
    cfg = TrainConfig(epochs=p.epochs, lr=lr, batch_size=p.batch_size, patience=p.patience, loss=p.loss,
                      alpha=p.alpha, temperature=p.temperature, seed=p.seed, min_epochs=p.min_epochs)
    result = fit(model, feats["train"], feats["valid"], gold_labels(dd["valid"], spec), spec, cfg, out / "work",
                 collator, device=device, progress=progress.writer(out, what=p.student))
    preds = {s: predictions(predict_logits(model, feats[s], collator), fallback_label(spec)) for s in ("valid", "test")}
    scores = {s: score_ids(spec, gold_labels(dd[s], spec), preds[s]) for s in ("valid", "test")}
    rundir.write_json(out / rundir.PREDICTIONS, prediction_record(spec, gold_labels(dd["test"], spec), preds["test"]))
    model.save_pretrained(out / "model")
    if vocab is not None:
        vocab.save(out / "model" / "vocab.json")
    metrics = {
        "stage": p.stage, "dataset": spec.key, "shape": spec.shape, "model": p.student,
        "variant": p.variant or variant_name(p.loss, p.temperature, p.alpha),
        "seed": p.seed,
        "loss": p.loss, "alpha": p.alpha, "temperature": p.temperature, "kd": p.loss != "ce",
        "metric": spec.metric, "f1": scores["test"]["f1"], "valid": scores["valid"], "test": scores["test"],
        "teacher_f1": teacher.metrics.get("f1"), "parameters": models.count_parameters(model),
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


def _word_embeddings(p: AblationParams, spec: data.DatasetSpec, vocab: data.Vocab, train_texts: list[list[str]],
                     test_ds, out: Path) -> tuple[dict, dict]:
    """The student options that set a word student's initial embeddings, and their coverage report."""
    options = dict(p.student_options)
    if p.freeze_embeddings is not None:
        options["freeze_embeddings"] = p.freeze_embeddings
    info = {"source": embeddings.source_name(p.embedding), "freeze": bool(options.get("freeze_embeddings", False))}
    if p.embedding == "random":
        return options, info
    dim = int(options.get("emb_dim", get_student(p.student).defaults["emb_dim"]))
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


def student_tokenizer_dir(student_options: dict, teacher_model_dir: Path) -> Path:
    """A BERT student reads the teacher's sub-words, unless its pretrained init folder brings its own tokenizer
    (Google's miniatures do): the teacher's logits are per class or per word, so the two need not share one."""
    init = (student_options or {}).get("init", "random")
    folder = Path(str(init)).expanduser()
    if init != "random" and folder.is_dir() and any((folder / f).exists() for f in rundir.TOKENIZER_FILES):
        return folder
    return teacher_model_dir
