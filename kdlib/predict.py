"""Run an exported student (`kdexam export`) on new text with onnxruntime: no torch, no transformers.

An export folder holds `model.onnx` and `model.int8.onnx`, `export.json` (how inputs are built, the labels, where
the model came from, its parity with the trained model), `labels.json`, the vocabulary (`vocab.json`, word
students) or `tokenizer.json` (BERT students, read with the `tokenizers` library), and `MODEL_CARD.md`.

| task shape | one input                                        | one result                                      |
|------------|--------------------------------------------------|-------------------------------------------------|
| single     | a text                                           | label, probabilities per label                  |
| pair       | (text_a, text_b)                                 | label, probabilities per label                  |
| aspect     | a text                                           | a label and probabilities per aspect            |
| tagging    | a text (split on whitespace) or a list of tokens | tokens, a tag per token, spans                  |
| qa         | (question, passage), each a text or tokens       | passage tokens, a tag per token, answer spans   |

Inputs are encoded exactly as kdlib.data encodes the training examples (kdlib.data and kdlib.metrics are read
for that; neither imports torch, datasets or sklearn at import time), batched, padded and run by onnxruntime.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from kdlib import data, metrics
from kdlib.errors import KdExamError

EXPORT_CONFIG = "export.json"
LABELS_FILE = "labels.json"
MODEL_FILES = {False: "model.onnx", True: "model.int8.onnx"}  # by int8
VOCAB_FILE = "vocab.json"  # word students: kdlib.data.Vocab's file
TOKENIZER_FILE = "tokenizer.json"  # BERT students: a `tokenizers` file
FORMAT_VERSION = 1
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "word_index": -1, "case_ids": 0}  # ids: the pad id


class PredictError(KdExamError):
    """An input a Predictor cannot read, or a folder that is not an export."""


@dataclass(frozen=True)
class ExportConfig:
    """What export.json tells a Predictor: the task, the labels, and how the model's inputs are built."""

    dataset: str
    shape: str
    labels: tuple[str, ...]
    aspects: tuple[str, ...]
    kind: str  # "word" (vocab.json) or "subword" (tokenizer.json)
    inputs: tuple[str, ...]  # the ONNX model's inputs, in order
    pad_id: int
    max_words: int  # word students: words read per input
    max_length: int  # BERT students: sub-words per input, special pieces included
    fallback: int  # the label of a word the model could not see (cut off by max_length): "O" where there is one
    word_position: str = "first"  # BERT students, tagging: the sub-word each word is read at (kdlib.data)

    @property
    def is_tagging(self) -> bool:
        return self.shape in ("tagging", "qa")


