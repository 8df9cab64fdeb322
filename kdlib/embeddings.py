"""Initial word embeddings for the word-level students: a `.vec` file, or word2vec / fastText trained in-domain.

- `.vec` (fastText's text format, e.g. `cc.id.300.vec` or IndoNLU's fastText-Indo4B): read as a stream, keeping
  only the words of the student's vocabulary, so a 2M-word file costs no more memory than the vocabulary.
  Look-ups are lower-cased like the vocabulary; the first (most frequent) casing of a word wins.
- In-domain (gensim): skip-gram word2vec or fastText trained on the train splits of the 12 IndoNLU datasets plus any
  user text, minus every text that is a valid or test text of any IndoNLU dataset. Trained once per setting and
  kept under a content-addressed folder, so every run of a study reuses it.

A vocabulary word without a vector (out of vocabulary, OOV) starts from a random normal vector with the spread of the
found vectors; PAD is zero. The coverage report gives the OOV rate over the vocabulary's words and over the tokens
of each split; fastText builds a vector for an unseen word from its character n-grams, reported as `composed`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from kdlib import data, params, rundir, textio
from kdlib.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IN_DOMAIN, SOURCES = params.IN_DOMAIN, params.EMBEDDINGS  # a source may also be the path of a .vec file
# gensim settings of the in-domain vectors; skip-gram, as fastText's own defaults for word vectors.
GENSIM_SETTINGS = {"window": 5, "min_count": 2, "epochs": 5, "sg": 1, "negative": 5}
FASTTEXT_NGRAMS = {"min_n": 3, "max_n": 6}


@dataclass
class WordVectors:
    """A word -> vector look-up. `vector` returns None for a word it cannot give a vector; `known` says whether
    the word itself was seen (False for fastText's vectors composed from character n-grams)."""

    dim: int
    source: str
    vector: Callable[[str], np.ndarray | None]
    known: Callable[[str], bool]


# ----------------------------------------------------------------------------------------------------------------
# .vec files

def read_vec(path: str | os.PathLike, words: Iterable[str] | None = None) -> WordVectors:
    """Vectors of a fastText/word2vec text file for `words` (lower-cased look-up); every word if None.

    The first line may be a `count dim` header (fastText) or already a vector (GloVe style). A line used must hold
    the word and exactly `dim` numbers, else a DataError names the file and line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"embedding file {path} not found; give the path of a .vec file (word and numbers per "
                          "line), or one of: " + ", ".join(SOURCES) + ".")
    wanted = None if words is None else {w.lower() for w in words}
    table: dict[str, np.ndarray] = {}
    dim = None
    for line_no, line in enumerate(textio.lines(path, hint="a binary .bin model is not a .vec file"), start=1):
        fields = line.rstrip().split(" ")
        if line_no == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
            dim = int(fields[1])
            continue
        if dim is None:
            dim = len(fields) - 1
        key = fields[0].lower()
        if (wanted is not None and key not in wanted) or key in table:
            continue
        if len(fields) != dim + 1:
            raise DataError(f"{path}:{line_no}: expected a word and {dim} numbers, found {len(fields) - 1} "
                            "fields after the word; is this a .vec (text) file?")
        try:
            table[key] = np.asarray(fields[1:], dtype=np.float32)
        except ValueError:
            raise DataError(f"{path}:{line_no}: {line[:60]!r} holds a value that is not a number.") from None
    if not dim:
        raise DataError(f"{path}: no vector found; a .vec file holds `word v1 ... vD` lines.")
    return WordVectors(dim, f"vec:{path.name}", lambda w: table.get(w.lower()), lambda w: w.lower() in table)


# ----------------------------------------------------------------------------------------------------------------
# In-domain vectors with gensim

def in_domain_corpus(data_dir: str | os.PathLike | None = None, extra_text: str | os.PathLike | None = None
                     ) -> list[list[str]]:
    """Lower-cased word lists: the train splits of every IndoNLU dataset plus the lines of `extra_text`,
    without any text that is also a valid or test text of an IndoNLU dataset (so no test text is ever seen)."""
    from kdlib.augment import eval_texts, normalise, record_texts

    held_out = set().union(*(eval_texts(spec, data_dir) for spec in data.DATASETS.values()))
    texts = [w for spec in data.DATASETS.values() for r in data.read_records(spec, "train", data_dir)
             for w in record_texts(r, spec)]
    if extra_text:
        path = Path(extra_text).expanduser()
        if not path.is_file():
            raise ConfigError(f"embedding_text {path} not found; give a UTF-8 text file, one text per line.")
        texts += [data.word_tokenize(line) for line in
                  textio.read_text(path, hint="embedding_text is UTF-8 text, one text per line").splitlines()]
    return [[w.lower() for w in words] for words in texts if words and normalise(words) not in held_out]


def _stable_hash(text: str) -> int:
    """gensim seeds each word's initial vector with hash(); Python's hash() changes per process (PYTHONHASHSEED)."""
    return zlib.crc32(text.encode("utf-8"))


def corpus_key(kind: str, dim: int, seed: int, corpus: Sequence[Sequence[str]]) -> str:
    digest = hashlib.sha256(json.dumps({"kind": kind, "dim": dim, "seed": seed, **GENSIM_SETTINGS,
                                        **(FASTTEXT_NGRAMS if kind == "fasttext" else {})}).encode())
    for words in corpus:
        digest.update(" ".join(words).encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def _train_to(folder: Path, kind: str, corpus: Sequence[Sequence[str]], dim: int, seed: int) -> None:
    from gensim.models import FastText, Word2Vec

    log.info("training %s vectors (%d dims) on %d texts", kind, dim, len(corpus))
    model_cls = FastText if kind == "fasttext" else Word2Vec
    extra = FASTTEXT_NGRAMS if kind == "fasttext" else {}
    model = model_cls(sentences=list(corpus), vector_size=dim, seed=seed, workers=1, hashfxn=_stable_hash,
                      **GENSIM_SETTINGS, **extra)
    rundir.clean_temp_files(folder.parent, f".{folder.name}.*.tmp")  # a killed trainer's; the caller holds the lock
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    model.wv.save(str(tmp / "vectors.kv"))
    if folder.exists():  # a folder without vectors.kv (emptied by hand): the caller holds the lock, replace it
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def train_in_domain(kind: str, corpus: Sequence[Sequence[str]], dim: int, cache_dir: str | os.PathLike,
                    seed: int = 0) -> WordVectors:
    """word2vec or fastText vectors of `corpus`, trained once and kept in `cache_dir/<kind>-<dim>d-<key>/`.

    One worker thread and a process-independent hash make the vectors the same on every run of the same corpus.
    """
    from gensim.models import KeyedVectors

    if kind not in IN_DOMAIN:
        raise ConfigError(f"in-domain embeddings are one of {', '.join(IN_DOMAIN)}, not {kind!r}.")
    folder = Path(cache_dir) / f"{kind}-{dim}d-{corpus_key(kind, dim, seed, corpus)}"
    if not (folder / "vectors.kv").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(folder.with_name(f".{folder.name}.lock")):  # runs starting together: one trains, others wait
            if not (folder / "vectors.kv").exists():
                _train_to(folder, kind, corpus, dim, seed)
    try:
        wv = KeyedVectors.load(str(folder / "vectors.kv"))
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise DataError(f"the cached {kind} vectors in {folder} cannot be read ({type(e).__name__}: {e}); delete "
                        "that folder and the next run trains them again.") from e
    known = wv.key_to_index.__contains__

    def vector(word: str) -> np.ndarray | None:
        word = word.lower()
        if known(word) or (kind == "fasttext" and word in wv):  # fastText: from character n-grams
            return np.asarray(wv[word], dtype=np.float32)
        return None

    return WordVectors(dim, kind, vector, lambda w: known(w.lower()))


# ----------------------------------------------------------------------------------------------------------------
# From vectors to a student's embedding matrix

def embedding_matrix(vectors: WordVectors, vocab: data.Vocab, seed: int = 0) -> tuple[np.ndarray, dict]:
    """(len(vocab), dim) float32: each word's vector, random normal for OOV words (sd of the found vectors),
    zeros for PAD. Also returns the vocabulary's coverage: found, composed (fastText n-grams) and OOV counts."""
    rng = np.random.default_rng(seed)
    matrix = np.zeros((len(vocab), vectors.dim), dtype=np.float32)
    found = np.zeros(len(vocab), dtype=bool)
    composed = 0
    for i, word in enumerate(vocab.itos):
        if i in (vocab.pad_id, vocab.unk_id) or word == data.SEP:
            continue
        v = vectors.vector(word)
        if v is not None:
            matrix[i], found[i] = v, True
            composed += not vectors.known(word)
    sd = float(matrix[found].std()) if found.any() else 0.1
    missing = ~found
    missing[vocab.pad_id] = False
    matrix[missing] = rng.normal(0.0, sd or 0.1, size=(int(missing.sum()), vectors.dim))
    words = len(vocab) - 3  # PAD, UNK, SEP have no vector by design
    n_found = int(found.sum())
    return matrix, {"vocab_words": words, "found": n_found, "composed": composed, "oov": words - n_found,
                    "oov_rate": (words - n_found) / words if words else 0.0}


def token_oov_rate(vectors: WordVectors, texts: Iterable[Sequence[str]]) -> float:
    """The share of word tokens in `texts` the vectors give no vector for (fastText n-grams count as found)."""
    cache: dict[str, bool] = {}
    total = missing = 0
    for words in texts:
        for w in words:
            if w == data.SEP:
                continue
            key = w.lower()
            if key not in cache:
                cache[key] = vectors.vector(key) is None
            total += 1
            missing += cache[key]
    return missing / total if total else 0.0


def load_vectors(source: str, *, words: Iterable[str], dim: int, cache_dir: str | os.PathLike, seed: int = 0,
                 data_dir: str | os.PathLike | None = None, extra_text: str | os.PathLike | None = None
                 ) -> WordVectors:
    """The vectors named by `source`: "word2vec"/"fasttext" (in-domain, `dim` dimensions) or a .vec path, of
    which only `words` are read."""
    if source in IN_DOMAIN:
        corpus = in_domain_corpus(data_dir, extra_text)
        return train_in_domain(source, corpus, dim, cache_dir, seed)
    if source == "random":
        raise ConfigError("embedding 'random' has no vectors to load; the student initialises its own.")
    return read_vec(source, words)


def source_name(source: str) -> str:
    """A short, folder-safe name of an embedding source: 'word2vec', 'vec-cc.id.300'."""
    if source in SOURCES:
        return source
    name = Path(source).name
    for suffix in (".gz", ".vec", ".txt"):
        name = name.removesuffix(suffix)
    return "vec-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
