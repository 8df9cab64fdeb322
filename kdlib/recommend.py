"""Recommend a student for a budget: per dataset, the best student of a study's scoreboard (kdlib.results) whose
latency, size on disk and RAM fit the limits given, or why none does (`kdexam recommend`, notebooks/07_analysis).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from kdlib.data import get_spec
from kdlib.errors import KdExamError
from kdlib.results import ENGINE_COLUMNS, batches


@dataclass
class Recommendation:
    """The answer for one dataset: the chosen student's row, or None with the reason in `message`."""

    dataset: str
    model: str | None
    message: str
    row: dict = field(default_factory=dict)
    export_command: str | None = None  # `kdexam export ...` of the pick (kdlib.export.recommended_command)
    export_hint: str | None = None  # or, for a pick whose model is not on this machine, how to train it and export


LIMITS = {"latency": ("--max-latency-ms",), "size": ("--max-size-mb",), "ram": ("--max-ram-mb",)}


def budget_columns(engine: str = "torch", batch: int = 1) -> dict[str, str]:
    size, ram = ENGINE_COLUMNS[engine]
    return {"latency": f"{engine}_ms_b{batch}", "size": size, "ram": ram}


def recommend(board: pd.DataFrame, *, dataset: str | None = None, max_latency_ms: float | None = None,
              max_size_mb: float | None = None, max_ram_mb: float | None = None, engine: str = "torch",
              batch: int = 1) -> list[Recommendation]:
    """The best student (highest test F1, then the faster) per dataset whose latency (median ms per batch of
    `batch` on `engine`), size on disk and RAM fit the limits given; None limits do not constrain.

    When no student fits, the message names each limit that alone excludes every student and what the cheapest
    student by that measure needs, or, when only the limits together exclude everything, the closest student and
    the limits it would need.
    """
    if engine not in ENGINE_COLUMNS:
        raise KdExamError(f"unknown engine {engine!r}; one of {', '.join(ENGINE_COLUMNS)}.")
    cols = budget_columns(engine, batch)
    if "size_mb" not in board or board["size_mb"].isna().all():
        raise KdExamError(f"no dataset of {', '.join(dict.fromkeys(board['dataset']))} is profiled yet: nothing to "
                          "weigh against a budget; run the study's profile stage (`kdexam run PARAMS --stage "
                          "profile`) or `kdexam profile`, then publish it.")
    if cols["latency"] not in board:
        raise KdExamError(f"no {engine} latency at batch {batch} in the profiles; profiled batches: "
                          f"{', '.join(map(str, batches(board, engine))) or 'none'}.")
    limits = {k: v for k, v in (("latency", max_latency_ms), ("size", max_size_mb), ("ram", max_ram_mb))
              if v is not None}
    datasets = list(dict.fromkeys(board["dataset"]))
    if dataset is not None:
        dataset = dataset if dataset in datasets else get_spec(dataset).key
        if dataset not in datasets:
            raise KdExamError(f"dataset {dataset} has no finished runs in this study; it has {', '.join(datasets)}.")
        datasets = [dataset]
    out = []
    for key in datasets:
        d = board[(board["dataset"] == key) & (board["model"] != "teacher")]
        d = d.dropna(subset=["f1", cols["latency"], cols["size"]])
        if d.empty:
            out.append(Recommendation(key, None, f"{key}: no profiled student yet; run notebooks/06_profile "
                                                 "(kdexam run does, after the students)."))
            continue
        unmeasured = [LIMITS[k][0] for k in limits if d[cols[k]].isna().all()]
        if unmeasured:
            out.append(Recommendation(key, None, f"{key}: its profile did not measure what {', '.join(unmeasured)} "
                                                 f"limits ({engine}; see the profile's memory/onnx/int8 settings); "
                                                 "drop that limit or profile again."))
            continue
        d = d.dropna(subset=[cols[k] for k in limits])
        fits = d[[all(float(r[cols[k]]) <= v for k, v in limits.items()) for _, r in d.iterrows()]]
        if not fits.empty:
            best = fits.sort_values(["f1", cols["latency"]], ascending=[False, True]).iloc[0]
            text = _describe(best, cols, engine, batch) + _near_the_limit(d, best, limits.get("latency"), cols)
            out.append(Recommendation(key, best["model"], text, best.to_dict()))
        else:
            text = _nothing_fits(key, d, limits, cols) + _near_the_limit(d, None, limits.get("latency"), cols)
            out.append(Recommendation(key, None, text))
    return out


