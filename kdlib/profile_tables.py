"""What 06_profile and `kdexam profile` show of a profile.json: size, latency and speed-up tables.

kdlib.profile measures and writes profile.json; this module only reads it, so showing a profile needs pandas and
no torch or onnxruntime.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdlib import rundir

if TYPE_CHECKING:
    import pandas as pd

# The name a timing-only reference model (kdlib.profile.reference_model) is profiled under
REFERENCE_NAME = "{} (timing only)"


def read_profile(run_dir: str | os.PathLike) -> dict:
    return rundir.read_json(Path(run_dir) / rundir.PROFILE)


def latency_table(profile: dict) -> pd.DataFrame:
    """Median ms per model (rows) and setting (columns), for display in 06_profile."""
    import pandas as pd

    df = pd.DataFrame(profile["latency"])
    if df.empty:
        return df
    table = df.pivot_table(index="model", columns=["engine", "threads", "batch", "inputs"], values="median_ms")
    return table.reindex([m["model"] for m in profile["models"]]).round(2)


def size_table(profile: dict) -> pd.DataFrame:
    """Parameters, MB on disk, RAM and F1 per engine of every model, for display in 06_profile."""
    import pandas as pd

    rows = []
    for m in profile["models"]:
        memory = m.get("memory", {})
        rows.append({"model": m["model"], "parameters (M)": m["parameters"] / 1e6,
                     "safetensors MB": m["safetensors_bytes"] / 2**20, "onnx MB": m.get("onnx_bytes", np.nan) / 2**20,
                     "int8 MB": m.get("int8_bytes", np.nan) / 2**20,
                     "RAM MB (torch)": memory.get("torch", {}).get("model_mb"),
                     "RAM MB (torch, all weights)": memory.get("torch", {}).get("resident_mb"),
                     "RAM MB (onnx)": memory.get("onnx", {}).get("model_mb"),
                     "F1 torch": 100 * m["f1_torch"], "F1 onnx": 100 * m.get("f1_onnx", np.nan),
                     "F1 int8": 100 * m.get("f1_int8", np.nan), "onnx max |Δ logit|": m.get("onnx_max_abs_diff")})
    return pd.DataFrame(rows).set_index("model").round(3)


def speedup_table(profile: dict, inputs: str = "real") -> pd.DataFrame:
    """Teacher's PyTorch median / model's median, per engine, threads and batch size (× faster than the teacher)."""
    import pandas as pd

    df = pd.DataFrame(profile["latency"])
    df = df[df["inputs"] == inputs]
    teacher = df[(df["model"] == "teacher") & (df["engine"] == "torch")].set_index(["threads", "batch"])["median_ms"]
    df = df.assign(speedup=[teacher.get((t, b), np.nan) / ms for t, b, ms in
                            zip(df["threads"], df["batch"], df["median_ms"])])
    table = df.pivot_table(index="model", columns=["engine", "threads", "batch"], values="speedup")
    return table.reindex([m["model"] for m in profile["models"]]).round(1)


def reference_speedups(profile: dict, reference: str = "bert-base", inputs: str = "real") -> pd.DataFrame:
    """The reference's PyTorch median / each model's median: × faster than a BERT-base-shaped teacher."""
    import pandas as pd

    df = pd.DataFrame(profile["latency"])
    df = df[df["inputs"] == inputs]
    ref = df[(df["model"] == REFERENCE_NAME.format(reference)) & (df["engine"] == "torch")]
    ref = ref.set_index(["threads", "batch"])["median_ms"]
    if ref.empty:
        return pd.DataFrame()
    df = df.assign(speedup=[ref.get((t, b), np.nan) / ms for t, b, ms in
                            zip(df["threads"], df["batch"], df["median_ms"])])
    return df.pivot_table(index="model", columns=["engine", "threads", "batch"], values="speedup").round(1)
