"""A running run's latest progress line, for the terminal: the recipe writes `progress.json` into its run folder
(the training loop's epoch, step, loss, validation F1 and ETA, or the phase it is in), the runner reads it while the
run goes on and prints what changed. A plain file works the same on one machine and on a Dask cluster with a shared
filesystem; it says nothing about results (metrics.json does) and a missing or half-written one is just no news.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from kdlib import rundir

PROGRESS = "progress.json"


def writer(run_dir: str | os.PathLike, **always) -> Callable[..., None]:
    """A function that records a progress dict (plus `always`) in run_dir/progress.json, atomically."""
    path = Path(run_dir) / PROGRESS

    def write(fields: dict | None = None, **more) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rundir.write_json(path, {**always, **(fields or {}), **more, "time": time.time()})

    return write


def read(run_dir: str | os.PathLike) -> dict | None:
    try:
        return json.loads((Path(run_dir) / PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def line(p: dict) -> str:
    """'epoch 2/3, step 40/120, loss 0.5321, valid F1 61.20, ETA 3m10s', or the phase ('teacher logits: train')."""
    if "epoch" not in p:
        return str(p.get("phase", ""))
    parts = [f"{p.get('what', 'training')}: epoch {p['epoch']}/{p['epochs']}", f"step {p['step']}/{p['steps']}",
             f"loss {p['loss']:.4f}"]
    if p.get("valid_f1") is not None:
        parts.append(f"valid F1 {100 * p['valid_f1']:.2f}")
    if p.get("eta_seconds") is not None:
        parts.append(f"ETA {duration(p['eta_seconds'])}")
    return ", ".join(parts)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / max(1, total))
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} runs"
