"""The 12 IndoNLU datasets: a registry, strict loaders to `datasets.DatasetDict`, vocabularies, sub-word alignment.

Every dataset is read into one of five task shapes, each with fixed columns:

| shape   | columns                            | datasets                                   |
|---------|------------------------------------|--------------------------------------------|
| single  | text, label                        | EmoT, SmSA                                 |
| pair    | text_a, text_b, label              | WReTE                                      |
| aspect  | text, labels (one per aspect)      | CASA, HoASA                                |
| tagging | tokens, tags                       | POSP, BaPOS, TermA, KEPS, NERGrit, NERP    |
| qa      | question, tokens, tags             | FacQA (tags on the passage tokens)         |

Label ids follow IndoNLU's own LABEL2INDEX order, so ids mean the same thing as in IndoNLU's code.
"""
from __future__ import annotations

import ast
import csv
import json
import logging
import os
import re
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdlib import textio
from kdlib.errors import ConfigError, DataError, KdExamError, unknown_name
from kdlib.params import WORD_POSITIONS

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # annotations only: the library itself is imported on first use (see __getattr__)
    import datasets


def __getattr__(name: str):
    """`data.datasets` on first use: kdlib.predict reads words and vocabularies from here in service images
    without the datasets library (and its pandas/pyarrow import, a second of every cold start)."""
    if name == "datasets":
        import datasets

        return datasets
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

SPLITS = ("train", "valid", "test")
SHAPES = ("single", "pair", "aspect", "tagging", "qa")
CLASSIFICATION_SHAPES = ("single", "pair", "aspect")
DATA_DIR_ENV = "KDEXAM_DATA_DIR"
DEFAULT_DATA_DIR = Path("data/indonlu")
# The IndoNLU commit our copy in ../shared was taken from; downloads pin it so every user scores the same files.
INDONLU_COMMIT = "ce728f6926a36174b9923dfe49d6a6839b6e9bb7"
INDONLU_RAW_URL = f"https://raw.githubusercontent.com/IndoNLP/indonlu/{INDONLU_COMMIT}/dataset"


@dataclass(frozen=True)
class DatasetSpec:
    """What we know about one IndoNLU dataset before reading it."""

    key: str  # short name used everywhere (params files, CLI, output folders)
    name: str  # the paper's name
    folder: str  # IndoNLU's folder name
    shape: str  # one of SHAPES
    ext: str  # file extension of {split}_preprocess.{ext}
    header: tuple[str, ...]  # expected CSV header; () for headerless files
    labels: tuple[str, ...]  # label set in IndoNLU's index order
    aspects: tuple[str, ...] = ()  # aspect columns of multi-aspect datasets
    metric: str = "macro_f1"  # key of kdlib.metrics.METRICS
    # Your own dataset (kdlib.owndata): its checked definition, which is also how runs receive it; None: IndoNLU's
    source: dict | None = field(default=None, hash=False, compare=False)

    @property
    def is_tagging(self) -> bool:
        return self.shape in ("tagging", "qa")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def param(self) -> str | dict:
        """What a run's `dataset` parameter holds: the IndoNLU key, or the definition of your own dataset."""
        return self.key if self.source is None else self.source

    def path(self, data_dir: Path, split: str) -> Path:
        return data_dir / self.folder / f"{split}_preprocess.{self.ext}"


_POSP = ("B-PPO", "B-KUA", "B-ADV", "B-PRN", "B-VBI", "B-PAR", "B-VBP", "B-NNP", "B-UNS", "B-VBT", "B-VBL",
         "B-NNO", "B-ADJ", "B-PRR", "B-PRK", "B-CCN", "B-$$$", "B-ADK", "B-ART", "B-CSN", "B-NUM", "B-SYM",
         "B-INT", "B-NEG", "B-PRI", "B-VBE")
_BAPOS = ("B-PR", "B-CD", "I-PR", "B-SYM", "B-JJ", "B-DT", "I-UH", "I-NND", "B-SC", "I-WH", "I-IN", "I-NNP",
          "I-VB", "B-IN", "B-NND", "I-CD", "I-JJ", "I-X", "B-OD", "B-RP", "B-RB", "B-NNP", "I-RB", "I-Z", "B-CC",
          "B-NEG", "B-VB", "B-NN", "B-MD", "B-UH", "I-NN", "B-PRP", "I-SC", "B-Z", "I-PRP", "I-OD", "I-SYM",
          "B-WH", "B-FW", "I-CC", "B-X")

