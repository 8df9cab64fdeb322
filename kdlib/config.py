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
  smsa: {teacher: {epochs: 1}, per_student: {bert-small: {epochs: 2}}}
  nergrit: {students: [bilstm]}   # optional: only these of distill.students for this dataset
per_student:                      # optional overrides of the distill section for one student
  bert-small: {epochs: 3}
```
Distill settings, last wins: distill < per_dataset.D.distill < per_student.S < per_dataset.D.per_student.S.
```yaml
ablation: {loss: {}}              # optional: the ablation stages of notebooks 03-05 (see _ablation below)
```
Every unknown key, dataset, student, loss or wrongly typed value is an error naming it and the file; so is a number
outside its range (the LIMITS tables of kdlib.params), an entry listed twice, a key given twice, and
a name that becomes a folder but is too long or holds other characters than FOLDER_NAME allows.
"""
from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from kdlib import limits, owndata, params, rundir, textio
from kdlib.errors import ConfigError, unknown_name
from kdlib.params import (
    EMBEDDINGS,
    LOSSES,
    OPTION_LIMITS,
    TRANSFER_KINDS,
    AblationParams,
    DistillParams,
    ProfileParams,
    TeacherParams,
    get_student,
)

TOP_KEYS = {"study", "description", "data_dir", "output_dir", "datasets", "seeds", "threads", "teacher", "distill",
            "per_dataset", "per_student"}
TOP_KEYS |= {"device"}  # auto | cpu | cuda for training and logit caching: how runs execute, like threads
TOP_KEYS |= {"ablation"}  # the ablation stages (notebooks 03-05), parsed by _ablation below
TOP_KEYS |= {"teachers_from"}  # another study's finished teachers, instead of training this study's own
TOP_KEYS |= {"published"}  # the study's published folder (reports/<study>): datasets finished elsewhere count
# Set by the runner per run, never by a params file.
RUN_OWNED = {"dataset", "out_dir", "data_dir", "seed", "threads", "student", "teacher_dir", "loss", "alpha",
             "temperature", "student_options"}
RUN_OWNED |= {"stage", "variant"}  # ablation runs: set by the runner
RUN_OWNED |= {"device"}  # the study's device: (top level), like threads
RUN_OWNED |= {"cache_dir", "embedding_dir"}  # inside the study's own folder: a study reads no cache it did not write
DISTILL_EXTRA = {"students", "variants", "student_options"}
# Settings of the word-level students' inputs: a study-wide recipe applies them to BiLSTM/CNN only.
WORD_ONLY = {"embedding", "freeze_embeddings", "embedding_text", "word_dropout", "min_freq", "max_vocab", "max_words"}


def _reads_words(student: str) -> bool:
    return get_student(student).kind == "word"
FOLDER_NAME, FOLDER_RULE = rundir.FOLDER_NAME, rundir.FOLDER_RULE  # names that become folders


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
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
    own_datasets: dict[str, dict] = field(default_factory=dict)  # name -> checked definition (kdlib.owndata)
    teacher: dict[str, Any] = field(default_factory=dict)
    students: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = (Variant("mse"), Variant("ce"))
    distill: dict[str, Any] = field(default_factory=dict)
    student_options: dict[str, dict] = field(default_factory=dict)
    per_dataset: dict[str, dict[str, dict]] = field(default_factory=dict)  # dataset -> {teacher: {..}, distill: {..}}

    def dataset_param(self, dataset: str) -> str | dict:
        """A run's `dataset` parameter: the IndoNLU key, or the checked definition of your own dataset."""
        return self.own_datasets.get(dataset, dataset)

    def dataset_key(self, name: str) -> str:
        """A dataset of this study by name (an IndoNLU key in any case, or one of its own datasets' names)."""
        from kdlib.data import get_spec

        if name in self.own_datasets:
            return name
        key = get_spec(str(name)).key
        if key not in self.datasets:
            raise ConfigError(f"{self.path}: dataset(s) {key} not in this study ({', '.join(self.datasets)}).")
        return key

    def teacher_for(self, dataset: str) -> dict[str, Any]:
        return {**self.teacher, **self.per_dataset.get(dataset, {}).get("teacher", {})}

    def students_for(self, dataset: str) -> tuple[str, ...]:
        """The students a dataset gets: per_dataset.D.students, else every student of distill.students."""
        return self.per_dataset.get(dataset, {}).get("students") or self.students

    per_student: dict[str, dict] = field(default_factory=dict)  # student -> distill overrides
    student_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)  # student -> its own seeds
    student_variants: dict[str, tuple[Variant, ...]] = field(default_factory=dict)  # student -> its own variants

    ablation: Ablation | None = None  # the ablation stages, when the file has an ablation: section
    profile: dict[str, Any] | None = None  # ProfileParams settings when the file has a profile: section
    tracking: str | None = None  # "mlflow": log every finished run to MLflow (kdlib.tracking)
    teachers_from: str | None = None  # a study name (under output_dir) or study folder whose teachers this one reads
    published: str | None = None  # its published folder (absolute; kdlib.published), e.g. reports/<study>

    def teachers_dir(self, root: Path) -> Path:
        """The study folder whose teacher/<dataset>/teacher runs this study's students read: a study name is a
        sibling of this study's folder; a path (with a / or starting with . or ~) is relative to the params file."""
        if not self.teachers_from:
            return self.study_dir(root)
        if "/" in self.teachers_from or self.teachers_from.startswith((".", "~")):
            return (self.path.parent / Path(self.teachers_from).expanduser()).resolve()
        return self.study_dir(root).with_name(self.teachers_from)

    def distill_for(self, dataset: str, student: str = "") -> dict[str, Any]:
        """Distill settings, last wins: distill < per_dataset.D.distill < per_student.S < per_dataset.D.per_student.S.

        The study-wide sections hold one recipe for every student: their word-student settings (WORD_ONLY) reach
        word students only; a per_student section sets them for its student as written."""
        here = self.per_dataset.get(dataset, {})
        shared = {**self.distill, **here.get("distill", {})}
        if student and not _reads_words(student):
            shared = {k: v for k, v in shared.items() if k not in WORD_ONLY}
        return {**shared, **self.per_student.get(student, {}), **here.get("per_student", {}).get(student, {})}

    def seeds_for(self, student: str) -> tuple[int, ...]:
        """The seeds a student runs with: per_student.S.seeds, else the study's seeds."""
        return self.student_seeds.get(student) or self.seeds

    def variants_for(self, student: str) -> tuple[Variant, ...]:
        """The variants a student runs: per_student.S.variants, else distill.variants."""
        return self.student_variants.get(student) or self.variants

    def study_dir(self, root: Path) -> Path:
        base = Path(self.output_dir)
        return (base if base.is_absolute() else root / base) / self.name


def _per_student(raw: Any, where: str, base: Path, *, seeds_ok: bool = True) -> dict[str, dict]:
    """student -> distill overrides, each checked like a distill: section."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of student name -> distill settings.")
    extra = {"seeds", "variants"} if seeds_ok else set()  # the top-level per_student only: the study's plan
    return {get_student(str(name)).name: _distill_section(section or {}, extra, f"{where}.{name}", base)
            for name, section in raw.items()}


def _student_seeds(raw: Any, where: str) -> dict[str, tuple[int, ...]]:
    """per_student.S.seeds: a student that runs with fewer (or other) seeds than the study."""
    out = {}
    for name, section in (raw or {}).items():
        if isinstance(section, dict) and "seeds" in section:
            seeds = section["seeds"]
            if not isinstance(seeds, list) or not seeds or not all(_type_ok(x, int) for x in seeds) or \
                    len(set(seeds)) != len(seeds):
                raise ConfigError(f"{where}.{name}.seeds: a non-empty list of distinct integers, got {seeds!r}.")
            out[get_student(str(name)).name] = tuple(seeds)
    return out


def _student_variants(raw: Any, where: str) -> dict[str, tuple[Variant, ...]]:
    """per_student.S.variants: a student distilled with other variants than distill.variants (e.g. KD only)."""
    out = {}
    for name, section in (raw or {}).items():
        if isinstance(section, dict) and "variants" in section:
            values = section["variants"]
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}.{name}.variants: a non-empty list of variants, got {values!r}.")
            variants = tuple(_variant(v, f"{where}.{name}.variants[{i}]") for i, v in enumerate(values))
            _distinct(variants, f"{where}.{name}.variants")
            out[get_student(str(name)).name] = variants
    return out


def _distill_section(section: dict, allowed_extra: set[str], where: str, base: Path) -> dict:
    """A distill: section (or its per_dataset / per_student overrides), with the recipe's names and paths checked:
    transfer (a TRANSFER_KINDS name or a text file), embedding (an EMBEDDINGS name or a .vec file), their paths
    resolved."""
    out = _check_section(section, DistillParams, allowed_extra, where)
    if "transfer" in out and out["transfer"] not in TRANSFER_KINDS:
        out["transfer"] = _local_path(out["transfer"], base, f"{where}.transfer")
    if "embedding" in out and out["embedding"] not in EMBEDDINGS:
        out["embedding"] = _local_path(out["embedding"], base, f"{where}.embedding")
    if out.get("embedding_text"):
        out["embedding_text"] = _local_path(out["embedding_text"], base, f"{where}.embedding_text")
    return out  # sizes and rates: params.LIMITS, checked by _check_section
def _student_options(student, options: dict, where: str) -> None:
    """A student's options: known to it, of its defaults' type, within params.OPTION_LIMITS."""
    for key, value in options.items():
        if key not in student.defaults:
            raise ConfigError(f"{where}: unknown option {key!r}; {student.name} has "
                              f"{', '.join(sorted(student.defaults))}.")
        default = student.defaults[key]
        hint = list if isinstance(default, tuple) else type(default) if default is not None else Any
        if hint is not Any and not _type_ok(value, float if hint is float else hint):
            raise ConfigError(f"{where}.{key}: {value!r} is a {type(value).__name__}, expected {hint.__name__}.")
        _check_limit(value, OPTION_LIMITS.get(key), f"{where}.{key}")


def _dataset_students(raw: Any, students: tuple[str, ...], where: str) -> tuple[str, ...] | None:
    """The students one dataset gets (a subset of distill.students); None: all of them."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: a non-empty list of students, got {raw!r}.")
    chosen = tuple(get_student(str(s)).name for s in raw)
    _distinct(chosen, where)
    outside = [s for s in chosen if s not in students]
    if outside:
        raise ConfigError(f"{where}: {', '.join(outside)} not in distill.students ({', '.join(students)}).")
    return chosen


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
        _check_limit(value, _limits(cls).get(key), f"{where}.{key}", none_ok=_type_ok(None, hints[key]))
    return {k: v for k, v in section.items() if k not in allowed_extra}


def _limits(cls) -> dict:
    return params.PROFILE_LIMITS if cls is params.ProfileParams else params.LIMITS


def _check_limit(value: Any, limit, where: str, *, none_ok: bool = False) -> None:
    """One line naming the key (in `where`), the value and what is allowed."""
    if limit is None or (value is None and none_ok) or limit.ok(value):
        return
    if isinstance(value, list):
        _distinct(value, where)
    raise ConfigError(f"{where}: {value!r} is out of range; allowed: {limit.allowed}{' or null' * none_ok}.")


def _distinct(values: list | tuple, where: str) -> None:
    """Refuse a list naming the same entry twice: both would plan the same runs, into the same folders."""
    seen = set()
    for v in values:
        if repr(v) in seen:
            raise ConfigError(f"{where}: {v!r} is listed twice in {list(values)!r}; list each entry once.")
        seen.add(repr(v))


def _variant(raw: Any, where: str) -> Variant:
    if isinstance(raw, str):
        raw = {"loss": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a variant is a loss name or a mapping like {{loss: kl, temperature: 2}}, "
                          f"not {raw!r}.")
    unknown = set(raw) - {"loss", "alpha", "temperature"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a variant has loss, alpha, "
                          "temperature.")
    for key, value in raw.items():
        if not _type_ok(value, str if key == "loss" else float):
            raise ConfigError(f"{where}.{key}: {value!r} is a {type(value).__name__}, expected "
                              f"{'a loss name' if key == 'loss' else 'a number'}.")
    v = Variant(**raw)
    if v.loss not in LOSSES:
        raise unknown_name("loss", v.loss, LOSSES)
    if not 0.0 <= float(v.alpha) <= 1.0 or float(v.temperature) <= 0:
        raise ConfigError(f"{where}: alpha must be in [0, 1] and temperature > 0, got {raw!r}.")
    return v


def load_params(path: str | os.PathLike) -> Study:
    """Read and validate a whole study file before anything runs."""
    from kdlib.data import get_spec
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found; see params/ for examples.")
    try:
        raw = yaml.load(textio.read_text(path), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a params file is a YAML mapping (study:, datasets:, ...), got "
                          f"{type(raw).__name__}.")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                          f"{', '.join(sorted(TOP_KEYS))}.")
    for key in ("study", "datasets"):
        if key not in raw:
            raise ConfigError(f"{path}: missing required key {key!r}.")
    name = raw["study"]
    if not isinstance(name, str) or not FOLDER_NAME.fullmatch(name):
        raise ConfigError(f"{path}: study must be a plain folder name ({FOLDER_RULE}), got {name!r}.")
    datasets = raw["datasets"]
    if not isinstance(datasets, list) or not datasets:
        raise ConfigError(f"{path}: datasets must be a non-empty list of dataset keys or definitions of your own "
                          "(name:, task:, train:, ...).")
    own = {}
    for i, entry in enumerate(datasets):
        if owndata.is_definition(entry):
            d = owndata.definition(entry, path.resolve().parent, f"{path}: datasets[{i}]")
            if d["name"] in own:
                raise ConfigError(f"{path}: datasets[{i}]: a dataset named {d['name']!r} is listed twice.")
            own[d["name"]] = d
    datasets = tuple(d["name"] if owndata.is_definition(d) else get_spec(str(d)).key for d in datasets)
    _distinct(datasets, f"{path}: datasets")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(_type_ok(s, int) for s in seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}.")
    _check_limit(seeds, limits.distinct(limits.SEED), f"{path}: seeds")

    base = path.resolve().parent
    teacher = _teacher_paths(_check_section(raw.get("teacher") or {}, TeacherParams, set(), f"{path}: teacher"), base)
    distill_raw = raw.get("distill") or {}
    distill = _distill_section(distill_raw, DISTILL_EXTRA, f"{path}: distill", base)
    if not isinstance(distill_raw.get("students", []), list) or not isinstance(distill_raw.get("variants", []), list):
        raise ConfigError(f"{path}: distill.students and distill.variants are lists.")
    students = tuple(get_student(str(s)).name for s in distill_raw.get("students", []))
    _distinct(students, f"{path}: distill.students")
    variants = tuple(_variant(v, f"{path}: distill.variants[{i}]")
                     for i, v in enumerate(distill_raw.get("variants", ["mse", "ce"])))
    _distinct(variants, f"{path}: distill.variants")
    options = distill_raw.get("student_options") or {}
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise ConfigError(f"{path}: distill.student_options maps a student name to a mapping of options.")
    for student, chosen in options.items():
        _student_options(get_student(student), chosen, f"{path}: distill.student_options.{student}")
    per_dataset = {}
    for key, section in (raw.get("per_dataset") or {}).items():
        where = f"{path}: per_dataset.{key}"
        dataset = str(key) if key in own else get_spec(str(key)).key
        if dataset in per_dataset:
            raise ConfigError(f"{where}: {dataset} has two per_dataset sections; merge them into one.")
        if dataset not in datasets:
            raise ConfigError(f"{where}: {dataset} is not in this study's datasets ({', '.join(datasets)}).")
        if not isinstance(section, dict) or set(section) - {"teacher", "distill", "per_student", "students"}:
            raise ConfigError(f"{where}: expected a mapping with teacher:, distill:, per_student: and/or students: "
                              "sections.")
        per_dataset[dataset] = {
            "teacher": _teacher_paths(_check_section(section.get("teacher") or {}, TeacherParams, set(),
                                                     f"{where}.teacher"), base),
            "distill": _distill_section(section.get("distill") or {}, set(), f"{where}.distill", base),
            "per_student": _per_student(section.get("per_student"), f"{where}.per_student", base, seeds_ok=False),
            "students": _dataset_students(section.get("students"), students, f"{where}.students")}
    per_student = _per_student(raw.get("per_student"), f"{path}: per_student", base)
    student_seeds = _student_seeds(raw.get("per_student"), f"{path}: per_student")
    student_variants = _student_variants(raw.get("per_student"), f"{path}: per_student")
    threads = raw.get("threads", 0)
    if not _type_ok(threads, int):
        raise ConfigError(f"{path}: threads must be an integer, got {threads!r}.")
    _check_limit(threads, limits.THREADS, f"{path}: threads")
    device = raw.get("device", "auto")
    _check_limit(device, limits.DEVICE, f"{path}: device")
    return Study(name=name, path=path.resolve(), datasets=datasets, seeds=tuple(seeds),
                 description=str(raw.get("description", "")), data_dir=_file_relative(raw.get("data_dir"), base),
                 output_dir=_file_relative(raw.get("output_dir"), base) or "outputs", threads=threads, device=device,
                 own_datasets=own, teacher=teacher,
                 students=students, variants=variants, distill=distill, student_options=options,
                 per_dataset=per_dataset, per_student=per_student, student_seeds=student_seeds,
                 student_variants=student_variants,
                 ablation=_ablation(raw.get("ablation"), path, students, datasets),
                 profile=_profile(raw.get("profile", False), path, datasets),
                 tracking=_tracking(raw.get("tracking"), path),
                 teachers_from=_teachers_from(raw, path, per_dataset), published=_published(raw, path, base))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a params file with two `distill:` sections would lose one."""

    def construct_mapping(self, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in keys:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
            keys.add(key)
        return super().construct_mapping(node, deep)


# ----------------------------------------------------------------------------------------------------------------
# The ablation section (notebooks 03-05)
#
# ablation:
#   seeds: [0, 1, 2]                 # default [0, 1, 2]: ablations compare variants over seeds
#   students: [bilstm]               # default: distill.students, else [bilstm]
#   loss: {}                         # {} = the default grid; or variants: [mse, {loss: kl, temperature: 2}, ...]
#   embedding:                       # word students: variants; BERT students: bert_variants (init folders)
#     variants: [random, word2vec, {embedding: fasttext, freeze_embeddings: true}, /path/cc.id.300.vec]
#     bert_variants: [random, /path/to/google-bert-miniature]
#   augmentation:
#     variants: [{transfer: train, transfer_size: 1}, {transfer: tang, transfer_size: 5}, {transfer: indonlu, ...}]
#     p_mask: 0.1                    # any other AblationParams field applies to every run of the stage
# A stage runs when its key is present. Relative paths are relative to the params file.

ABLATION_KINDS = ("loss", "embedding", "augmentation")
ABLATION_KEYS = {"seeds", "students", *ABLATION_KINDS}
DEFAULT_ABLATION_SEEDS = (0, 1, 2)
KD_KEYS = ("loss", "alpha", "temperature")


@dataclass(frozen=True)
class AblationVariant:
    """One cell of an ablation grid: AblationParams settings, plus student options (a BERT student's init)."""

    settings: dict[str, Any]
    student_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AblationStage:
    kind: str  # one of ABLATION_KINDS
    variants: tuple[AblationVariant, ...]  # for every student (embedding: word students only)
    bert_variants: tuple[AblationVariant, ...] = ()  # embedding: BERT students
    settings: dict[str, Any] = field(default_factory=dict)  # AblationParams fields for every run of the stage


@dataclass(frozen=True)
class Ablation:
    seeds: tuple[int, ...]
    students: tuple[str, ...]
    stages: tuple[AblationStage, ...]


DEFAULT_ABLATION_VARIANTS: dict[str, list] = {
    # the grid: MSE; KL at T = 1, 2, 4, 8 (scaled by T^2); no KD; alpha-mixes with MSE and with KL(T=2)
    "loss": ["mse", *({"loss": "kl", "temperature": t} for t in (1, 2, 4, 8)), "ce",
             *({"loss": "mse", "alpha": a} for a in (0.1, 0.5)),
             *({"loss": "kl", "temperature": 2, "alpha": a} for a in (0.1, 0.5))],
    "embedding": ["random", "word2vec", {"embedding": "word2vec", "freeze_embeddings": True}, "fasttext",
                  {"embedding": "fasttext", "freeze_embeddings": True}],
    "augmentation": [{"transfer": "train", "transfer_size": 1}, *({"transfer": k, "transfer_size": n}
                                                                 for k in ("tang", "indonlu") for n in (5, 10))],
}


# One rule for relative paths: a relative path written in a params file is relative to that file's folder (data_dir,
# output_dir, transfer and embedding files, your own dataset's files, a teacher's local base_model or models_dir,
# teachers_from). What the file does not write comes from the command line and the working directory, as any
# command's paths do: --data-dir, $KDEXAM_DATA_DIR, and the default output folder `outputs` under the directory
# `kdexam run` is started in.
def _file_relative(value: Any, base: Path) -> str | None:
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _teacher_paths(section: dict, base: Path) -> dict:
    """A teacher's models_dir, and a base_model that is a local folder ("./x", "~/x", or a folder that exists
    beside the file), resolved against the params file's folder; a hub id stays as it is."""
    out = dict(section)
    if "models_dir" in out:
        out["models_dir"] = _file_relative(out["models_dir"], base)
    model = out.get("base_model")
    if isinstance(model, str) and (model.startswith((".", "~", "/")) or (base / model).is_dir()):
        out["base_model"] = _file_relative(model, base)
    return out


def _local_path(value: str, base: Path, where: str, *, folder: bool = False) -> str:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not (path.is_dir() if folder else path.is_file()):
        raise ConfigError(f"{where}: {value!r} is not {'a folder' if folder else 'a file'} (looked for {path}).")
    return str(path.resolve())


def _ablation_variant(kind: str, raw: Any, base: Path, where: str, *, bert: bool = False) -> AblationVariant:
    """One variant of an ablation stage, validated; shorthand strings name the varied setting."""
    if kind == "loss":
        v = _variant(raw, where)
        return AblationVariant({"loss": v.loss, "alpha": float(v.alpha), "temperature": float(v.temperature)})
    main = "init" if bert else {"embedding": "embedding", "augmentation": "transfer"}[kind]
    allowed = {"init"} if bert else {"embedding": {"embedding", "freeze_embeddings"},
                                     "augmentation": {"transfer", "transfer_size"}}[kind]
    raw = {main: raw} if isinstance(raw, str) else raw
    if not isinstance(raw, dict) or main not in raw or set(raw) - allowed:
        raise ConfigError(f"{where}: a variant is a {main} name or a mapping with keys {', '.join(sorted(allowed))}, "
                          f"not {raw!r}.")
    raw = dict(raw)
    if not isinstance(raw[main], str):
        raise ConfigError(f"{where}.{main}: {raw[main]!r} is a {type(raw[main]).__name__}, expected a name or path.")
    if bert:
        init = raw["init"] if raw["init"] == "random" else _local_path(raw["init"], base, where, folder=True)
        return AblationVariant({}, {"init": init})
    if kind == "embedding":
        if raw["embedding"] not in EMBEDDINGS:
            raw["embedding"] = _local_path(raw["embedding"], base, where)
        if not isinstance(raw.get("freeze_embeddings", False), bool):
            raise ConfigError(f"{where}.freeze_embeddings: {raw['freeze_embeddings']!r} is not true or false.")
        return AblationVariant({"freeze_embeddings": False, **raw})
    if raw["transfer"] not in TRANSFER_KINDS:
        raw["transfer"] = _local_path(raw["transfer"], base, where)
    size = raw.setdefault("transfer_size", 1)
    if not _type_ok(size, float) or size < 1 or (raw["transfer"] == "train" and size != 1):
        raise ConfigError(f"{where}.transfer_size: {size!r}; a transfer set is >= 1 times the train split, and "
                          "transfer 'train' is exactly 1.")
    return AblationVariant({"transfer": raw["transfer"], "transfer_size": float(size)})


def _ablation_stage(kind: str, raw: Any, base: Path, where: str) -> AblationStage:
    if raw is None or raw is True:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping (variants: [...] and settings), or {{}} for the default grid.")
    extra = {"variants"} | ({"bert_variants"} if kind == "embedding" else set()) | (set() if kind == "loss" else
                                                                                      set(KD_KEYS))
    settings = _check_section(raw, AblationParams, extra, where)
    if kind != "loss" and any(k in raw for k in KD_KEYS):  # the loss every run of this stage distils with
        v = _variant({k: raw[k] for k in KD_KEYS if k in raw}, f"{where}.loss")
        settings.update(loss=v.loss, alpha=float(v.alpha), temperature=float(v.temperature))
    if settings.get("embedding_text"):
        settings["embedding_text"] = _local_path(settings["embedding_text"], base, f"{where}.embedding_text")

    def parse(key: str, bert: bool = False) -> tuple[AblationVariant, ...]:
        values = raw.get(key, ["random"] if bert else DEFAULT_ABLATION_VARIANTS[kind])
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{key}: a non-empty list of variants.")
        out = tuple(_ablation_variant(kind, v, base, f"{where}.{key}[{i}]", bert=bert) for i, v in enumerate(values))
        if len(set(map(repr, out))) != len(out):
            raise ConfigError(f"{where}.{key}: the same variant is listed twice.")
        return out

    return AblationStage(kind, parse("variants"), parse("bert_variants", bert=True) if kind == "embedding" else (),
                         settings)


def _ablation(raw: Any, path: Path, students: tuple[str, ...], datasets: tuple[str, ...]) -> Ablation | None:
    """The study's ablation section, validated whole (see the comment above)."""
    if raw is None:
        return None
    where = f"{path}: ablation"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with seeds, students and one or more of "
                          f"{', '.join(ABLATION_KINDS)}.")
    unknown = set(raw) - ABLATION_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                          f"{', '.join(sorted(ABLATION_KEYS))}.")
    seeds = raw.get("seeds", list(DEFAULT_ABLATION_SEEDS))
    if not isinstance(seeds, list) or not seeds or not all(_type_ok(s, int) for s in seeds) or \
            len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}.seeds: a list of distinct integers, got {seeds!r}.")
    _check_limit(seeds, limits.distinct(limits.SEED), f"{where}.seeds")
    chosen = raw.get("students", list(students) or ["bilstm"])
    if not isinstance(chosen, list) or not chosen:
        raise ConfigError(f"{where}.students: a non-empty list of students, got {chosen!r}.")
    _distinct([get_student(str(s)).name for s in chosen], f"{where}.students")
    base = path.resolve().parent
    stages = tuple(_ablation_stage(kind, raw[kind], base, f"{where}.{kind}") for kind in ABLATION_KINDS if kind in raw)
    if not stages:
        raise ConfigError(f"{where}: name at least one of {', '.join(ABLATION_KINDS)} (an empty mapping runs its "
                          "default grid).")
    for stage in stages:
        pools = [v.settings["transfer"] for v in stage.variants
                 if v.settings.get("transfer", "train") not in ("train", "tang")]
        if "facqa" in datasets and pools:
            raise ConfigError(f"{where}.augmentation: FacQA needs a question per passage; an unlabelled pool "
                              f"({pools[0]}) has none. Use transfer: tang, or leave facqa out of this study.")
    return Ablation(tuple(seeds), tuple(get_student(str(s)).name for s in chosen), stages)


# ----------------------------------------------------------------------------------------------------------------
# The profile section (notebook 06 per dataset, then the analysis, notebook 07, over the whole study)
#
# profile:                          # present (even empty): profile every dataset, then analyse the study
#   thread_counts: [1, 0]           # any ProfileParams field; 0 = all cores
#   batch_sizes: [1, 32]
#   runs: 30

TOP_KEYS |= {"profile"}
RUN_OWNED |= {"study_dir"}  # profile and analysis runs: set by the runner


def _profile(raw: Any, path: Path, datasets: tuple[str, ...]) -> dict[str, Any] | None:
    """The profile section's ProfileParams settings; None (no profile or analysis runs) when it is absent or false."""

    if raw is False:
        return None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: profile: expected a mapping of ProfileParams settings (or nothing), got {raw!r}.")
    section = _check_section(raw or {}, ProfileParams, set(), f"{path}: profile")
    params.check_profile_params(ProfileParams(study_dir="", dataset=datasets[0], out_dir="", **section),
                                where=f"{path}: profile")
    return section


# ----------------------------------------------------------------------------------------------------------------
# Tracking (optional): `tracking: mlflow` logs every finished run's parameters, metrics and executed notebook to
# $MLFLOW_TRACKING_URI, else a file store in <output_dir>/mlruns (kdlib.tracking)

TOP_KEYS |= {"tracking"}
TRACKERS = ("mlflow",)


def _tracking(raw: Any, path: Path) -> str | None:
    if raw is None or raw is False:
        return None
    if raw not in TRACKERS:
        raise ConfigError(f"{path}: tracking: {raw!r} is not a tracker; known: {', '.join(TRACKERS)}.")
    return raw


def _published(raw: dict, path: Path, base: Path) -> str | None:
    """`published: ../reports/S`: the folder `kdexam report --publish` writes for this study (it may not exist yet);
    relative to the params file's folder."""
    value = raw.get("published")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: published: the study's published folder (e.g. ../reports/{raw['study']}), got "
                          f"{value!r}.")
    folder = Path(_file_relative(value, base))
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{path}: published: {folder} is a file, not a folder; name the folder `kdexam report "
                          "--publish` writes.")
    return str(folder)


