"""A study's parameter file: strict validation at the edge.

```yaml
study: quickstart                 # outputs/<study>/ holds every run
datasets: [smsa, nergrit]
seeds: [0]
teacher: {base_model: offline, epochs: 2, max_train_examples: 1000}     # any TeacherParams field
distill:
  students: [bilstm, bert-tiny]
  variants: [mse, ce]             # or dicts: {loss: kl, temperature: 2, alpha: 0.5}
  epochs: 10                      # any other DistillParams field
  student_options: {bilstm: {emb_dim: 100}}
per_dataset:                      # optional overrides of the teacher/distill sections for one dataset
  smsa: {teacher: {epochs: 1}}
per_student:                      # optional overrides of the distill section for one student
  bert-small: {epochs: 3}
```
Every unknown key, dataset, student, loss or wrongly typed value is an error naming it and the file.
"""
from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from kdlib.errors import ConfigError, unknown_name
from kdlib.exam import DistillParams, TeacherParams

TOP_KEYS = {"study", "description", "data_dir", "output_dir", "datasets", "seeds", "threads", "teacher", "distill",
            "per_dataset", "per_student"}
# Set by the runner per run, never by a params file.
RUN_OWNED = {"dataset", "out_dir", "data_dir", "seed", "threads", "student", "teacher_dir", "loss", "alpha",
             "temperature", "student_options"}
DISTILL_EXTRA = {"students", "variants", "student_options"}


@dataclass(frozen=True)
class Variant:
    """One distillation setting; `ce` is the same student trained without a teacher."""

    loss: str = "mse"
    alpha: float = 0.0
    temperature: float = 1.0


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    datasets: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    description: str = ""
    data_dir: str | None = None
    output_dir: str = "outputs"
    threads: int = 0
    teacher: dict[str, Any] = field(default_factory=dict)
    students: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = (Variant("mse"), Variant("ce"))
    distill: dict[str, Any] = field(default_factory=dict)
    student_options: dict[str, dict] = field(default_factory=dict)
    per_dataset: dict[str, dict[str, dict]] = field(default_factory=dict)  # dataset -> {teacher: {..}, distill: {..}}

    def teacher_for(self, dataset: str) -> dict[str, Any]:
        return {**self.teacher, **self.per_dataset.get(dataset, {}).get("teacher", {})}

    per_student: dict[str, dict] = field(default_factory=dict)  # student -> distill overrides

    def distill_for(self, dataset: str, student: str = "") -> dict[str, Any]:
        return {**self.distill, **self.per_dataset.get(dataset, {}).get("distill", {}),
                **self.per_student.get(student, {})}

    def study_dir(self, root: Path) -> Path:
        base = Path(self.output_dir)
        return (base if base.is_absolute() else root / base) / self.name


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint)


def _check_section(section: dict, cls, allowed_extra: set[str], where: str) -> dict:
    hints = typing.get_type_hints(cls)
    settable = {f.name for f in fields(cls)} - RUN_OWNED
    for key, value in section.items():
        if key in allowed_extra:
            continue
        if key not in settable:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(sorted(settable | allowed_extra))}.")
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{where}.{key}: {value!r} is a {type(value).__name__}, expected "
                              f"{getattr(hints[key], '__name__', str(hints[key]))}.")
    return {k: v for k, v in section.items() if k not in allowed_extra}


def _variant(raw: Any, where: str) -> Variant:
    from kdlib.losses import LOSSES

    if isinstance(raw, str):
        raw = {"loss": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a variant is a loss name or a mapping like {{loss: kl, temperature: 2}}, "
                          f"not {raw!r}.")
    unknown = set(raw) - {"loss", "alpha", "temperature"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a variant has loss, alpha, "
                          "temperature.")
    v = Variant(**raw)
    if v.loss not in LOSSES:
        raise unknown_name("loss", v.loss, LOSSES)
    if not 0.0 <= float(v.alpha) <= 1.0 or float(v.temperature) <= 0:
        raise ConfigError(f"{where}: alpha must be in [0, 1] and temperature > 0, got {raw!r}.")
    return v


def load_params(path: str | os.PathLike) -> Study:
    """Read and validate a whole study file before anything runs."""
    from kdlib.data import get_spec
    from kdlib.models import get_student

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found; see params/ for examples.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a params file is a YAML mapping (study:, datasets:, ...), got {type(raw).__name__}.")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(TOP_KEYS))}.")
    for key in ("study", "datasets"):
        if key not in raw:
            raise ConfigError(f"{path}: missing required key {key!r}.")
    name = raw["study"]
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(f"{path}: study must be a plain folder name, got {name!r}.")
    datasets = raw["datasets"]
    if not isinstance(datasets, list) or not datasets:
        raise ConfigError(f"{path}: datasets must be a non-empty list of dataset keys.")
    datasets = tuple(get_spec(str(d)).key for d in datasets)
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(_type_ok(s, int) for s in seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}.")

    teacher = _check_section(raw.get("teacher") or {}, TeacherParams, set(), f"{path}: teacher")
    distill_raw = raw.get("distill") or {}
    distill = _check_section(distill_raw, DistillParams, DISTILL_EXTRA, f"{path}: distill")
    students = tuple(get_student(str(s)).name for s in distill_raw.get("students", []))
    variants = tuple(_variant(v, f"{path}: distill.variants[{i}]")
                     for i, v in enumerate(distill_raw.get("variants", ["mse", "ce"])))
    options = distill_raw.get("student_options") or {}
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise ConfigError(f"{path}: distill.student_options maps a student name to a mapping of options.")
    for student in options:
        get_student(student)
    per_dataset = {}
    for key, section in (raw.get("per_dataset") or {}).items():
        where = f"{path}: per_dataset.{key}"
        dataset = get_spec(str(key)).key
        if dataset not in datasets:
            raise ConfigError(f"{where}: {dataset} is not in this study's datasets ({', '.join(datasets)}).")
        if not isinstance(section, dict) or set(section) - {"teacher", "distill"}:
            raise ConfigError(f"{where}: expected a mapping with teacher: and/or distill: sections.")
        per_dataset[dataset] = {
            "teacher": _check_section(section.get("teacher") or {}, TeacherParams, set(), f"{where}.teacher"),
            "distill": _check_section(section.get("distill") or {}, DistillParams, set(), f"{where}.distill")}
    per_student = {get_student(str(name)).name: _check_section(section or {}, DistillParams, set(),
                                                               f"{path}: per_student.{name}")
                   for name, section in (raw.get("per_student") or {}).items()}
    threads = raw.get("threads", 0)
    if not _type_ok(threads, int):
        raise ConfigError(f"{path}: threads must be an integer, got {threads!r}.")
    return Study(name=name, path=path.resolve(), datasets=datasets, seeds=tuple(seeds),
                 description=str(raw.get("description", "")), data_dir=raw.get("data_dir"),
                 output_dir=str(raw.get("output_dir", "outputs")), threads=threads, teacher=teacher,
                 students=students, variants=variants, distill=distill, student_options=options,
                 per_dataset=per_dataset, per_student=per_student)
