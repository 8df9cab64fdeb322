"""Range and choice limits of parameters, declared as tables beside the dataclasses they limit.

`params.LIMITS` (teacher, distill and ablation fields) and `profile.LIMITS` map a field name to a Limit; kdlib.config
checks every value of a params file against them when it loads the file, after the type check, so a study with a
negative epoch count or a probability of 2 stops before any run starts. None passes a Limit where the field's type
allows None (caps: `int | None`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limit:
    ok: Callable[[Any], bool]
    allowed: str  # what an error message says the value may be


def at_least(low: float) -> Limit:
    return Limit(lambda v: v >= low, f">= {low}")


def above(low: float) -> Limit:
    return Limit(lambda v: v > low, f"> {low}")


def within(low: float, high: float) -> Limit:
    return Limit(lambda v: low <= v <= high, f"in [{low}, {high}]")


def one_of(*choices: str) -> Limit:
    return Limit(lambda v: v in choices, "one of " + ", ".join(choices))


def distinct(item: Limit | None = None) -> Limit:
    """A non-empty list of distinct values, each within `item`."""
    return Limit(lambda v: bool(v) and len(set(map(repr, v))) == len(v) and all(item is None or item.ok(x) for x in v),
                 "a non-empty list of distinct values" + (f", each {item.allowed}" if item else ""))


SEED = within(0, 2**32 - 1)  # numpy's seed range; a seed also names a run folder (-s<seed>)
COUNT = at_least(1)  # epochs, batch sizes, caps on examples: 0 would train or read nothing
THREADS = at_least(0)  # 0: every core
PROBABILITY = within(0, 1)
RATE = above(0)
DEVICE = one_of("auto", "cpu", "cuda")  # auto: CUDA when torch sees a GPU, else the CPU