# ----------------------------------------------------------------------------------------------------------------
# Borrowed teachers: `teachers_from: core-offline` (a study name under output_dir, or a study folder) makes this
# study's students and ablations read that study's finished teachers and their logit caches. An expensive teacher
# (BERT-base on a GPU) is then trained once and examined by any number of studies. Its settings are the other
# study's, so this file may not set any.

def _teachers_from(raw: dict, path: Path, per_dataset: dict[str, dict]) -> str | None:
    value = raw.get("teachers_from")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: teachers_from: a study name or study folder, got {value!r}.")
    if "/" not in value and not value.startswith((".", "~")) and not FOLDER_NAME.fullmatch(value):
        raise ConfigError(f"{path}: teachers_from: {value!r} is not a study name ({FOLDER_RULE}) nor a path.")
    if value == raw["study"]:
        raise ConfigError(f"{path}: teachers_from names this study itself ({value!r}); drop it to train its teachers.")
    overridden = [f"per_dataset.{d}.teacher" for d, section in per_dataset.items() if section["teacher"]]
    if raw.get("teacher") or overridden:
        raise ConfigError(f"{path}: a study with teachers_from ({value!r}) reads that study's teachers as they were "
                          f"trained; remove its {', '.join(['teacher'] * bool(raw.get('teacher')) + overridden)}.")
    if raw.get("profile") not in (None, False):
        raise ConfigError(f"{path}: profile: measures a study's own teachers and students; a study with "
                          f"teachers_from has no teachers of its own. Profile {value!r} instead.")
    return value