def read_config(export_dir: str | os.PathLike) -> dict:
    """export.json of an export folder, or one error saying the folder is not one."""
    path = Path(export_dir) / EXPORT_CONFIG
    if not Path(export_dir).is_dir():
        raise PredictError(f"export folder {export_dir} not found; make one with `kdexam export --study S "
                           "--dataset D --student NAME --out DIR`.")
    if not path.is_file():
        raise PredictError(f"{export_dir} is not a kdexam export (no {EXPORT_CONFIG}); point at a folder written by "
                           "`kdexam export`, or make one with it.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PredictError(f"{path} cannot be read ({e}); export the model again with `kdexam export`.") from None
    if info.get("format") != FORMAT_VERSION:
        raise PredictError(f"{path} has export format {info.get('format')!r}; this kdlib reads format "
                           f"{FORMAT_VERSION}: export the model again with this kdlib.")
    return info


def _config(info: dict) -> ExportConfig:
    names = {f.name for f in fields(ExportConfig)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in info["model"].items() if k in names}
    return ExportConfig(**values)


class Predictor:
    """An export folder ready to label inputs: `Predictor(DIR).predict(["teks ...", ...])`.

    `int8` runs model.int8.onnx; `threads` is onnxruntime's intra-op thread count (0 = its default, every core);
    `batch_size` inputs run at a time (inputs of similar length are batched together, results keep input order).
    """

    def __init__(self, export_dir: str | os.PathLike, *, int8: bool = False, threads: int = 0,
                 batch_size: int = 32):
        if batch_size < 1:
            raise PredictError(f"batch_size must be at least 1, got {batch_size}.")
        self.dir = Path(export_dir)
        self.info = read_config(self.dir)
        self.config = _config(self.info)
        self.batch_size = batch_size
        self.session = _session(self._file(MODEL_FILES[int8]), threads)
        if self.config.kind == "word":
            self.vocab = data.Vocab.load(self._file(VOCAB_FILE))
            self.spec = data.get_spec(self.config.dataset)  # word_features reads its shape
        else:
            self.tokenizer = _tokenizer(self._file(TOKENIZER_FILE), self.config.max_length)

    def _file(self, name: str) -> Path:
        path = self.dir / name
        if not path.is_file():
            raise PredictError(f"{self.dir} lacks {name}, so it is not a complete export; export the model again "
                               "with `kdexam export`.")
        return path

    # ------------------------------------------------------------------------------------------------------------

    def predict(self, inputs: Sequence[Any]) -> list[dict]:
        """One result per input (see the module docstring for what each task shape reads and returns)."""
        examples = [example_of(item, self.config.shape, i) for i, item in enumerate(_inputs(inputs))]
        return [self._result(ex, lg) for ex, lg in zip(examples, self._logits(examples))]

    def logits(self, inputs: Sequence[Any]) -> list[np.ndarray]:
        """Unit-level logits per input: (C,), (A, C), or (words, C) with NaN for words the model could not see."""
        return self._logits([example_of(item, self.config.shape, i) for i, item in enumerate(_inputs(inputs))])

    def labels(self, inputs: Sequence[Any]) -> list:
        """Label ids per input: an id (single, pair), one per aspect, or one per word (tagging), as training does."""
        return [label_ids(lg, self.config.fallback) for lg in self.logits(inputs)]

    # ------------------------------------------------------------------------------------------------------------

    def _logits(self, examples: list[dict]) -> list[np.ndarray]:
        features = self._features(examples)
        order = sorted(range(len(features)), key=lambda i: len(features[i][self.config.inputs[0]]))
        out: list[np.ndarray | None] = [None] * len(features)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            logits = self.session.run(None, self._batch([features[i] for i in chunk]))[0]
            for row, i in enumerate(chunk):
                value = logits[row]
                if self.config.is_tagging:  # padded words off, unseen words NaN (they get the fallback label)
                    index = np.asarray(features[i]["word_index"])
                    value = value[:len(index)].copy()
                    value[index < 0] = np.nan
                out[i] = value
        return out  # type: ignore[return-value]

    def _features(self, examples: list[dict]) -> list[dict]:
        if self.config.kind == "word":
            feats = [data.word_features(ex, self.vocab, self.spec, self.config.max_words) for ex in examples]
            for f in feats:
                f["lengths"] = len(f["word_ids"])
            return feats
        return _subword_features(self.tokenizer, examples, self.config.shape, self.config.word_position)

    def _batch(self, features: list[dict]) -> dict[str, np.ndarray]:
        batch = {}
        for key in self.config.inputs:
            if key == "lengths":
                batch[key] = np.asarray([f[key] for f in features], dtype=np.int64)
                continue
            width = max(len(f[key]) for f in features) or 1
            rows = np.full((len(features), width), PAD_VALUES.get(key, self.config.pad_id), dtype=np.int64)
            for r, f in enumerate(features):
                rows[r, :len(f[key])] = f[key]
            batch[key] = rows
        return batch

    def _result(self, example: dict, logits: np.ndarray) -> dict:
        labels = self.config.labels
        if self.config.is_tagging:
            tags = [labels[i] for i in label_ids(logits, self.config.fallback)]
            tokens = list(example["tokens"])
            spans = [{"type": kind, "start": s, "end": e, "text": " ".join(tokens[s:e])}
                     for s, e, kind in metrics.spans(tags)]
            return {"tokens": tokens, "tags": tags, "spans": spans}
        probs = _softmax(logits)
        if self.config.shape == "aspect":
            return {"labels": {a: labels[int(p.argmax())] for a, p in zip(self.config.aspects, probs)},
                    "probabilities": {a: dict(zip(labels, map(float, p))) for a, p in zip(self.config.aspects, probs)}}
        return {"label": labels[int(probs.argmax())], "probabilities": dict(zip(labels, map(float, probs)))}


# ----------------------------------------------------------------------------------------------------------------
# Inputs: what each task shape reads, as the column dicts kdlib.data encodes

SHAPE_INPUTS = {
    "single": "a text (str)", "aspect": "a text (str)", "pair": "a pair (text_a, text_b) of two texts",
    "tagging": "a text (split on whitespace) or a list of tokens",
    "qa": "a pair (question, passage), each a text or a list of tokens",
}


def _inputs(inputs: Sequence[Any]) -> list:
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Iterable):
        raise PredictError(f"predict takes a list of inputs, got {type(inputs).__name__} {str(inputs)[:40]!r}; "
                           "wrap one input in a list: predict([x]).")
    inputs = list(inputs)
    if not inputs:
        raise PredictError("no inputs to predict: give at least one.")
    return inputs


def example_of(item: Any, shape: str, index: int = 0) -> dict:
    """One input as the columns of its task shape (kdlib.data's), or a PredictError naming input `index`."""
    where = f"input {index + 1}"
    if shape in ("single", "aspect"):
        return {"text": _text(item, shape, where)}
    if shape == "pair":
        first, second = _two(item, shape, where)
        return {"text_a": _text(first, shape, where), "text_b": _text(second, shape, where)}
    if shape == "tagging":
        return {"tokens": _tokens(item, shape, where)}
    if isinstance(item, dict) and set(item) == {"question", "passage"}:
        item = (item["question"], item["passage"])
    question, passage = _two(item, shape, where)
    return {"question": _tokens(question, shape, where), "tokens": _tokens(passage, shape, where)}


