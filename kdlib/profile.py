"""The resource profile of a dataset's teacher and students: size, CPU latency, peak RAM, ONNX and int8.

Every model of one dataset is measured in one process, on one machine, with the same settings and the same test
examples, so the ratios between models are fair:

- size: parameter count; bytes on disk of model.safetensors, of the ONNX export and of its int8 version;
- latency: for each thread count × batch size × input kind ("real" test examples at their own lengths, or
  "fixed": every input `fixed_length` positions of the model's own units, words or sub-words), `warmup`
  untimed batches then `runs` timed ones; median and p90 milliseconds per batch, throughput in examples/s;
- memory: peak RSS of a fresh process that loads the model and runs one batch, minus that process's RSS just
  before loading it (after importing the libraries), so the figure is the model's own cost (`model_mb`); and the
  same once every weight has been read (`resident_mb`): safetensors are memory-mapped, and one batch pages in only
  the embedding rows it uses, which a server sees grow towards the whole matrix;
- ONNX: `torch.onnx.export` (the TorchScript exporter: it needs no onnxscript and handles packed LSTMs),
  onnxruntime latency on the same batches, and the largest |ONNX - PyTorch| logit difference on real batches;
- int8: onnxruntime dynamic quantization of the ONNX model (weights int8, activations quantized on the fly), its
  latency, and its test F1 beside the fp32 model's on the same examples.

`run_profile` writes `profile.json` (the numbers, the machine, library versions and settings) and the ONNX files
into the run folder; kdlib.profile_tables shows it and kdlib.results reads it. `python -m kdlib.profile memory ...`
is the fresh process.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdlib import data, distill, models, params, rundir, teachers
from kdlib.errors import ConfigError, KdExamError
from kdlib.models import ModelOutput
from kdlib.parallel import usable_cores
from kdlib.params import ProfileParams
from kdlib.profile_tables import REFERENCE_NAME

log = logging.getLogger(__name__)

PROFILE = rundir.PROFILE
ENGINES = ("torch", "onnx", "int8")
OPSET = 17


class ProfileError(KdExamError):
    """A model that cannot be exported, run or measured."""


# ----------------------------------------------------------------------------------------------------------------
# The models of a dataset

@dataclass(frozen=True)
class ProfiledModel:
    """One model to profile: the teacher or a student architecture, with the run it was taken from."""

    name: str  # "teacher" or the student name
    run_dir: Path
    metrics: dict

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def kind(self) -> str:
        return "bert" if (self.model_dir / models.BERT_INFO).is_file() else "word"


def finished(run_dir: Path) -> bool:
    """A run folder with its metrics.json and model/: a model that can be profiled."""
    return (run_dir / rundir.METRICS).is_file() and (run_dir / "model").is_dir()


def find_models(study_dir: str | os.PathLike, dataset: str | dict | data.DatasetSpec) -> list[ProfiledModel]:
    """The teacher, then one run per student architecture (the distilled one with the lowest seed first).

    Cost depends on the architecture only, so variants and seeds of a student share its profile; quality per
    variant and seed is read from metrics.json by kdlib.results.
    """
    study_dir, key = Path(study_dir), data.get_spec(dataset).key
    teacher = rundir.teacher_dir(study_dir, key)
    if not finished(teacher):
        raise ConfigError(f"no finished teacher for {key} in {teacher}; run notebooks/01_teacher first "
                          "(kdexam run does this in order).")
    chosen: dict[str, tuple[tuple, Path, dict]] = {}
    for run in sorted(rundir.student_dirs(study_dir, key).glob("*/")):
        if not finished(run):
            continue
        m = rundir.read_json(run / rundir.METRICS)
        rank = (not m.get("kd", False), m.get("seed", 0), run.name)
        if m["model"] not in chosen or rank < chosen[m["model"]][0]:
            chosen[m["model"]] = (rank, run, m)
    order = list(params.STUDENTS)
    students = [ProfiledModel(name, run, m) for name, (_, run, m) in
                sorted(chosen.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))]
    return [ProfiledModel("teacher", teacher, rundir.read_json(teacher / rundir.METRICS)), *students]


def study_dataset(study_dir: str | os.PathLike, name: str) -> str | dict:
    """A dataset of a study by its folder name: an IndoNLU key, or your own dataset's definition, which its teacher's
    model folder carries (kdexam.json)."""
    if name.lower() in data.DATASETS:
        return name.lower()
    info = rundir.teacher_dir(study_dir, name) / "model" / models.BERT_INFO
    if info.is_file() and rundir.read_json(info).get("spec"):
        return rundir.read_json(info)["spec"]
    return data.get_spec(name).key  # an unknown name: the registry's error, with suggestions


def teacher_data_dir(study_dir: str | os.PathLike, dataset: str | dict) -> str | None:
    """The data folder the dataset's teacher was trained on (from its metrics.json), if it still exists."""
    path = rundir.teacher_dir(study_dir, data.get_spec(dataset).key) / rundir.METRICS
    folder = (rundir.read_json(path).get("params") or {}).get("data_dir") if path.is_file() else None
    return folder if folder and Path(folder).is_dir() else None