DATASETS: dict[str, DatasetSpec] = {s.key: s for s in (
    DatasetSpec("emot", "EmoT", "emot_emotion-twitter", "single", "csv", ("label", "tweet"),
                ("sadness", "anger", "love", "fear", "happy")),
    DatasetSpec("smsa", "SmSA", "smsa_doc-sentiment-prosa", "single", "tsv", (),
                ("positive", "neutral", "negative")),
    DatasetSpec("casa", "CASA", "casa_absa-prosa", "aspect", "csv",
                ("sentence", "fuel", "machine", "others", "part", "price", "service"),
                ("negative", "neutral", "positive"),
                aspects=("fuel", "machine", "others", "part", "price", "service"), metric="aspect_macro_f1"),
    DatasetSpec("hoasa", "HoASA", "hoasa_absa-airy", "aspect", "csv",
                ("review", "ac", "air_panas", "bau", "general", "kebersihan", "linen", "service", "sunrise_meal",
                 "tv", "wifi"),
                ("neg", "neut", "pos", "neg_pos"),
                aspects=("ac", "air_panas", "bau", "general", "kebersihan", "linen", "service", "sunrise_meal",
                         "tv", "wifi"), metric="aspect_macro_f1"),
    DatasetSpec("wrete", "WReTE", "wrete_entailment-ui", "pair", "csv", ("sent_A", "sent_B", "category", "label"),
                ("NotEntail", "Entail_or_Paraphrase")),
    DatasetSpec("posp", "POSP", "posp_pos-prosa", "tagging", "txt", (), _POSP, metric="chunk_f1_macro"),
    DatasetSpec("bapos", "BaPOS", "bapos_pos-idn", "tagging", "txt", (), _BAPOS, metric="chunk_f1_macro"),
    DatasetSpec("terma", "TermA", "terma_term-extraction-airy", "tagging", "txt", (),
                ("I-SENTIMENT", "O", "I-ASPECT", "B-SENTIMENT", "B-ASPECT"), metric="chunk_f1_macro"),
    DatasetSpec("keps", "KEPS", "keps_keyword-extraction-prosa", "tagging", "txt", (), ("O", "B", "I"),
                metric="chunk_f1_macro"),
    DatasetSpec("nergrit", "NERGrit", "nergrit_ner-grit", "tagging", "txt", (),
                ("I-PERSON", "B-ORGANISATION", "I-ORGANISATION", "B-PLACE", "I-PLACE", "O", "B-PERSON"),
                metric="chunk_f1_macro"),
    DatasetSpec("nerp", "NERP", "nerp_ner-prosa", "tagging", "txt", (),
                ("I-PPL", "B-EVT", "B-PLC", "I-IND", "B-IND", "B-FNB", "I-EVT", "B-PPL", "I-PLC", "O", "I-FNB"),
                metric="chunk_f1_macro"),
    DatasetSpec("facqa", "FacQA", "facqa_qa-factoid-itb", "qa", "csv", ("question", "passage", "seq_label"),
                ("O", "B", "I"), metric="chunk_f1_macro"),
)}


def get_spec(key: str | dict | DatasetSpec) -> DatasetSpec:
    """The spec of a dataset by its short key (case-insensitive; unknown keys get the closest suggestions), or of
    your own dataset from its checked definition (kdlib.owndata), as a run's `dataset` parameter holds it."""
    if isinstance(key, DatasetSpec):
        return key
    if isinstance(key, dict):
        from kdlib import owndata

        return owndata.spec_of(key)
    spec = DATASETS.get(key.lower()) if isinstance(key, str) else None
    if spec is None:
        raise unknown_name("dataset", str(key), DATASETS)
    return spec


