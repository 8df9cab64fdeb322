"""Self-describing run folders: atomic JSON files, the environment record, and the `done.json` marker.

A run folder is finished when, and only when, `done.json` exists. It is written last and atomically (temp name,
then rename), so an interrupted run never looks finished and is redone on resume.

Every file is written under a temporary name unique to the writer, `.<name>.<random>.tmp`, then renamed; one left
by a killed writer is removed by `clean_temp_files` when its folder's run starts again (or under the lock of its
cache entry). A file that cannot be read is a RunFolderError naming it and how to redo it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdlib import textio
from kdlib.errors import KdExamError, RunFolderError

log = logging.getLogger(__name__)

DONE = "done.json"
METRICS = "metrics.json"
PARAMS = "params.json"  # the parameters the runner passed (kdlib.runner compares them to find stale runs)
TEACHER_INFO = "teacher.json"  # a teacher run: what a student needs to read it (kdlib.teachers.Teacher)
PREDICTIONS = "predictions.json"  # a student run: test gold and predictions (kdlib.stats's paired tests)
PROFILE = "profile.json"  # a profile run: every measured number (kdlib.profile)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")  # a model folder that brings a tokenizer

# The layout of a study's outputs, in one place: <output_dir>/<study>/<stage>/<dataset>/<run>/, where <run> is
# "teacher", "profile", "analysis" (dataset "all"), or <student>-<variant>-s<seed> for a student. Shared caches
# live beside the stages: <study>/cache/teacher/<dataset>/ (logits this study computed for a borrowed teacher) and
# <study>/cache/embeddings/ (in-domain word vectors, trained once per study).
ALL = "all"  # the dataset folder of the study-wide analysis run


def run_dir(study_dir: str | os.PathLike, stage: str, dataset: str, name: str) -> Path:
    return Path(study_dir) / stage / dataset / name


def teacher_dir(study_dir: str | os.PathLike, dataset: str) -> Path:
    return run_dir(study_dir, "teacher", dataset, "teacher")


def student_dirs(study_dir: str | os.PathLike, dataset: str) -> Path:
    """The folder holding a dataset's student runs (stage distill)."""
    return Path(study_dir) / "distill" / dataset


def student_dir(study_dir: str | os.PathLike, dataset: str, student: str, variant: str, seed: int) -> Path:
    return student_dirs(study_dir, dataset) / f"{student}-{variant}-s{seed}"


def profile_dir(study_dir: str | os.PathLike, dataset: str) -> Path:
    return run_dir(study_dir, "profile", dataset, "profile")


def analysis_dir(study_dir: str | os.PathLike) -> Path:
    return run_dir(study_dir, "analysis", ALL, "analysis")


def teacher_cache_dir(study_dir: str | os.PathLike, dataset: str) -> Path:
    return Path(study_dir) / "cache" / "teacher" / dataset


def embedding_cache_dir(study_dir: str | os.PathLike) -> Path:
    return Path(study_dir) / "cache" / "embeddings"


def outputs_root(run_folder: str | os.PathLike) -> Path:
    """The outputs folder of a run folder <outputs>/<study>/<stage>/<dataset>/<run>."""
    return Path(run_folder).parents[3]


# Parameters that say where a run lives or how it is executed, not what it computes: another --jobs or --data-dir
# (the same IndoNLU files elsewhere) does not make a finished run stale (kdlib.runner), nor a published one
# (kdlib.published).
NOT_SETTINGS = frozenset({"threads", "device", "executed_notebook", "data_dir", "out_dir", "models_dir",
                          "embedding_dir", "study_dir", "baseline_dir", "cache_dir", "published_dir"})


# Names that become folders (the study, each run's folder): short, and safe on every file system and in a shell.
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
FOLDER_RULE = "at most 100 letters, digits, '.', '_' or '-', starting with a letter or digit"
TEMP_PATTERNS = ("*.tmp", "*.tmp.npz")  # ours (.<name>.<random>.tmp), and the fixed names kd-exam used before


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A unique temporary path beside `path` to write to; renamed to `path` when the block ends, removed if it fails.
    Two writers of the same file never share a temporary file; a reader sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def clean_temp_files(folder: str | os.PathLike, pattern: str = "") -> int:
    """Remove temporary files (and folders) left under `folder` by killed writers; `pattern`: only those of one
    name. Call it only where no other process can be writing: a run folder before its run starts, or under a lock."""
    folder, removed = Path(folder), 0
    if not folder.is_dir():
        return 0
    for glob in [pattern] if pattern else TEMP_PATTERNS:
        for path in list(folder.rglob(glob)):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            removed += 1
    return removed


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    return Path(path)


def redo_hint(run_dir: str | os.PathLike) -> str:
    return f"delete the run folder {run_dir} and run the study again to redo it"


def read_json(path: str | os.PathLike, *, run_dir: str | os.PathLike | None = None) -> dict:
    """A JSON object file of a run folder (`run_dir`, default: the file's folder). A truncated or corrupt one is a
    RunFolderError of one line naming the file and saying to delete the run folder to redo it."""
    path = Path(path)
    hint = redo_hint(run_dir or path.parent)
    try:
        value = json.loads(textio.read_text(path, hint=hint))
    except json.JSONDecodeError as e:
        raise RunFolderError(f"{path}: truncated or corrupt JSON ({e.msg} at line {e.lineno}); {hint}.") from None
    except KdExamError as e:  # not UTF-8: its line is named
        raise RunFolderError(str(e)) from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{path}: holds a JSON {type(value).__name__}, not the object kd-exam writes; {hint}.")
    return value


def read_or_skip(path: str | os.PathLike) -> dict | None:
    """For readers of many runs (report, recommend, the ablation tables): a file that cannot be read is named in a
    warning and its run left out, so one corrupt run does not hide the others."""
    try:
        return read_json(path)
    except RunFolderError as e:
        log.warning("%s Left out until then.", e)
        return None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """What produced a result: machine, CPU, thread count and library versions."""
    import torch
    import transformers

    import kdlib

    return {
        "kdexam": kdlib.__version__, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "platform": platform.platform(), "cpu": cpu_model(),
        "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def is_done(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / DONE).exists()


def mark_done(run_dir: str | os.PathLike, **summary: Any) -> Path:
    return write_json(Path(run_dir) / DONE, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **summary})
