"""Transfer sets: the train split plus unlabelled examples the teacher labels once, for the student to learn from.

Two sources of extra examples:

- **Tang et al. (2019)'s rules** applied to the train examples. Each word, with probability `p_mask`, becomes the
  mask word (the teacher reads its own mask token there, the student its UNK); else with probability `p_pos` it is
  replaced by a word of the same part of speech, drawn from that tag's unigram distribution in a POS lexicon built
  from the POSP or BaPOS training tags. Then, with probability `p_ng`, only an n-gram (n uniform in 1..`max_ng`)
  of the example is kept. `n_iter` samples per example; duplicates (and copies of train examples) are dropped.
  Tagging tasks get label-preserving edits only, so their gold tags stay valid: on POS datasets any word may be
  masked or replaced by a word of its own gold tag; elsewhere only words tagged `O` are edited; an n-gram is kept
  only when it cuts no chunk; FacQA's question is never edited and its passage never cut. Sentence pairs follow
  Tang et al.'s own pair script (castorini/d-bert, `augment_paired_data.py`): two times in three one sentence is
  edited (either, at even odds), else both; no n-gram is cut from either, since a pair whose side is a 1-5 word
  scrap is no longer the task (on WReTE such pairs made the teacher's labels of the set 76% "not entailed" against
  38% on the train split).
- **Unlabelled pools**: the text of the other IndoNLU datasets' train splits, or a user text file (one text per
  line), minus every text that is also a valid/test text of the target dataset.

Extra examples carry no classification label (IGNORE_INDEX); tagging examples from the rules keep their gold tags,
pool examples have none. The teacher's logits on the extra examples come from the content-addressed cache
(`kdlib.teachers.Teacher.transfer_logits`), so each transfer set is labelled once, whatever number of seeds reads it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from kdlib import data, params, textio
from kdlib.data import IGNORE_INDEX, DatasetSpec
from kdlib.errors import ConfigError

log = logging.getLogger(__name__)

# One \w+ token, so data.word_tokenize keeps it whole; never in a vocabulary, so word students read it as UNK.
MASK_WORD = "__mask__"
POS_DATASETS, POOLS, KINDS = params.POS_DATASETS, params.POOLS, params.TRANSFER_KINDS  # a pool: text, not rules
PREVIEW = 5  # extra examples kept in the run's metrics, to show what the student read
PAIR_ONE_SIDE = 2 / 3  # Tang et al.'s pair script: the chance that only one sentence of a pair is edited


@dataclass(frozen=True)
class TangRules:
    """Tang et al. (2019)'s augmentation probabilities (their defaults: 0.1, 0.1, 0.25, n-grams up to 5)."""

    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ng: float = 0.25
    max_ng: int = 5

    def __post_init__(self) -> None:
        for name in ("p_mask", "p_pos", "p_ng"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}.")
        if self.p_mask + self.p_pos > 1.0:
            raise ConfigError(f"p_mask + p_pos must be at most 1 (one edit per word), got {self.p_mask} + "
                              f"{self.p_pos}.")
        if self.max_ng < 1:
            raise ConfigError(f"max_ng must be at least 1, got {self.max_ng}.")


# ----------------------------------------------------------------------------------------------------------------
# The POS lexicon

def _bare_tag(tag: str) -> str:
    """'B-NNP' / 'I-NNP' -> 'NNP': BaPOS marks multi-word units with I-, the part of speech is the same."""
    return tag.split("-", 1)[1] if tag[:2] in ("B-", "I-") else tag