def resolve_data_dir(data_dir: str | os.PathLike | None = None, *, must_exist: bool = True) -> Path:
    """The data folder: the argument, else $KDEXAM_DATA_DIR, else ./data/indonlu."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    path = Path(chosen).expanduser().resolve()
    if must_exist and not path.is_dir():
        raise DataError(f"data folder {path} does not exist. Fetch the data with `kdexam data download "
                        f"--data-dir {chosen}`, or point --data-dir / ${DATA_DIR_ENV} at a copy of IndoNLU's dataset/.")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Readers: one per file format. Each yields (line_number, record) and raises DataError naming file and line.

def _check_label(value: str, spec: DatasetSpec, where: str, what: str = "label") -> int:
    try:
        return spec.labels.index(value)
    except ValueError:
        raise DataError(f"{where}: {what} {value!r} is not in the label set of {spec.key} "
                        f"({', '.join(spec.labels)}); correct the line or remove it.") from None


def _open_text(path: Path) -> Iterator[str]:
    """The lines of a dataset file (kdlib.textio's rule: UTF-8, a BOM dropped, a bad byte named by its line)."""
    if not path.is_file():
        hint = ("re-fetch it with `kdexam data download`" if path.parent.is_dir()
                else "check --data-dir, or fetch the data with `kdexam data download`")
        raise DataError(f"{path}: file not found; {hint}.")
    try:
        return textio.lines(path, newline="", hint="the file is corrupt, re-fetch it with `kdexam data download`")
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}).") from None


def csv_guard(path: Path, rows: Iterator, hint: str = "re-fetch the file with `kdexam data download`") -> Iterator:
    try:
        yield from rows
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e}); {hint}.") from None


def _read_delimited(path: Path, spec: DatasetSpec) -> Iterator[tuple[int, list[str]]]:
    """Rows of a CSV/TSV file after checking its header; each row has exactly as many fields as the header."""
    delimiter = "\t" if spec.ext == "tsv" else ","
    n_fields = len(spec.header) or 2
    reader = csv.reader(_open_text(path), delimiter=delimiter)
    rows = csv_guard(path, reader)
    if spec.header:
        header = next(rows, None)
        if header is None:
            return
        if tuple(h.strip() for h in header) != spec.header:
            raise DataError(f"{path}:1: wrong header {','.join(header)!r}; expected "
                            f"{','.join(spec.header)!r} for {spec.key}.")
    for row in rows:
        if not row or row == [""]:
            continue
        if len(row) != n_fields:
            raise DataError(f"{path}:{reader.line_num}: malformed line: {len(row)} fields where {spec.key} "
                            f"has {n_fields} ({', '.join(spec.header) or 'text<TAB>label'}); fix the quoting "
                            "or re-fetch the file.")
        yield reader.line_num, row


def _token_list(cell: str, where: str, column: str) -> list[str]:
    """A FacQA cell: a Python-literal list of strings, parsed safely (never eval)."""
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise DataError(f"{where}: column {column!r} is not a list of strings like \"['a', 'b']\": "
                        f"{cell[:60]!r}")
    return value


def _records_delimited(path: Path, spec: DatasetSpec) -> Iterator[dict]:
    for line, row in _read_delimited(path, spec):
        where = f"{path}:{line}"
        if spec.key == "emot":
            yield {"text": row[1], "label": _check_label(row[0].strip(), spec, where)}
        elif spec.key == "smsa":
            yield {"text": row[0], "label": _check_label(row[1].strip(), spec, where)}
        elif spec.shape == "pair":
            yield {"text_a": row[0], "text_b": row[1], "label": _check_label(row[3].strip(), spec, where)}
        elif spec.shape == "aspect":
            labels = [_check_label(v.strip(), spec, where, f"{a} label") for a, v in zip(spec.aspects, row[1:])]
            yield {"text": row[0], "labels": labels}
        elif spec.shape == "qa":
            question = _token_list(row[0], where, "question")
            tokens = _token_list(row[1], where, "passage")
            tags = [_check_label(t, spec, where, "tag") for t in _token_list(row[2], where, "seq_label")]
            if len(tags) != len(tokens):
                raise DataError(f"{where}: passage has {len(tokens)} tokens but seq_label has {len(tags)} tags.")
            yield {"question": question, "tokens": tokens, "tags": tags}
        else:  # pragma: no cover - the registry has no other delimited shape
            raise AssertionError(spec.shape)


def _records_conll(path: Path, spec: DatasetSpec) -> Iterator[dict]:
    for _, tokens, tags in conll_sentences(path, _open_text(path)):
        yield {"tokens": tokens,
               "tags": [_check_label(tag.strip(), spec, f"{path}:{line}", "tag") for line, tag in tags]}