def _near_the_limit(d: pd.DataFrame, best, limit: float | None, cols: dict[str, str]) -> str:
    """A note naming the students whose latency spread (interquartile range over the timed batches) holds the
    latency limit: on another run of the profile they may fall on the other side of it, so the answer may change."""
    low, high = cols["latency"] + "_p25", cols["latency"] + "_p75"
    if limit is None or low not in d or high not in d:
        return ""
    near = d[(d[low] <= limit) & (d[high] >= limit)]
    if near.empty:
        return ""
    parts = [f"{r['model']} {r[low]:.2f}-{r[high]:.2f} ms" for _, r in near.iterrows()]
    chosen = best is not None and best["model"] in set(near["model"])
    return (f". CAUTION: the limit {limit:g} ms lies inside the measured spread (25th-75th percentile) of "
            f"{', '.join(parts)}; {'this pick' if chosen else 'the answer'} may change on another measurement")


def _describe(r, cols: dict[str, str], engine: str, batch: int) -> str:
    spread = f" ± {r['f1_sd']:.2f} over {int(r['seeds'])} seeds" if r["seeds"] > 1 else " (1 seed)"
    ram = f", RAM {r[cols['ram']]:.3g} MB" if pd.notna(r.get(cols["ram"])) else ""
    return (f"{r['dataset']}: {r['model']} ({r['variant']}) — test F1 {r['f1']:.2f}{spread}, Δ to the teacher "
            f"{r['delta']:+.2f}; {r[cols['latency']]:.2f} ms per batch of {batch} ({engine}), "
            f"{r[cols['size']]:.3g} MB on disk{ram}")


def _nothing_fits(key: str, d: pd.DataFrame, limits: dict[str, float], cols: dict[str, str]) -> str:
    alone = []
    for k, v in limits.items():
        values = d[cols[k]].astype(float)
        if (values > v).all():
            cheapest = d.loc[values.idxmin()]
            flag = LIMITS[k][0]
            alone.append(f"{flag} {v:g} alone excludes every student: the cheapest by {k}, {cheapest['model']} "
                         f"(test F1 {cheapest['f1']:.2f}), needs {flag} {_up(cheapest[cols[k]])}")
    if alone:
        return f"{key}: nothing fits. " + "; ".join(alone) + "."
    overshoot = d.apply(lambda r: max(float(r[cols[k]]) / v for k, v in limits.items()), axis=1)
    closest = d.loc[overshoot.idxmin()]
    needs = [f"{LIMITS[k][0]} {_up(closest[cols[k]])}" for k, v in limits.items() if float(closest[cols[k]]) > v]
    return (f"{key}: nothing fits all limits at once (each alone leaves a student). The closest, {closest['model']} "
            f"(test F1 {closest['f1']:.2f}), would need {' '.join(needs)}.")


def _up(value: float) -> str:
    """A limit just above `value`, in 3 significant digits (rounded up, so it admits the value)."""
    value = float(value)
    if value <= 0:
        return "0"
    scale = 10 ** (math.floor(math.log10(value)) - 2)
    return f"{math.ceil(value / scale) * scale:.6g}"


def recommendations_table(recs: Sequence[Recommendation]) -> pd.DataFrame:
    """One row per dataset: the chosen student's name, variant, F1 (%), sd, seeds, Δ and costs, and the message."""
    cols = ["variant", "f1", "f1_sd", "seeds", "delta", "teacher_f1", "torch_ms_b1", "size_mb", "ram_mb"]
    return pd.DataFrame([{"dataset": r.dataset, "model": r.model, **{c: r.row.get(c) for c in cols},
                          "message": r.message} for r in recs])


def recommendations_json(recs: Sequence[Recommendation]) -> str:
    """The recommendations as a JSON list: every field of the chosen row, null where unknown."""
    def clean(value):
        value = value.item() if hasattr(value, "item") else value
        return None if isinstance(value, float) and math.isnan(value) else value

    return json.dumps([{"dataset": r.dataset, "model": r.model, "message": r.message,
                        "export_command": r.export_command, "export_hint": r.export_hint,
                        "row": {k: clean(v) for k, v in r.row.items()}} for r in recs], indent=2, ensure_ascii=False,
                      default=str)