# ----------------------------------------------------------------------------------------------------------------
# Inputs: each model reads the same test examples in its own units

@dataclass
class ModelInputs:
    """A model's test-set features, how to batch them, and which batch keys it reads (in ONNX input order)."""

    features: list[dict]
    collator: Any
    keys: tuple[str, ...]
    tagging: bool


def _teacher(teacher: teachers.Teacher | str | os.PathLike) -> teachers.Teacher:
    return teacher if isinstance(teacher, teachers.Teacher) else teachers.Teacher.load(teacher)


def model_inputs(model: ProfiledModel, spec: data.DatasetSpec, test_ds,
                 teacher: teachers.Teacher | str | os.PathLike) -> ModelInputs:
    """Word students encode with their saved vocab.json; BERT models with the tokenizer they were trained with, at
    the teacher's max length. `teacher`: the dataset's Teacher, or its run folder."""
    from transformers import AutoTokenizer

    from kdlib.train import Collator

    if model.kind == "word":
        vocab = data.Vocab.load(model.model_dir / "vocab.json")
        max_words = (model.metrics.get("params") or {}).get("max_words", 256)
        feats = test_ds.map(data.encode_for_words, batched=True, remove_columns=test_ds.column_names,
                            fn_kwargs={"vocab": vocab, "spec": spec, "max_words": max_words}).to_list()
        keys = models.load_model(model.model_dir).input_keys  # word_ids, lengths (, case_ids)
        collator = Collator(pad_id=vocab.pad_id)
    else:
        teacher = _teacher(teacher)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(model, teacher))
        feats = teachers.bert_features(test_ds, tokenizer, spec, teacher.max_length, teacher.word_position)
        keys = tuple(k for k in ("input_ids", "attention_mask", "token_type_ids") if k in feats[0])
        collator = Collator(pad_id=tokenizer.pad_token_id)
    if spec.is_tagging:
        keys += ("word_index",)
    return ModelInputs(feats, collator, keys, spec.is_tagging)


def tokenizer_dir(model: ProfiledModel, teacher: teachers.Teacher | str | os.PathLike) -> Path:
    """The folder of the tokenizer a BERT model was trained with: its own, else the one it was trained with
    (distill.student_tokenizer_dir: its pretrained init's, or the teacher's)."""
    if any((model.model_dir / f).is_file() for f in rundir.TOKENIZER_FILES):
        return model.model_dir
    options = (model.metrics.get("params") or {}).get("student_options") or {}
    return distill.student_tokenizer_dir(options, _teacher(teacher).model_dir)


def _units(feature: dict) -> list[int]:
    return feature.get("input_ids") or feature["word_ids"]


def real_batches(inputs: ModelInputs, order: Sequence[int], batch_size: int, count: int) -> list[dict]:
    """`count` batches of consecutive examples of `order` (wrapping round), each padded to its longest."""
    n = len(order)
    return [_only(inputs.collator([inputs.features[order[(i * batch_size + j) % n]] for j in range(batch_size)]),
                  inputs.keys) for i in range(count)]