def conll_sentences(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, list[str], list]]:
    """`token<TAB>tag` lines, a blank line between sentences (a missing final blank line is tolerated): per
    sentence its first line number, its tokens, and (line number, tag) per token."""
    tokens: list[str] = []
    tags: list[tuple[int, str]] = []
    for line_no, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            if tokens:
                yield tags[0][0], tokens, tags
            tokens, tags = [], []
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(f"{path}:{line_no}: malformed line {line[:60]!r}: expected token<TAB>tag "
                            f"(found {len(parts) - 1} tabs).")
        tokens.append(parts[0])
        tags.append((line_no, parts[1].strip()))
    if tokens:
        yield tags[0][0], tokens, tags


def features(spec: DatasetSpec) -> datasets.Features:
    """The `datasets` schema of a shape; labels are ClassLabels carrying the label names."""
    import datasets

    label = datasets.ClassLabel(names=list(spec.labels))
    words = datasets.Sequence(datasets.Value("string"))
    return datasets.Features({
        "single": {"text": datasets.Value("string"), "label": label},
        "pair": {"text_a": datasets.Value("string"), "text_b": datasets.Value("string"), "label": label},
        "aspect": {"text": datasets.Value("string"), "labels": datasets.Sequence(label)},
        "tagging": {"tokens": words, "tags": datasets.Sequence(label)},
        "qa": {"question": words, "tokens": words, "tags": datasets.Sequence(label)},
    }[spec.shape])


def read_records(spec: DatasetSpec, split: str, data_dir: str | os.PathLike | None = None,
                 limit: int | None = None) -> list[dict]:
    """The examples of one split as plain dicts, validated; `limit` keeps the first N (for tests)."""
    if split not in SPLITS:
        raise unknown_name("split", split, SPLITS)
    if spec.source is not None:
        from kdlib import owndata

        return owndata.read_records(spec, split)[:limit]
    path = spec.path(resolve_data_dir(data_dir), split)
    reader = _records_conll if spec.ext == "txt" else _records_delimited
    records = []
    for record in reader(path, spec):
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise DataError(f"{path}: the {split} split of {spec.key} is empty; re-fetch it with `kdexam data download`.")
    return records


def load_split(key: str | dict | DatasetSpec, split: str, data_dir: str | os.PathLike | None = None,
               limit: int | None = None) -> datasets.Dataset:
    import datasets

    spec = get_spec(key)
    records = read_records(spec, split, data_dir, limit)
    columns = {name: [r[name] for r in records] for name in records[0]}
    return datasets.Dataset.from_dict(columns, features=features(spec), split=split)


def load_indonlu(key: str | dict | DatasetSpec, data_dir: str | os.PathLike | None = None,
                 limit: int | None = None) -> datasets.DatasetDict:
    """train/valid/test of one IndoNLU dataset (or your own, kdlib.owndata) as a DatasetDict with the columns of its
    task shape."""
    import datasets

    return datasets.DatasetDict({split: load_split(key, split, data_dir, limit) for split in SPLITS})


SUBSET_SEED = 0  # capped train sets are drawn with this seed, whatever the run's seed: see subset_indices


def subset_indices(n: int, cap: int | None, seed: int = SUBSET_SEED) -> list[int]:
    """Indices of a random subset of at most `cap` of n examples, in their original order (None: all n).

    The first `cap` positions of one seeded permutation, so smaller caps are subsets of larger ones: the teacher
    caches its logits once on the largest capped set a study uses, and every student's set is inside it. Runs
    that differ only in their seed train on the same examples, so seeds compare initialisations, not data draws.
    """
    if cap is None or cap >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).permutation(n)[:cap].tolist())


def cap(ds: datasets.Dataset, n: int | None, seed: int = SUBSET_SEED) -> datasets.Dataset:
    """The subset_indices subset of a split (None or n >= len keeps everything, in order)."""
    if n is None or n >= len(ds):
        return ds
    return ds.select(subset_indices(len(ds), n, seed))


# ----------------------------------------------------------------------------------------------------------------
# Words and vocabularies for the word-level students (BiLSTM, CNN).

_WORD = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]", re.UNICODE)
PAD, UNK, SEP = "<pad>", "<unk>", "<sep>"
# A word's casing class (index 0 = padding): the word students' vocabulary is lower-cased, so taggers read this.
CASES = ("pad", "lower", "title", "upper", "mixed", "number", "other")