@dataclass
class PosLexicon:
    """Each word's most frequent tag, and per tag its words' unigram distribution (surface forms as seen)."""

    word_tag: dict[str, str]  # lower-cased word -> its most frequent tag
    words: dict[str, list[str]]  # tag -> surface forms
    cumulative: dict[str, np.ndarray] = field(repr=False)  # tag -> cumulative unigram probabilities

    @classmethod
    def build(cls, sentences: Iterable[tuple[Sequence[str], Sequence[str]]]) -> PosLexicon:
        """From (tokens, tag names) sentences; tags lose their B-/I- prefix."""
        per_word: dict[str, Counter] = {}
        per_tag: dict[str, Counter] = {}
        for tokens, tags in sentences:
            for word, tag in zip(tokens, tags):
                tag = _bare_tag(tag)
                per_word.setdefault(word.lower(), Counter())[tag] += 1
                per_tag.setdefault(tag, Counter())[word] += 1
        # ties broken by tag name, so the lexicon does not depend on the order of the file
        word_tag = {w: min(c, key=lambda t: (-c[t], t)) for w, c in per_word.items()}
        words, cumulative = {}, {}
        for tag, counts in per_tag.items():
            ranked = sorted(counts, key=lambda w: (-counts[w], w))
            freq = np.array([counts[w] for w in ranked], dtype=np.float64)
            words[tag], cumulative[tag] = ranked, np.cumsum(freq) / freq.sum()
        return cls(word_tag, words, cumulative)

    def tag(self, word: str) -> str | None:
        return self.word_tag.get(word.lower())

    def sample(self, tag: str, rng: np.random.Generator) -> str | None:
        """A word of `tag` drawn by its unigram frequency; None for a tag the lexicon has never seen."""
        if tag not in self.words:
            return None
        i = int(np.searchsorted(self.cumulative[tag], rng.random(), side="right"))
        return self.words[tag][min(i, len(self.words[tag]) - 1)]


def pos_lexicon(source: str, data_dir: str | os.PathLike | None = None) -> PosLexicon:
    """The lexicon of a POS dataset's train split ("posp" or "bapos"), or of a CoNLL file of POS tags (your own
    language's, named by your dataset's pos_lexicon:)."""
    if Path(source).is_absolute() and Path(source).is_file():
        from kdlib import owndata

        return PosLexicon.build((r["tokens"], r["tags"]) for _, r in owndata.raw_records(
            {"task": "tagging", "train": source}, "train"))
    if source not in POS_DATASETS:
        raise ConfigError(f"a POS lexicon is built from one of {', '.join(POS_DATASETS)}, not {source!r}.")
    spec = data.get_spec(source)
    records = data.read_records(spec, "train", data_dir)
    return PosLexicon.build((r["tokens"], [spec.labels[t] for t in r["tags"]]) for r in records)


# ----------------------------------------------------------------------------------------------------------------
# Tang et al.'s rules on one word sequence

def edit_words(words: Sequence[str], rules: TangRules, lexicon: PosLexicon, rng: np.random.Generator, *,
               editable: Sequence[bool] | None = None, tags: Sequence[str] | None = None) -> list[str]:
    """Masking and POS-guided replacement, one draw per word (the two are exclusive, as in Tang et al.).

    editable: per word, whether it may change (tagging: label-preserving positions); default all.
    tags: per word, the tag to replace it within (POS datasets: the gold tag); default the lexicon's tag.
    A word the lexicon does not know is left as it is when drawn for replacement.
    """
    out = list(words)
    for i, word in enumerate(words):
        x = rng.random()
        if editable is not None and not editable[i]:
            continue
        if x < rules.p_mask:
            out[i] = MASK_WORD
        elif x < rules.p_mask + rules.p_pos:
            tag = tags[i] if tags is not None else lexicon.tag(word)
            replacement = lexicon.sample(tag, rng) if tag is not None else None
            if replacement is not None:
                out[i] = replacement
    return out


def ngram_window(n_words: int, rules: TangRules, rng: np.random.Generator) -> tuple[int, int] | None:
    """With probability p_ng, a window (start, end) of n words, n uniform in 1..max_ng; None keeps everything."""
    if rng.random() >= rules.p_ng or n_words == 0:
        return None
    n = min(int(rng.integers(1, rules.max_ng + 1)), n_words)
    start = int(rng.integers(0, n_words - n + 1))
    return start, start + n


def _is_inside(tag: str) -> bool:
    return tag == "I" or tag.startswith("I-")


def _cuts_no_chunk(tags: Sequence[str], start: int, end: int) -> bool:
    """A window is label-preserving when no chunk crosses its edges."""
    return not _is_inside(tags[start]) and (end >= len(tags) or not _is_inside(tags[end]))


