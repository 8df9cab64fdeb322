"""Teacher logits computed once, stored on disk, read by every student run.

An entry is addressed by the content of what produced it: the fine-tuned teacher's weights, the dataset, the
split's examples and the tokenisation settings. Change any of them and the key changes, so a stale entry is never
read. Logits are stored at the unit the students learn from (class, aspect, or word: a word's logits are its
first sub-word's), as one ragged array per example; words the teacher could not see (truncated) are NaN.

A cache reads entries from more than one folder but writes only to its own: a study that borrows another study's
teacher reads that teacher's cache and writes the entries it computes (and the teacher's fingerprint, if it had
none) into a folder of its own.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from filelock import FileLock

from kdlib import rundir
from kdlib.errors import RunFolderError

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.sha256"
_CHUNK = 1 << 20


def fingerprint_model_dir(model_dir: str | os.PathLike, store_dir: str | os.PathLike | None = None) -> str:
    """sha256 over a saved model's config and weight files; computed once, then kept beside the weights, or in
    `store_dir` (a borrowed teacher's folder is not this run's to write in)."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.iterdir()
                   if p.suffix in (".json", ".safetensors", ".bin") and p.name != FINGERPRINT_FILE)
    newest = max((p.stat().st_mtime for p in files), default=0.0)
    places = [model_dir / FINGERPRINT_FILE, *([Path(store_dir) / FINGERPRINT_FILE] if store_dir else [])]
    for stored in places:
        if stored.is_file() and newest <= stored.stat().st_mtime:
            value = stored.read_text(encoding="ascii", errors="replace").strip()
            if len(value) == 64 and all(c in "0123456789abcdef" for c in value):  # else truncated: compute again
                return value
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    value = digest.hexdigest()
    with rundir.atomic_path(places[-1]) as tmp:
        tmp.write_text(value)
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
    """A folder of `<name>-<key>.npz` files, each the logits of one split (or transfer set); entries missing there
    are also looked for in the `read_also` folders (a borrowed teacher's cache), which are never written."""

    def __init__(self, root: str | os.PathLike, read_also: Sequence[str | os.PathLike] = ()) -> None:
        self.root = Path(root)
        self.read_also = [Path(r) for r in read_also if Path(r) != self.root]

    def path(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key}.npz"

    def load(self, name: str, key: str) -> list[np.ndarray] | None:
        found = [p for p in (self.path(name, key), *(r / self.path(name, key).name for r in self.read_also))
                 if p.exists()]
        if not found:
            return None
        path = found[0]
        try:
            with np.load(path) as z:
                values, shapes = z["values"], z["shapes"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise RunFolderError(f"{path}: truncated or corrupt cache entry ({type(e).__name__}); delete this file "
                                 "and the next run computes it again.") from None
        sizes = np.prod(shapes, axis=1)
        parts = np.split(values, np.cumsum(sizes)[:-1])
        log.info("teacher logits read from cache %s", path.name)
        return [p.reshape(s) for p, s in zip(parts, shapes)]

    def save(self, name: str, key: str, logits: Sequence[np.ndarray]) -> Path:
        path = self.path(name, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        shapes = np.array([a.shape for a in logits], dtype=np.int64)
        values = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in logits])
        with rundir.atomic_path(path) as tmp, tmp.open("wb") as f:  # a file object: savez adds no .npz
            np.savez(f, values=values, shapes=shapes)
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
            for pattern in (f".{self.path(name, key).name}.*.tmp", f"{self.path(name, key).name}.tmp.npz"):
                rundir.clean_temp_files(self.root, pattern)  # left by a writer killed while holding this lock
            log.info("teacher logits for %s not cached: running the teacher", name)
            logits = [np.asarray(a, dtype=np.float32) for a in compute()]
            self.save(name, key, logits)
        return logits