def fixed_batches(inputs: ModelInputs, order: Sequence[int], batch_size: int, length: int, count: int) -> list[dict]:
    """Inputs of exactly `length` positions cut from the test examples' own ids laid end to end."""
    stream = [i for k in order for i in _units(inputs.features[k])]
    stream = stream * (1 + length * batch_size * count // max(len(stream), 1))
    id_key = "input_ids" if "input_ids" in inputs.keys else "word_ids"
    batches = []
    for b in range(count):
        feats = []
        for j in range(batch_size):
            start = (b * batch_size + j) * length
            f = {id_key: stream[start:start + length]}
            if id_key == "input_ids":
                f["attention_mask"] = [1] * length
                if "token_type_ids" in inputs.keys:
                    f["token_type_ids"] = [0] * length
            if inputs.tagging:
                f["word_index"] = list(range(length))
            feats.append(f)
        batches.append(_only(inputs.collator(feats), inputs.keys))
    return batches


def _only(batch: dict, keys: Sequence[str]) -> dict:
    return {k: batch[k] for k in keys}


# ----------------------------------------------------------------------------------------------------------------
# Timing

@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    mean_ms: float
    examples_per_s: float
    runs: int
    p25_ms: float = float("nan")  # the interquartile range of the timed batches: how far to trust the median
    p75_ms: float = float("nan")


def time_interleaved(fns: dict[str, Callable[[dict], Any]], batches: dict[str, Sequence[dict]], warmup: int,
                     runs: int) -> dict[str, Timing]:
    """Warm every function up on `warmup` batches, then time `runs` rounds in which each times one batch, each
    round starting one function later: load that comes and goes on the machine falls on every model alike."""
    names = list(fns)
    for name in names:
        for i in range(warmup):
            fns[name](batches[name][i % len(batches[name])])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    examples = dict.fromkeys(names, 0)
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            batch = batches[name][(warmup + r) % len(batches[name])]
            started = time.perf_counter()
            fns[name](batch)
            seconds[name].append(time.perf_counter() - started)
            examples[name] += len(next(iter(batch.values())))
    return {name: _timing(seconds[name], examples[name]) for name in names}


def time_batches(fn: Callable[[dict], Any], batches: Sequence[dict], warmup: int, runs: int) -> Timing:
    """One function: `warmup` untimed batches, then `runs` timed ones (batches are reused round-robin)."""
    return time_interleaved({"": fn}, {"": batches}, warmup, runs)[""]


def _timing(seconds: Sequence[float], examples: int) -> Timing:
    ms = 1000 * np.asarray(seconds)
    p25, p75 = np.percentile(ms, [25, 75])
    return Timing(median_ms=float(np.median(ms)), p90_ms=float(np.percentile(ms, 90)), mean_ms=float(ms.mean()),
                  examples_per_s=examples / max(float(np.sum(seconds)), 1e-12), runs=len(ms), p25_ms=float(p25),
                  p75_ms=float(p75))


def resolve_threads(thread_counts: Sequence[int]) -> list[int]:
    """Thread counts with 0 replaced by the cores this process may use; duplicates dropped, order kept."""
    cores = usable_cores()
    out: list[int] = []
    for t in thread_counts:
        t = cores if int(t) <= 0 else int(t)
        if t not in out:
            out.append(t)
    return out


# ----------------------------------------------------------------------------------------------------------------
# ONNX and int8

class PositionalModel(nn.Module):
    """A kd-exam model as forward(*tensors) -> logits over `keys`, the form torch.onnx.export traces."""

    def __init__(self, model: nn.Module, keys: Sequence[str], right_pad: int = 0):
        super().__init__()
        self.model, self.keys, self.right_pad = model, tuple(keys), right_pad

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.keys, tensors))
        if self.right_pad:  # see export_onnx: keeps a CNN's "pad to the widest kernel" out of the trace
            batch["word_ids"] = F.pad(batch["word_ids"], (0, self.right_pad), value=self.model.config["pad_id"])
            if "case_ids" in batch:  # padding words are case 0 ("pad")
                batch["case_ids"] = F.pad(batch["case_ids"], (0, self.right_pad), value=0)
        return self.model(batch).logits