def case_class(word: str) -> int:
    """The CASES index of a word: lower, Title, UPPER (two or more letters), mIxEd, a number, or no letters."""
    if word in (PAD, UNK, SEP) or not any(c.isalnum() for c in word):
        return CASES.index("other")
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return CASES.index("number")
    if all(c.islower() for c in letters):
        return CASES.index("lower")
    if all(c.isupper() for c in letters):
        return CASES.index("upper" if len(letters) > 1 else "title")
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return CASES.index("title")
    return CASES.index("mixed")


def word_tokenize(text: str) -> list[str]:
    """Words and punctuation marks; keeps hyphenated words (`pecah-pecah`) whole."""
    return _WORD.findall(text)


def example_words(example: dict, spec: DatasetSpec) -> list[str]:
    """The words a word-level student reads: pair texts and QA question/passage are joined by SEP."""
    if spec.shape in ("single", "aspect"):
        return word_tokenize(example["text"])
    if spec.shape == "pair":
        return word_tokenize(example["text_a"]) + [SEP] + word_tokenize(example["text_b"])
    if spec.shape == "qa":
        return list(example["question"]) + [SEP] + list(example["tokens"])
    return list(example["tokens"])


@dataclass
class Vocab:
    """A word vocabulary: PAD=0, UNK=1, SEP=2, then words by descending frequency (ties alphabetical)."""

    itos: list[str]
    lower: bool = True
    _stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Iterable[Sequence[str]], *, lower: bool = True, min_freq: int = 1,
              max_size: int | None = None) -> Vocab:
        counts = Counter(w.lower() if lower else w for words in texts for w in words)
        for special in (PAD, UNK, SEP):
            counts.pop(special, None)
        ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[:max(0, max_size - 3)]
        return cls([PAD, UNK, SEP, *ranked], lower=lower)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return (word.lower() if self.lower else word) in self._stoi

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def encode(self, words: Sequence[str]) -> list[int]:
        get = self._stoi.get
        if self.lower:  # specials are lower-case already, so lowering never hides them
            return [get(w.lower(), 1) for w in words]
        return [get(w, 1) for w in words]

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"lower": self.lower, "itos": self.itos}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        try:
            data = json.loads(textio.read_text(path))
            return cls(list(data["itos"]), lower=bool(data["lower"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not a kd-exam vocabulary file ({e}).") from None


# ----------------------------------------------------------------------------------------------------------------
# Sub-word alignment for BERT models.

IGNORE_INDEX = -100


def align_labels(word_ids: Sequence[int | None], labels: Sequence[int],
                 sequence_ids: Sequence[int | None] | None = None, labelled_sequence: int = 0) -> list[int]:
    """Word labels moved onto sub-words: the label on each word's first sub-word, IGNORE_INDEX elsewhere.

    word_ids: per sub-word, the index of its word (None for special tokens), as `BatchEncoding.word_ids()`.
    sequence_ids: per sub-word, which input it came from; only sub-words of `labelled_sequence` get labels
    (FacQA labels the passage, the second input).
    """
    out = [IGNORE_INDEX] * len(word_ids)
    previous: tuple[int | None, int | None] = (None, None)
    for i, word in enumerate(word_ids):
        seq = sequence_ids[i] if sequence_ids is not None else labelled_sequence
        if word is not None and seq == labelled_sequence and (seq, word) != previous:
            out[i] = labels[word]
        previous = (seq, word)
    return out


SPACE_MARKER = "\u2581"  # sentencepiece's word-start marker


def first_subword_index(word_ids: Sequence[int | None], n_words: int,
                        sequence_ids: Sequence[int | None] | None = None, labelled_sequence: int = 0,
                        input_ids: Sequence[int] | None = None, skip_id: int | None = None) -> list[int]:
    """Per word, the position of its first sub-word, or -1 when truncation cut the word off.

    With `skip_id` (and `input_ids`), a word whose first sub-word is that id and which has another sub-word is read
    at that next one instead ("first-content": sentencepiece splits ',', 'rp' or 'amerika' into a bare word-start
    marker '▁' and the piece, and the bare marker, shared by every such word, says little about the word)."""
    out = [-1] * n_words
    for i, word in enumerate(word_ids):
        seq = sequence_ids[i] if sequence_ids is not None else labelled_sequence
        if word is not None and seq == labelled_sequence and word < n_words:
            if out[word] == -1:
                out[word] = i
            elif skip_id is not None and out[word] == i - 1 and input_ids[i - 1] == skip_id:
                out[word] = i
    return out


def lone_space_id(tokenizer) -> int | None:
    """The id of a sentencepiece tokenizer's bare word-start marker '▁', None if it has none (WordPiece: BERT,
    IndoBERT). Reads a transformers tokenizer or a tokenizers.Tokenizer."""
    if hasattr(tokenizer, "token_to_id"):  # tokenizers.Tokenizer
        return tokenizer.token_to_id(SPACE_MARKER)
    found = tokenizer.convert_tokens_to_ids(SPACE_MARKER)
    return None if found is None or found == tokenizer.unk_token_id else found


def encode_for_bert(batch: dict, tokenizer, spec: DatasetSpec, max_length: int = 128,
                    word_position: str = "first") -> dict:
    """A batched `Dataset.map` function: input_ids/attention_mask(/token_type_ids), labels, word_index.

    Classification: `labels` is the class id (single/pair) or the list of aspect ids. Tagging: `labels` holds one
    tag per word and `word_index` maps each word to its first sub-word (-1 if truncated away, label ignored),
    which is how word-level logits are read from a sub-word model; `subword_labels` has the tag on each word's
    first sub-word and IGNORE_INDEX elsewhere (the Hugging Face token-classification layout). `word_position`
    "first-content" reads a word after a bare '▁' first sub-word instead (first_subword_index), for sentencepiece
    tokenizers; with others it changes nothing.
    """
    if word_position not in WORD_POSITIONS:
        raise ConfigError(f"word_position {word_position!r} is not one of {', '.join(WORD_POSITIONS)}.")
    if spec.shape in ("single", "aspect"):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        enc["labels"] = batch["label" if spec.shape == "single" else "labels"]
        return dict(enc)
    if spec.shape == "pair":
        enc = tokenizer(batch["text_a"], batch["text_b"], truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        return dict(enc)
    if spec.shape == "tagging":
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        seq, labelled = None, 0
    else:  # qa: question first, passage second; only the passage is labelled. longest_first, because
        # only_second fails outright when a long question leaves no room for the passage.
        enc = tokenizer(batch["question"], batch["tokens"], is_split_into_words=True, truncation="longest_first",
                        max_length=max_length)
        seq, labelled = True, 1
    skip = lone_space_id(tokenizer) if word_position == "first-content" else None
    subword_labels, index = [], []
    for i, (tokens, tags) in enumerate(zip(batch["tokens"], batch["tags"])):
        word_ids = enc.word_ids(i)
        seq_ids = enc.sequence_ids(i) if seq else None
        index.append(first_subword_index(word_ids, len(tokens), seq_ids, labelled, enc["input_ids"][i], skip))
        if skip is None:
            subword_labels.append(align_labels(word_ids, tags, seq_ids, labelled))
        else:  # the tag where the word is read
            subword_labels.append([IGNORE_INDEX] * len(word_ids))
            for word, position in enumerate(index[-1]):
                if position >= 0:
                    subword_labels[-1][position] = tags[word]
    enc["subword_labels"] = subword_labels
    enc["word_index"] = index
    enc["labels"] = [_word_labels(tags, idx) for tags, idx in zip(batch["tags"], index)]
    return dict(enc)


def _word_labels(tags: Sequence[int], word_index: Sequence[int]) -> list[int]:
    """Word-level training labels: words the model cannot see (truncated, index -1) are ignored."""
    return [t if i >= 0 else IGNORE_INDEX for t, i in zip(tags, word_index)]


def encode_for_words(batch: dict, vocab: Vocab, spec: DatasetSpec, max_words: int = 256) -> dict:
    """A batched `Dataset.map` function for word-level students: word_ids, case_ids (kdlib.data.CASES), labels (and
    word_index for tagging).

    Tagging: the student reads every word and `word_index[j] = j`; QA: it reads question <sep> passage and the
    passage word j sits at position len(question) + 1 + j. Words past `max_words` are cut (word_index -1).
    """
    out: dict[str, list] = {"word_ids": [], "case_ids": [], "labels": []}
    if spec.is_tagging:
        out["word_index"] = []
    n = len(next(iter(batch.values())))
    for i in range(n):
        example = {k: batch[k][i] for k in batch}
        for key, value in word_features(example, vocab, spec, max_words).items():
            out[key].append(value)
        if spec.is_tagging:
            out["labels"].append(_word_labels(example["tags"], out["word_index"][-1]))
        else:
            out["labels"].append(example["label" if spec.shape in ("single", "pair") else "labels"])
    return out


def word_features(example: dict, vocab: Vocab, spec: DatasetSpec, max_words: int = 256) -> dict[str, list[int]]:
    """One unlabelled example's word_ids, case_ids (and word_index for tagging), as encode_for_words builds them."""
    words = example_words(example, spec)[:max_words]
    out = {"word_ids": vocab.encode(words) or [vocab.unk_id],
           "case_ids": [case_class(w) for w in words] or [CASES.index("other")]}
    if spec.is_tagging:
        offset = len(example["question"]) + 1 if spec.shape == "qa" else 0
        out["word_index"] = [offset + j if offset + j < len(words) else -1 for j in range(len(example["tokens"]))]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Getting the files.

def download(data_dir: str | os.PathLike, keys: Iterable[str] | None = None, *,
             base_url: str = INDONLU_RAW_URL, overwrite: bool = False, timeout: float = 60.0) -> list[Path]:
    """Fetch the split files from IndoNLU's public repository (pinned commit); returns the files written.

    Files already present are kept unless `overwrite`. Each file is written to a temporary name and renamed,
    so an interrupted download never leaves a half file that looks complete.
    """
    if os.environ.get("HF_HUB_OFFLINE") == "1" and base_url.startswith("http") and "127.0.0.1" not in base_url:
        raise KdExamError("HF_HUB_OFFLINE=1 is set, so kd-exam makes no network calls; unset it to download, or "
                          "copy IndoNLU's dataset/ folder and point --data-dir at it.")
    root = resolve_data_dir(data_dir, must_exist=False)
    written = []
    for spec in (get_spec(k) for k in (keys or DATASETS)):
        for split in SPLITS:
            target = spec.path(root, split)
            if target.exists() and not overwrite:
                continue
            url = f"{base_url.rstrip('/')}/{spec.folder}/{target.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            log.info("fetching %s", url)
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    tmp.write_bytes(response.read())
            except OSError as e:  # URLError and HTTPError are OSErrors
                tmp.unlink(missing_ok=True)
                raise KdExamError(f"could not download {url}: {e}. Check the network, or copy IndoNLU's "
                                  f"dataset/ folder to {root}.") from None
            tmp.replace(target)
            written.append(target)
    return written


def describe(data_dir: str | os.PathLike | None = None, keys: Iterable[str] | None = None):
    """One row per dataset: sizes of the splits, words per example, the train label distribution."""
    import pandas as pd

    rows = []
    for spec in (get_spec(k) for k in (keys or DATASETS)):
        sizes, lengths, label_counts = {}, [], Counter()
        for split in SPLITS:
            records = read_records(spec, split, data_dir)
            sizes[split] = len(records)
            lengths.extend(len(example_words(r, spec)) for r in records)
            if split == "train":
                for r in records:
                    label_counts.update(_labels_of(r, spec))
        total = sum(label_counts.values())
        top = ", ".join(f"{spec.labels[i]} {100 * c / total:.0f}%" for i, c in label_counts.most_common(3))
        rows.append({"dataset": spec.name, "key": spec.key, "shape": spec.shape, **sizes,
                     "mean_words": round(sum(lengths) / len(lengths), 1), "max_words": max(lengths),
                     "labels": len(spec.labels), "train label distribution (top 3)": top})
    return pd.DataFrame(rows)


def _labels_of(record: dict, spec: DatasetSpec) -> list[int]:
    if spec.shape in ("single", "pair"):
        return [record["label"]]
    return list(record["labels" if spec.shape == "aspect" else "tags"])


def train_wordpiece(texts: Iterable[str], vocab_size: int = 2000, *, lowercase: bool = True):
    """A BERT WordPiece tokenizer trained on `texts`: how tests and offline demos get a tokenizer with no hub."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                            show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", do_lower_case=lowercase)


def texts_for_tokenizer(dd: datasets.DatasetDict, spec: DatasetSpec, split: str = "train") -> Iterator[str]:
    """Plain text lines of a split, whatever its shape (for training tokenizers or embeddings)."""
    for example in dd[split]:
        yield " ".join(w for w in example_words(example, spec) if w != SEP)