def _augment_text(text: str, rules, lexicon, rng, *, cut: bool = True) -> str:
    words = edit_words(data.word_tokenize(text), rules, lexicon, rng)
    window = ngram_window(len(words), rules, rng) if cut else None
    return " ".join(words[slice(*window)] if window else words)


def _augment_pair(example: dict, rules, lexicon, rng) -> dict:
    """Tang et al.'s pair rule: one sentence edited (PAIR_ONE_SIDE of the time, either at even odds) or both."""
    both, first = rng.random() >= PAIR_ONE_SIDE, rng.random() < 0.5
    a, b = example["text_a"], example["text_b"]
    if both or first:
        a = _augment_text(a, rules, lexicon, rng, cut=False)
    if both or not first:
        b = _augment_text(b, rules, lexicon, rng, cut=False)
    return {"text_a": a, "text_b": b, "label": IGNORE_INDEX}


def augment_example(example: dict, spec: DatasetSpec, rules: TangRules, lexicon: PosLexicon,
                    rng: np.random.Generator) -> dict:
    """One synthetic example from a train example; classification labels become IGNORE_INDEX."""
    if spec.shape in ("single", "aspect"):
        out = {"text": _augment_text(example["text"], rules, lexicon, rng)}
        return {**out, **_no_label(spec)}
    if spec.shape == "pair":
        return _augment_pair(example, rules, lexicon, rng)
    tokens, tag_ids = list(example["tokens"]), list(example["tags"])
    tags = [spec.labels[t] for t in tag_ids]
    if spec.key in POS_DATASETS:
        words = edit_words(tokens, rules, lexicon, rng, tags=[_bare_tag(t) for t in tags])
    else:
        words = edit_words(tokens, rules, lexicon, rng, editable=[t == "O" for t in tags])
    if spec.shape == "qa":
        return {"question": list(example["question"]), "tokens": words, "tags": tag_ids}
    window = ngram_window(len(words), rules, rng)
    if window and _cuts_no_chunk(tags, *window):
        words, tag_ids = words[slice(*window)], tag_ids[slice(*window)]
    return {"tokens": words, "tags": tag_ids}


def _no_label(spec: DatasetSpec) -> dict:
    if spec.shape == "aspect":
        return {"labels": [IGNORE_INDEX] * len(spec.aspects)}
    return {"label": IGNORE_INDEX}


def _content(example: dict, spec: DatasetSpec) -> str:
    """What the student reads (for duplicate removal): the words, not the labels."""
    return json.dumps(data.example_words(example, spec), ensure_ascii=False)


def tang_examples(train: Sequence[dict], spec: DatasetSpec, rules: TangRules, lexicon: PosLexicon, n_iter: int,
                  rng: np.random.Generator) -> tuple[list[dict], int]:
    """n_iter distinct synthetic examples per train example (fewer when the draws keep repeating).

    Up to 2 * n_iter draws are made per example; a draw equal to a train example or to an earlier draw is a
    duplicate and dropped. Returns the examples and the number of duplicates dropped.
    """
    seen = {_content(ex, spec) for ex in train}
    out, duplicates = [], 0
    for example in train:
        made = 0
        for _ in range(2 * n_iter):
            if made == n_iter:
                break
            new = augment_example(example, spec, rules, lexicon, rng)
            key = _content(new, spec)
            if key in seen or not data.example_words(new, spec):
                duplicates += 1
                continue
            seen.add(key)
            out.append(new)
            made += 1
    return out, duplicates


# ----------------------------------------------------------------------------------------------------------------
# Unlabelled pools

def normalise(words: Sequence[str]) -> str:
    return " ".join(w.lower() for w in words)


def record_texts(record: dict, spec: DatasetSpec) -> list[list[str]]:
    """The word sequences of one record that can stand alone as a text (pairs give two, QA its passage)."""
    if spec.shape == "pair":
        return [data.word_tokenize(record["text_a"]), data.word_tokenize(record["text_b"])]
    if spec.shape == "qa":
        return [list(record["tokens"])]
    return [data.example_words(record, spec)]