def export_onnx(model, example: dict, keys: Sequence[str], path: Path) -> Path:
    """Export with every sequence axis dynamic; `example` should hold examples of different lengths.

    A classification CNN pads inputs shorter than its widest kernel with a Python-level `max(...)`, which the
    tracer would freeze at the example's width; the exported graph instead always appends kernel-1 pad words
    (they are masked out, so the logits are unchanged) and the frozen pad is then always zero.
    """
    kernels = getattr(model, "kernel_sizes", None)
    right_pad = max(kernels) - 1 if kernels and model.shape not in ("tagging", "qa") else 0
    wrapper = PositionalModel(model, keys, right_pad).eval()
    axes = {k: ({0: "batch"} if example[k].dim() == 1 else {0: "batch", 1: f"{k}_length"}) for k in keys}
    axes["logits"] = {0: "batch", 1: "units"} if "word_index" in keys else {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        try:
            torch.onnx.export(wrapper, tuple(example[k] for k in keys), str(path), dynamo=False,
                              input_names=list(keys), output_names=["logits"], dynamic_axes=axes,
                              opset_version=OPSET, do_constant_folding=True)
        except Exception as e:  # the exporter raises many types; the user needs the model and the reason
            raise ProfileError(f"ONNX export of {type(model).__name__} to {path} failed: {e}") from e
    return path


def quantize_int8(onnx_path: Path, out_path: Path) -> Path:
    """onnxruntime dynamic quantization: weights of MatMul, Gather (embeddings), LSTM and Conv to 8 bits.

    Weights are signed int8, except in graphs with a Conv: onnxruntime's CPU ConvInteger only runs unsigned
    weights (microsoft/onnxruntime#3130), so those graphs are quantized to uint8 throughout.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    has_conv = any(node.op_type == "Conv" for node in onnx.load(str(onnx_path), load_external_data=False).graph.node)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a line per tensor, and advice, on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(onnx_path), str(out_path),
                             weight_type=QuantType.QUInt8 if has_conv else QuantType.QInt8)
    finally:
        root.setLevel(level)
    return out_path


def onnx_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtModel:
    """An onnxruntime session behind the kd-exam model contract, so kdlib.train.predict_logits can score it."""

    def __init__(self, session, keys: Sequence[str]):
        self.session, self.keys = session, tuple(keys)

    def eval(self) -> OrtModel:
        return self

    def run(self, batch: dict) -> np.ndarray:
        return self.session.run(None, {k: batch[k].numpy() for k in self.keys})[0]

    def __call__(self, batch: dict) -> ModelOutput:
        return ModelOutput(torch.from_numpy(self.run(batch)))


def max_abs_diff(reference: Callable[[dict], np.ndarray], other: Callable[[dict], np.ndarray],
                 batches: Sequence[dict]) -> float:
    return max(float(np.abs(reference(b) - other(b)).max()) for b in batches)


def file_bytes(path: Path) -> int:
    """A file plus any external-data files saved beside it (`<name>.data`)."""
    extra = path.with_name(path.name + ".data")
    return path.stat().st_size + (extra.stat().st_size if extra.exists() else 0)


# ----------------------------------------------------------------------------------------------------------------
# Memory: a fresh process per measurement
#
# The peak is the kernel's own high-water mark (VmHWM, restarted from the current RSS by /proc/self/clear_refs), not
# a sampled RSS. memory-profiler (memory_usage((fn, args), max_usage=True, interval=0.01), minus a baseline taken
# after the same imports) was measured against this probe on the same BiLSTM, batch (32 x 64 word ids, torch, one
# thread) and machine (2-core AMD EPYC VM, 23 GiB, loaded by other jobs), 3 fresh processes each:
#   tiny BiLSTM (emb 8, hidden 8, vocab 2000; 17k parameters):  probe 16.67-16.73 MB, memory-profiler 16.66-16.88 MB
#   BiLSTM (emb 300, hidden 300, vocab 30000; 10.4M parameters): probe 83.48-83.53 MB, memory-profiler 80.13-83.38 MB
# It agrees when it happens to sample the peak and reads up to 3.4 MB (4%) low when the peak falls between two
# samples (2 runs of 3), and it needs a monitoring child process; so it is not used, nor a dependency.

def measure_memory(model_dir: Path, engine: str, batch_file: Path, onnx_path: Path | None = None,
                   threads: int = 1) -> dict:
    """Peak RSS of `python -m kdlib.profile memory` loading the model and running the saved batch, in MB."""
    cmd = [sys.executable, "-m", "kdlib.profile", "memory", "--model-dir", str(model_dir), "--engine", engine,
           "--batch", str(batch_file), "--threads", str(threads)]
    if onnx_path is not None:
        cmd += ["--onnx", str(onnx_path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ProfileError(f"memory measurement of {model_dir} ({engine}) failed: "
                           f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak() -> bool:
    """Linux: make the peak-RSS counter (VmHWM) start again from the current RSS; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _memory_child(model_dir: str, engine: str, batch_file: str, onnx_path: str | None, threads: int) -> dict:
    """Import everything first, record RSS, then load + infer and read the peak: the difference is the model's."""
    import transformers.models.bert.modeling_bert  # noqa: F401  imported before the baseline, for every model

    torch.set_num_threads(threads)
    arrays = dict(np.load(batch_file))
    if engine == "torch":
        batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    else:
        import onnxruntime  # noqa: F401
    baseline = _rss_bytes()
    exact = _reset_peak()
    started = time.perf_counter()
    if engine == "torch":
        model = models.load_model(model_dir).eval()
        with torch.inference_mode():
            for _ in range(3):
                model(batch)
    else:
        session = onnx_session(Path(onnx_path), threads)
        for _ in range(3):
            session.run(None, arrays)
    seconds = time.perf_counter() - started
    peak = _peak_bytes()
    if engine == "torch":  # weights may be memory-mapped: a batch pages in only the embedding rows it reads
        with torch.inference_mode():
            for tensor in model.state_dict().values():
                tensor.float().sum()
    resident = max(_peak_bytes(), peak)  # onnxruntime copies every weight into memory when the session starts
    return {"engine": engine, "baseline_mb": baseline / 2**20, "peak_mb": peak / 2**20,
            "model_mb": (peak - baseline) / 2**20, "resident_mb": (resident - baseline) / 2**20,
            "current_mb": _rss_bytes() / 2**20, "seconds": seconds,
            "batch_size": int(len(next(iter(arrays.values())))), "threads": threads,
            "method": "VmHWM after clear_refs" if exact else "ru_maxrss"}


# ----------------------------------------------------------------------------------------------------------------
# The profile of one model and of one dataset

def machine() -> dict:
    """The machine, library versions and thread settings the numbers were measured with."""
    import psutil

    env = rundir.environment()
    env["physical_cores"] = psutil.cpu_count(logical=False)
    env["usable_cores"] = usable_cores()
    env["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    env["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    for name in ("onnx", "onnxruntime", "numpy"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    env["machine"] = platform.machine()
    return env


@dataclass(frozen=True)
class Workload:
    """What every model of a profile is measured on: the dataset, the seeded order of its test examples (real
    batches are consecutive slices of it), the examples scored for F1, their gold labels, and the folder for files."""

    spec: data.DatasetSpec
    order: list[int]
    scored: list[int]
    gold: list
    work: Path


def _score(model, inputs: ModelInputs, w: Workload) -> float:
    """IndoNLU's metric of `model` (PyTorch or an OrtModel) on the workload's scored test examples."""
    from kdlib.train import fallback_label, predict_logits, predictions, score_ids

    feats = [inputs.features[i] for i in w.scored]
    logits = predict_logits(model, feats, inputs.collator, batch_size=32, desc="score")
    return score_ids(w.spec, [w.gold[i] for i in w.scored], predictions(logits, fallback_label(w.spec)))["f1"]


def _check_batches(inputs: ModelInputs, w: Workload, p: ProfileParams) -> list[dict]:
    """Real batches that differ in size and width: the first and last example alone, two of the largest size."""
    return [real_batches(inputs, w.order, 1, 1)[0], real_batches(inputs, w.order[::-1], 1, 1)[0],
            *real_batches(inputs, w.order, max(p.batch_sizes), 2)]


def onnx_variants(name: str, model: nn.Module, inputs: ModelInputs, p: ProfileParams, w: Workload,
                  info: dict) -> dict[str, Path]:
    """Export (and quantize), check against PyTorch, score; records bytes, differences and F1 into `info`."""
    checks = _check_batches(inputs, w, p)
    path = w.work / f"{name}.onnx"
    started = time.perf_counter()
    example = inputs.collator([inputs.features[w.order[0]], inputs.features[w.order[-1]]])
    export_onnx(model, _only(example, inputs.keys), inputs.keys, path)
    cores = usable_cores()  # scoring is not timed: use every core
    fp32 = OrtModel(onnx_session(path, cores), inputs.keys)
    with torch.inference_mode():
        diff = max_abs_diff(lambda b: model(b).logits.numpy(), fp32.run, checks)
    info.update(export_seconds=time.perf_counter() - started, onnx_bytes=file_bytes(path), onnx_max_abs_diff=diff,
                onnx_match=diff <= p.atol, f1_onnx=_score(fp32, inputs, w))
    if diff > p.atol:
        log.warning("%s: ONNX logits differ from PyTorch by up to %.3g (atol %.3g)", name, diff, p.atol)
    files = {"onnx": path} if p.onnx else {}
    if p.int8:
        files["int8"] = quantize_int8(path, w.work / f"{name}.int8.onnx")
        q = OrtModel(onnx_session(files["int8"], cores), inputs.keys)
        info.update(int8_bytes=file_bytes(files["int8"]), int8_max_abs_diff=max_abs_diff(fp32.run, q.run, checks),
                    f1_int8=_score(q, inputs, w))
    return files


@dataclass
class Prepared:
    """A loaded model ready to time: its inputs, batches per (input kind, batch size), ONNX files and summary."""

    name: str
    model: nn.Module
    inputs: ModelInputs
    batches: dict[tuple[str, int], list[dict]]
    files: dict[str, Path]  # engine -> ONNX file
    info: dict

    def runner(self, engine: str, threads: int) -> Callable[[dict], Any]:
        if engine == "torch":  # the thread count is torch's global setting, set by the caller
            return torch.inference_mode()(lambda b: self.model(b).logits)
        return OrtModel(onnx_session(self.files[engine], threads), self.inputs.keys).run


def prepare_model(pm: ProfiledModel, inputs: ModelInputs, p: ProfileParams, w: Workload) -> Prepared:
    """Load, size and score a model, export and quantize it, and cut its batches."""
    model = models.load_model(pm.model_dir).eval()
    info = {"model": pm.name, "variant": pm.metrics.get("variant"), "seed": pm.metrics.get("seed"),
            "run_dir": str(pm.run_dir), "kind": pm.kind, "parameters": models.count_parameters(model),
            "safetensors_bytes": sum(f.stat().st_size for f in pm.model_dir.glob("*.safetensors")),
            "test_f1_run": pm.metrics.get("f1"), "f1_torch": _score(model, inputs, w), "eval_examples": len(w.scored),
            "trained_on": pm.metrics.get("device", "cpu")}  # where it trained; every number here is this CPU's
    files = onnx_variants(pm.name, model, inputs, p, w, info) if p.onnx or p.int8 else {}
    count = p.warmup + p.runs
    batches = {(kind, size): real_batches(inputs, w.order, size, count) if kind == "real" else
               fixed_batches(inputs, w.order, size, p.fixed_length, count)
               for kind in p.input_kinds for size in p.batch_sizes}
    return Prepared(pm.name, model, inputs, batches, files, info)


def latency_rows(prepared: Sequence[Prepared], p: ProfileParams) -> list[dict]:
    """Every engine × thread count × input kind × batch size, all models interleaved (see time_interleaved)."""
    rows = []
    previous = torch.get_num_threads()
    try:
        for engine in ENGINES:
            group = [m for m in prepared if engine == "torch" or engine in m.files]
            for t in resolve_threads(p.thread_counts) if group else []:
                torch.set_num_threads(t)  # onnxruntime sessions get `t` themselves; this keeps torch's pool alike
                fns = {m.name: m.runner(engine, t) for m in group}
                for setting in group[0].batches:
                    timings = time_interleaved(fns, {m.name: m.batches[setting] for m in group}, p.warmup, p.runs)
                    for m in group:
                        width = float(np.mean([next(iter(b.values())).shape[1] for b in m.batches[setting]]))
                        rows.append({"model": m.name, "engine": engine, "threads": t, "batch": setting[1],
                                     "inputs": setting[0], "mean_width": width, **asdict(timings[m.name])})
                    log.info("%s threads=%d batch=%d %s: median ms %s", engine, t, setting[1], setting[0],
                             ", ".join(f"{n} {x.median_ms:.3g}" for n, x in timings.items()))
    finally:
        torch.set_num_threads(previous)
    return rows


def measure_memories(m: Prepared, p: ProfileParams, w: Workload) -> dict[str, dict]:
    """RAM per engine at the largest batch size, on real inputs, one thread, each in a fresh process."""
    batch_file = w.work / f"{m.name}.batch.npz"
    np.savez(batch_file, **{k: v.numpy() for k, v in _check_batches(m.inputs, w, p)[-1].items()})
    return {engine: measure_memory(Path(m.info["run_dir"]) / "model", engine, batch_file, m.files.get(engine))
            for engine in ("torch", *m.files)}


@dataclass
class ProfileResult:
    """What run_profile returns to its notebook: the profile.json content and its folder."""

    profile: dict
    out_dir: Path


def run_profile(p: ProfileParams) -> ProfileResult:
    """Profile the teacher and every student architecture of one dataset; writes out_dir/profile.json.

All models are loaded, scored and exported first; then each setting times them interleaved, round by round.
"""
    from tqdm import tqdm

    from kdlib.train import set_seed

    params.check_profile_params(p)
    started = time.perf_counter()
    spec = data.get_spec(p.dataset)
    set_seed(p.seed)
    out, study = Path(p.out_dir), Path(p.study_dir)
    work = out / "onnx"
    work.mkdir(parents=True, exist_ok=True)
    found = find_models(study, spec)
    teacher = teachers.Teacher.load(found[0].run_dir, dataset=spec.key)
    if p.reference:
        found.append(reference_model(p.reference, spec, teacher, work / "reference"))
    env = machine()  # before measuring: its load average says how busy the machine was
    test = data.load_split(spec, "test", p.data_dir)
    order = np.random.default_rng(p.seed).permutation(len(test)).tolist()
    w = Workload(spec, order, sorted(order[:p.max_test_examples] if p.max_test_examples else order),
                 teachers.gold_labels(test, spec), work)
    prepared = [prepare_model(pm, model_inputs(pm, spec, test, teacher), p, w)
                for pm in tqdm(found, desc=f"export and score ({spec.key})")]
    latency = [{"dataset": spec.key, **r} for r in latency_rows(prepared, p)]
    for m in prepared if p.memory else []:
        m.info["memory"] = measure_memories(m, p, w)
    summaries = [m.info for m in prepared]
    profile = {"stage": "profile", "dataset": spec.key, "shape": spec.shape, "metric": spec.metric,
               "models": summaries, "latency": latency, "settings": asdict(p),
               "threads": resolve_threads(p.thread_counts),
               "machine": {**env, "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None},
               "wall_seconds": time.perf_counter() - started}
    rundir.write_json(out / PROFILE, profile)
    return ProfileResult(profile, out)


# ----------------------------------------------------------------------------------------------------------------
# A reference for cost only: the paper's teacher is BERT-base (IndoBERT-base: 12 layers, hidden 768, 50,000 pieces,
# 124.4M parameters), larger than our offline e5-small; a random model of that shape, fed the teacher's sub-words,
# costs what it would cost, so speed-ups can be given against it too. Its F1 means nothing and is never reported.

REFERENCES = {"bert-base": dict(vocab_size=50000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                intermediate_size=3072, max_position_embeddings=512)}


def reference_model(name: str, spec: data.DatasetSpec, teacher: teachers.Teacher | str | os.PathLike,
                    out_dir: Path) -> ProfiledModel:
    """A random model of the reference's shape with the dataset's head, saved in out_dir/model; the teacher's
    tokenizer ids beyond its vocabulary read UNK (a VocabMap), which costs what a 50,000-piece vocabulary costs."""
    from transformers import BertConfig

    if name not in REFERENCES:
        raise ConfigError(f"reference {name!r}: known references are {', '.join(REFERENCES)} (or \"\" for none).")
    tokenizer = _teacher(teacher).tokenizer
    shape = REFERENCES[name]
    config = BertConfig(**shape, pad_token_id=min(tokenizer.pad_token_id, shape["vocab_size"] - 1))
    vocab_map = models.VocabMap(kept_ids=list(range(shape["vocab_size"])), source_size=len(tokenizer),
                                unk_id=tokenizer.unk_token_id if tokenizer.unk_token_id < shape["vocab_size"] else 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = models.BertTaskModel(models.BertTaskModel.from_config(config, spec).hf, spec, vocab_map)
    model.save_pretrained(out_dir / "model")
    return ProfiledModel(REFERENCE_NAME.format(name), out_dir, {"variant": "random weights"})


# ----------------------------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kdlib.profile memory ...`: one memory measurement, printed as a JSON line."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kdlib.profile")
    sub = parser.add_subparsers(dest="command", required=True)
    mem = sub.add_parser("memory", help="peak RSS of loading a model and running one saved batch")
    mem.add_argument("--model-dir", required=True)
    mem.add_argument("--engine", choices=ENGINES, required=True)
    mem.add_argument("--batch", required=True, help=".npz of the batch's input arrays")
    mem.add_argument("--onnx", help="the ONNX file (engines onnx and int8)")
    mem.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(_memory_child(args.model_dir, args.engine, args.batch, args.onnx, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
