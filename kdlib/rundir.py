"""Self-describing run folders: atomic JSON files, the environment record, and the `done.json` marker.

A run folder is finished when, and only when, `done.json` exists. It is written last and atomically (temp name,
then rename), so an interrupted run never looks finished and is redone on resume.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

DONE = "done.json"
METRICS = "metrics.json"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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
