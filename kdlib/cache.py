"""Teacher logits computed once, stored on disk, read by every student run.

An entry is addressed by the content of what produced it: the fine-tuned teacher's weights, the dataset, the
split's examples and the tokenisation settings. Change any of them and the key changes, so a stale entry is never
read. Logits are stored at the unit the students learn from (class, aspect, or word: a word's logits are its
first sub-word's), as one ragged array per example; words the teacher could not see (truncated) are NaN.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from filelock import FileLock

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.sha256"
_CHUNK = 1 << 20


def fingerprint_model_dir(model_dir: str | os.PathLike) -> str:
    """sha256 over a saved model's config and weight files; computed once, then kept beside the weights."""
    model_dir = Path(model_dir)
    stored = model_dir / FINGERPRINT_FILE
    files = sorted(p for p in model_dir.iterdir()
                   if p.suffix in (".json", ".safetensors", ".bin") and p.name != FINGERPRINT_FILE)
    if stored.exists() and all(p.stat().st_mtime <= stored.stat().st_mtime for p in files):
        return stored.read_text().strip()
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    value = digest.hexdigest()
    _atomic_write_text(stored, value)
    return value


def fingerprint_examples(examples: Iterable[dict]) -> str:
    """sha256 of a split's examples (any JSON-able dicts), independent of how they were loaded."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps(example, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


def cache_key(teacher: str, dataset: str, examples: str, settings: dict) -> str:
    """The content address of one set of teacher logits."""
    blob = json.dumps({"teacher": teacher, "dataset": dataset, "examples": examples, "settings": settings},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class LogitCache:
    """A folder of `<name>-<key>.npz` files, each the logits of one split (or transfer set)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key}.npz"

    def load(self, name: str, key: str) -> list[np.ndarray] | None:
        path = self.path(name, key)
        if not path.exists():
            return None
        with np.load(path) as z:
            values, shapes = z["values"], z["shapes"]
        sizes = np.prod(shapes, axis=1)
        parts = np.split(values, np.cumsum(sizes)[:-1])
        log.info("teacher logits read from cache %s", path.name)
        return [p.reshape(s) for p, s in zip(parts, shapes)]

    def save(self, name: str, key: str, logits: Sequence[np.ndarray]) -> Path:
        path = self.path(name, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        shapes = np.array([a.shape for a in logits], dtype=np.int64)
        values = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in logits])
        tmp = path.with_name(path.name + ".tmp.npz")  # np.savez appends .npz to names without it
        np.savez(tmp, values=values, shapes=shapes)
        os.replace(tmp, path)
        return path

    def get_or_compute(self, name: str, key: str, compute: Callable[[], Sequence[np.ndarray]]) -> list[np.ndarray]:
        """The cached logits, else `compute()`'s, saved. Runs needing the same entry at once (two seeds of one
        transfer set) take a file lock: one computes, the others wait and read its file."""
        cached = self.load(name, key)
        if cached is not None:
            return cached
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / f".{name}-{key}.lock"):
            cached = self.load(name, key)
            if cached is not None:
                return cached
            log.info("teacher logits for %s not cached: running the teacher", name)
            logits = [np.asarray(a, dtype=np.float32) for a in compute()]
            self.save(name, key, logits)
        return logits


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