def _wrong(item: Any, shape: str, where: str) -> PredictError:
    return PredictError(f"{where}: a {shape} model reads {SHAPE_INPUTS[shape]}, got {type(item).__name__} "
                        f"{str(item)[:60]!r}.")


def _text(item: Any, shape: str, where: str) -> str:
    if not isinstance(item, str):
        raise _wrong(item, shape, where)
    if not item.strip():
        raise PredictError(f"{where} is empty: give it some text.")
    return item


def _two(item: Any, shape: str, where: str) -> tuple:
    if isinstance(item, str) or not isinstance(item, (list, tuple)) or len(item) != 2:
        raise _wrong(item, shape, where)
    return tuple(item)


def _tokens(item: Any, shape: str, where: str) -> list[str]:
    tokens = item.split() if isinstance(item, str) else item
    if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) and t.strip() for t in tokens):
        raise _wrong(item, shape, where)
    if not tokens:
        raise PredictError(f"{where} is empty: give it at least one token.")
    return list(tokens)


def read_lines(lines: Iterable[str], shape: str, source: str = "input") -> list:
    """Inputs from text lines, one per line (blank lines skipped): pair and QA as two tab-separated fields,
    tagging whitespace-tokenised or a JSON list of tokens, QA also a JSON [question, passage] or
    {"question": ..., "passage": ...}. Errors name the line."""
    items = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        item: Any = line
        if shape in ("tagging", "qa") and line.lstrip()[:1] in "[{":
            try:
                item = json.loads(line)
            except ValueError as e:
                raise PredictError(f"{source}:{number}: not valid JSON ({e}); give a JSON list of tokens or a "
                                   "whitespace-tokenised line.") from None
        elif shape in ("pair", "qa"):
            item = line.split("\t")
            if len(item) != 2:
                raise PredictError(f"{source}:{number}: a {shape} model reads two texts separated by one tab, got "
                                   f"{len(item)} field(s): {line[:60]!r}.")
        try:
            example_of(item, shape)
        except PredictError as e:
            raise PredictError(f"{source}:{number}: {str(e).split(': ', 1)[1]}") from None
        items.append(item)
    if not items:
        raise PredictError(f"no input in {source}: give one input per line ({SHAPE_INPUTS[shape]}).")
    return items


# ----------------------------------------------------------------------------------------------------------------
# Sub-words, sessions, numbers

def _tokenizer(path: Path, max_length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()  # batches are padded here, to the longest of each
    # truncation=True in kdlib.data.encode_for_bert: longest_first, cutting pairs from the longer input
    tokenizer.enable_truncation(max_length, strategy="longest_first")
    return tokenizer


def _subword_features(tokenizer, examples: list[dict], shape: str, word_position: str = "first") -> list[dict]:
    """input_ids, attention_mask, token_type_ids (and word_index) as kdlib.data.encode_for_bert makes them."""
    if shape in ("single", "aspect"):
        encodings = tokenizer.encode_batch([ex["text"] for ex in examples])
    elif shape == "pair":
        encodings = tokenizer.encode_batch([(ex["text_a"], ex["text_b"]) for ex in examples])
    elif shape == "tagging":
        encodings = tokenizer.encode_batch([ex["tokens"] for ex in examples], is_pretokenized=True)
    else:
        encodings = tokenizer.encode_batch([(ex["question"], ex["tokens"]) for ex in examples], is_pretokenized=True)
    skip = data.lone_space_id(tokenizer) if word_position == "first-content" else None
    feats = []
    for ex, enc in zip(examples, encodings):
        f = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
        if shape in ("tagging", "qa"):
            qa = shape == "qa"
            f["word_index"] = data.first_subword_index(enc.word_ids, len(ex["tokens"]),
                                                       enc.sequence_ids if qa else None, 1 if qa else 0,
                                                       enc.ids, skip)
        feats.append(f)
    return feats


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(0, threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise PredictError(f"{path} cannot be loaded by onnxruntime ({e}); export the model again.") from None


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def label_ids(logits: np.ndarray, fallback: int):
    """Arg-max ids as kdlib.train.predictions: a word without logits (NaN) gets `fallback`."""
    ids = np.where(np.isnan(logits).any(axis=-1), fallback, np.nan_to_num(logits, nan=-np.inf).argmax(axis=-1))
    return ids.tolist()


def format_table(items: Sequence[Any], results: Sequence[dict], shape: str) -> str:
    """One line per input for reading: the label (or labels, or token/TAG pairs), then the input."""
    lines = []
    for item, r in zip(items, results):
        if shape in ("tagging", "qa"):
            lines.append(" ".join(f"{t}/{tag}" for t, tag in zip(r["tokens"], r["tags"])))
        elif shape == "aspect":
            lines.append(" ".join(f"{a}={label}" for a, label in r["labels"].items()) + f"\t{item}")
        else:
            text = "\t".join(item) if isinstance(item, (list, tuple)) else item
            lines.append(f"{r['label']}\t{r['probabilities'][r['label']]:.3f}\t{text}")
    return "\n".join(lines)