def eval_texts(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> set[str]:
    """The normalised texts of a dataset's valid and test splits: a pool must never contain them."""
    return {normalise(words) for split in ("valid", "test") for r in data.read_records(spec, split, data_dir)
            for words in record_texts(r, spec)}


def pool_texts(source: str, spec: DatasetSpec, data_dir: str | os.PathLike | None = None,
               exclude: set[str] = frozenset()) -> tuple[list[list[str]], int]:
    """Distinct texts (as words) of a pool, minus `exclude` (normalised); returns them and how many were excluded.

    "indonlu": the train splits of every IndoNLU dataset except `spec`'s own; anything else: a UTF-8 text file
    with one text per line.
    """
    if source == "indonlu":
        texts = (words for other in data.DATASETS.values() if other.key != spec.key
                 for r in data.read_records(other, "train", data_dir) for words in record_texts(r, other))
    else:
        path = Path(source).expanduser()
        try:
            lines = textio.read_text(path, hint="a pool file is UTF-8 text, one text per line").splitlines()
        except OSError as e:
            raise ConfigError(f"transfer {source!r} is neither one of {', '.join(KINDS)} nor a readable text file "
                              f"({e.strerror}).") from None
        texts = (data.word_tokenize(line) for line in lines)
    out, seen, excluded = [], set(), 0
    for words in texts:
        key = normalise(words)
        if not words or key in seen:
            continue
        seen.add(key)
        if key in exclude:
            excluded += 1
            continue
        out.append(words)
    return out, excluded


def pool_examples(texts: Sequence[Sequence[str]], spec: DatasetSpec, n: int, rng: np.random.Generator) -> list[dict]:
    """n unlabelled examples from the pool's texts, drawn without replacement (pairs use two texts each)."""
    if spec.shape == "qa":
        raise ConfigError("FacQA examples need a question for each passage; unlabelled pools have none. Use the "
                          "Tang et al. rules (transfer: tang) for FacQA.")
    per_example = 2 if spec.shape == "pair" else 1
    n = min(n, len(texts) // per_example)
    picked = [list(texts[i]) for i in rng.permutation(len(texts))[:n * per_example]]
    if spec.shape == "pair":
        return [{"text_a": " ".join(a), "text_b": " ".join(b), "label": IGNORE_INDEX}
                for a, b in zip(picked[0::2], picked[1::2])]
    if spec.is_tagging:
        return [{"tokens": words, "tags": [IGNORE_INDEX] * len(words)} for words in picked]
    return [{"text": " ".join(words), **_no_label(spec)} for words in picked]


# ----------------------------------------------------------------------------------------------------------------
# The transfer set

@dataclass(frozen=True)
class TransferSet:
    """The student's training inputs: the (capped) train split and the extra examples, kept apart."""

    kind: str  # "train", "tang", "indonlu" or a file path
    size: float  # requested size as a multiple of the train split
    train: datasets.Dataset
    extra: list[dict]
    info: dict

    @property
    def name(self) -> str:
        return transfer_name(self.kind, self.size)

    def __len__(self) -> int:
        return len(self.train) + len(self.extra)


def transfer_name(kind: str, size: float) -> str:
    """A folder-safe name: 'tang-x5', 'indonlu-x10', a file's stem for a user pool."""
    base = kind if kind in KINDS else "file-" + re.sub(r"[^\w.-]+", "_", Path(kind).stem)
    return f"{base}-x{size:g}"


def build_transfer_set(kind: str, size: float, train: datasets.Dataset, spec: DatasetSpec, *,
                       rules: TangRules = TangRules(), seed: int = 0, data_dir: str | os.PathLike | None = None,
                       lexicon: str = "posp") -> TransferSet:
    """The train split plus round((size - 1) * len(train)) extra examples from `kind` (deterministic per seed).

    `lexicon` names the POS dataset whose tags guide word replacement ("posp" or "bapos"); a POS dataset uses its
    own. Fewer extra examples come back when the rules keep repeating themselves or the pool runs out; `info`
    says how many.
    """
    if kind not in KINDS and not Path(kind).expanduser().is_file():
        raise ConfigError(f"transfer {kind!r} is neither one of {', '.join(KINDS)} nor a text file.")
    if size < 1:
        raise ConfigError(f"transfer_size is a multiple of the train split and must be >= 1, got {size}.")
    if kind == "train" and size != 1:
        raise ConfigError(f"transfer 'train' is the train split alone (transfer_size 1), got transfer_size {size}; "
                          "choose tang, indonlu or a text file to grow it.")
    n = len(train)
    wanted = round((size - 1) * n)
    rng = np.random.default_rng(seed)
    info: dict = {"kind": kind, "size": size, "seed": seed, "train_examples": n, "extra_requested": wanted}
    extra: list[dict] = []
    if kind == "tang" and wanted:
        records = train.to_list()
        source, note = _lexicon_source(spec, lexicon, data_dir)
        if source is None:  # no POS lexicon of this dataset's language: masking and n-grams only
            rules, info["pos_rule"] = dataclasses.replace(rules, p_pos=0.0), note
            log.warning("%s: %s", spec.key, note)
        lexicon_words = pos_lexicon(source, data_dir) if source else PosLexicon.build([])
        extra, info["duplicates_dropped"] = tang_examples(records, spec, rules, lexicon_words,
                                                          math.ceil(wanted / n), rng)
        if len(extra) > wanted:  # ceil() overshoots: keep a seeded random subset, in generation order
            extra = [extra[i] for i in sorted(rng.permutation(len(extra))[:wanted])]
        info.update(rules=vars(rules).copy(), lexicon=source)
        if spec.shape == "pair":
            info["pair_rule"] = f"one sentence edited {PAIR_ONE_SIDE:.2f} of the time, both otherwise; never cut"
    elif kind != "train" and wanted:
        exclude = eval_texts(spec, data_dir) | {normalise(w) for r in train.to_list()
                                                for w in record_texts(r, spec)}
        texts, info["pool_excluded"] = pool_texts(kind, spec, data_dir, exclude)
        info["pool_texts"] = len(texts)
        extra = pool_examples(texts, spec, wanted, rng)
    info["extra_examples"] = len(extra)
    info["preview"] = [data.example_words(ex, spec) for ex in extra[:PREVIEW]]
    return TransferSet(kind, size, train, extra, info)


def _lexicon_source(spec: DatasetSpec, lexicon: str, data_dir) -> tuple[str | None, str]:
    """The POS lexicon guiding the Tang rule's replacements: an IndoNLU dataset reads POSP or BaPOS (Indonesian);
    your own dataset reads its definition's pos_lexicon, if it names one whose files are there."""
    if spec.source is None:
        return (spec.key if spec.key in POS_DATASETS else lexicon), ""
    source = spec.source.get("pos_lexicon")
    if source is None:
        return None, ("the POS-guided replacement of the Tang rule is skipped (p_pos 0): this dataset names no "
                      "pos_lexicon of its language (posp or bapos for Indonesian, or a CoNLL file of POS tags)")
    if source in POS_DATASETS and not data.get_spec(source).path(data.resolve_data_dir(data_dir, must_exist=False),
                                                                 "train").is_file():
        return None, (f"the POS-guided replacement of the Tang rule is skipped (p_pos 0): pos_lexicon {source} "
                      "needs the IndoNLU data folder (--data-dir), which is not there")
    return source, ""


def replace_mask(examples: Sequence[dict], spec: DatasetSpec, token: str) -> list[dict]:
    """The examples with MASK_WORD replaced by `token`: the teacher's mask token, or a BERT student's UNK."""
    def swap(words):
        return [token if w == MASK_WORD else w for w in words]

    out = []
    for ex in examples:
        ex = dict(ex)
        for key in ("text", "text_a", "text_b"):
            if key in ex:
                ex[key] = " ".join(swap(ex[key].split(" "))) if MASK_WORD in ex[key] else ex[key]
        if "tokens" in ex:
            ex["tokens"] = swap(ex["tokens"])
        out.append(ex)
    return out


def as_dataset(examples: Sequence[dict]) -> datasets.Dataset:
    """A plain Dataset of extra examples (no ClassLabel features: their labels are IGNORE_INDEX)."""
    return datasets.Dataset.from_list(list(examples))
