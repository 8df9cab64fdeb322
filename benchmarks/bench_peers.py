"""kdlib's distillation loop vs torchdistill's and vs a Hugging Face `Trainer` with a KD `compute_loss`.

    python benchmarks/bench_peers.py                      # SmSA, 1000 train examples, BiLSTM, 2 epochs
    python benchmarks/bench_peers.py --extra-path /opt/bench-extras   # peers' packages installed there

Every contender trains the same student (same vocabulary, same initial weights) on the same examples for the same
epochs with MSE on the teacher's logits, AdamW (lr = the student's default, weight decay 0.01), 10% linear warm-up
then linear decay, gradient clipping at 1.0 and batch 32, each in a fresh process with the same torch threads.
The peers are used as their users would: the teacher runs on every step (their default), and, to separate loop
overhead from the cache, once more reading the same cached logits kdlib reads. Reported: training examples/s
(training steps only; validation and set-up excluded) and test macro-F1 of the final weights.

Peer packages: `pip install torchdistill==1.1.5 accelerate` (torchdistill imports torchvision: install the one
built for your torch, e.g. from the PyTorch CPU index; see _torchvision_ops_without_binaries for CUDA wheels).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common
import torch
from torch import nn
from torch.nn import functional as F

from kdlib import data
from kdlib.errors import one_line_errors
from kdlib.models import ModelOutput
from kdlib.train import TrainConfig, evaluate, fit

CONTENDERS = ("kdlib", "hf-trainer", "hf-trainer+cache", "torchdistill", "torchdistill+cache")
BATCH, WEIGHT_DECAY, WARMUP, CLIP = 32, 0.01, 0.1, 1.0


class CachedTeacher(nn.Module):
    """A "teacher" that hands back the cached logits of the batch: the peers' loops, fed kdlib's cache."""

    def forward(self, batch: dict) -> ModelOutput:
        return ModelOutput(batch["teacher_logits"])


class FreshTeacher(nn.Module):
    """The fine-tuned teacher on its own inputs (the student's batch carries them under "teacher")."""

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)

    def forward(self, batch: dict) -> ModelOutput:
        return self.teacher(batch["teacher"])


def contender_inputs(args, name: str):
    """(student inputs, train features, collator, teacher module or None) for one contender."""
    data_dir, teacher_dir = Path(args.data_slice), Path(args.teacher_folder)
    inputs = common.student_inputs(args.student, args.dataset, data_dir, teacher_dir, args.options)
    if name == "kdlib" or name.endswith("+cache"):
        train = common.with_logits(inputs.features["train"], common.cached_logits(teacher_dir, args.dataset, data_dir))
        return inputs, train, inputs.collator, CachedTeacher()
    teacher, teacher_feats, teacher_collator = common.teacher_features(teacher_dir, args.dataset, data_dir)
    return (inputs, common.with_teacher_inputs(inputs.features["train"], teacher_feats),
            common.PairCollator(inputs.collator, teacher_collator), FreshTeacher(teacher))


def run_kdlib(args, inputs, train, collator, teacher) -> tuple[float, float]:
    cfg = TrainConfig(epochs=args.epochs, lr=inputs.lr, batch_size=BATCH, patience=args.epochs + 1, loss="mse",
                      weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP, max_grad_norm=CLIP)
    work = args.scratch / "kdlib"
    shutil.rmtree(work, ignore_errors=True)
    cpu = time.process_time()  # fit validates every epoch, the peers do not: on 8 examples, so it costs nothing
    result = fit(inputs.model, train, inputs.features["valid"][:8], inputs.gold["valid"][:8],
                 data.get_spec(args.dataset), cfg, work, collator)
    cpu = time.process_time() - cpu
    inputs.model.load_state_dict(torch.load(work / "checkpoint.pt", weights_only=True)["model"])  # final weights
    return sum(h["seconds"] for h in result.history), cpu


def run_hf_trainer(args, inputs, train, collator, teacher) -> tuple[float, float]:
    from transformers import Trainer, TrainingArguments

    class KDTrainer(Trainer):
        def compute_loss(self, model, batch, return_outputs=False, num_items_in_batch=None):
            logits = model(batch).logits
            with torch.no_grad():
                target = teacher(batch).logits
            loss = F.mse_loss(logits, target)
            return (loss, logits) if return_outputs else loss

    class Student(nn.Module):  # Trainer sets attributes on `model.config`; kdlib's word students keep a dict there
        def __init__(self, model: nn.Module):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return self.model(batch)

    steps = math.ceil(len(train) / BATCH) * args.epochs
    targs = TrainingArguments(
        output_dir=str(args.scratch / "hf"), per_device_train_batch_size=BATCH, num_train_epochs=args.epochs,
        learning_rate=inputs.lr, weight_decay=WEIGHT_DECAY, warmup_steps=int(WARMUP * steps),
        lr_scheduler_type="linear", max_grad_norm=CLIP, use_cpu=True, report_to="none", save_strategy="no",
        eval_strategy="no", logging_strategy="no", remove_unused_columns=False, disable_tqdm=True, seed=0,
        dataloader_num_workers=0)
    trainer = KDTrainer(model=Student(inputs.model), args=targs, train_dataset=train, data_collator=collator)
    cpu = time.process_time()
    out = trainer.train()
    return out.metrics["train_runtime"], time.process_time() - cpu


def _torchvision_ops_without_binaries() -> None:
    """torchdistill imports torchvision for its image-model registries. A torchvision wheel built for CUDA torch
    cannot load its compiled ops next to a CPU-only torch and then fails on import, registering meta kernels for
    ops that do not exist; declaring those ops' schemas first lets it import. No torchvision op is ever called."""
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return
    try:
        torch.ops.load_library(str(next(Path(spec.origin).parent.glob("_C*.so"))))
        return
    except (OSError, StopIteration):
        pass
    box = "Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width"
    back = "SymInt batch_size, SymInt channels, SymInt height, SymInt width"
    conv = ("Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, "
            "SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask")
    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 (kept alive by torch's registry)
    for schema in (
            "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            f"roi_align({box}, int sampling_ratio, bool aligned) -> Tensor",
            f"qroi_align({box}, int sampling_ratio, bool aligned) -> Tensor",
            f"_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
            f"SymInt pooled_width, {back}, int sampling_ratio, bool aligned) -> Tensor",
            f"ps_roi_align({box}, int sampling_ratio) -> (Tensor, Tensor)",
            f"_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
            f"SymInt pooled_height, SymInt pooled_width, int sampling_ratio, {back}) -> Tensor",
            f"roi_pool({box}) -> (Tensor, Tensor)",
            f"_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
            f"SymInt pooled_width, {back}) -> Tensor",
            f"ps_roi_pool({box}) -> (Tensor, Tensor)",
            f"_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
            f"SymInt pooled_height, SymInt pooled_width, {back}) -> Tensor",
            f"deform_conv2d(Tensor input, {conv}) -> Tensor",
            f"_deform_conv2d_backward(Tensor grad, Tensor input, {conv}) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"):
        lib.define(schema)
    _torchvision_ops_without_binaries.lib = lib


def run_torchdistill(args, inputs, train, collator, teacher) -> tuple[float, float]:
    from torch.utils.data import RandomSampler
    from torchdistill.core.distillation import DistillationBox
    from torchdistill.core.interfaces.registry import register_forward_proc_func
    from torchdistill.datasets.registry import register_collate_func
    from torchdistill.optim.registry import register_scheduler
    from transformers import get_linear_schedule_with_warmup

    @register_forward_proc_func
    def unit_logits(model, sample_batch, targets=None, supp_dict=None, **kwargs):
        return model(sample_batch).logits

    @register_collate_func(key="kdlib_batch")
    def collate(items):  # torchdistill's dataset wrapper hands (sample, target, supp_dict) triples
        return collator([sample for sample, _, _ in items]), torch.tensor([t for _, t, _ in items]), {}

    register_scheduler(key="linear_warmup")(get_linear_schedule_with_warmup)
    steps = math.ceil(len(train) / BATCH) * args.epochs
    mse = {"criterion": {"key": "MSELoss", "kwargs": {"reduction": "mean"}},
           "criterion_wrapper": {"key": "SimpleLossWrapper", "kwargs": {
               "input": {"is_from_teacher": False, "module_path": ".", "io": "output"},
               "target": {"is_from_teacher": True, "module_path": ".", "io": "output"}}},
           "weight": 1.0}
    config = {
        "num_epochs": args.epochs,
        "train_data_loader": {"dataset_id": "train", "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
                              "kwargs": {"batch_size": BATCH, "num_workers": 0}, "collate_fn": "kdlib_batch"},
        "teacher": {"forward_proc": "unit_logits", "requires_grad": False},
        "student": {"forward_proc": "unit_logits", "requires_grad": True},
        "optimizer": {"key": "AdamW", "kwargs": {"lr": inputs.lr, "weight_decay": WEIGHT_DECAY},
                      "max_grad_norm": CLIP},
        "scheduler": {"key": "linear_warmup", "scheduling_step": 1,
                      "kwargs": {"num_warmup_steps": int(WARMUP * steps), "num_training_steps": steps}},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"mse": mse}}},
    }
    dataset = [(f, f["labels"]) for f in train]
    box = DistillationBox(teacher, inputs.model, {"train": dataset}, config, torch.device("cpu"), None, False, 1)
    seconds = cpu = 0.0
    for epoch in range(args.epochs):
        box.pre_epoch_process(epoch=epoch)
        started, cpu_started = time.perf_counter(), time.process_time()
        for sample_batch, targets, supp_dict in box.train_data_loader:
            box.post_forward_process(box.forward_process(sample_batch, targets, supp_dict))
        seconds, cpu = seconds + time.perf_counter() - started, cpu + time.process_time() - cpu_started
        box.post_epoch_process()
    return seconds, cpu


RUN = {"kdlib": run_kdlib, "hf-trainer": run_hf_trainer, "hf-trainer+cache": run_hf_trainer,
       "torchdistill": run_torchdistill, "torchdistill+cache": run_torchdistill}


def contend(args) -> dict:
    """One contender, in this (fresh) process: train, then score the final weights on the test split."""
    _torchvision_ops_without_binaries()  # before transformers or torchdistill import torchvision
    torch.manual_seed(0)
    inputs, train, collator, teacher = contender_inputs(args, args.contender)
    seconds, cpu = RUN[args.contender](args, inputs, train, collator, teacher)
    test = evaluate(inputs.model.eval(), inputs.features["test"], inputs.gold["test"], data.get_spec(args.dataset),
                    inputs.collator)
    n = len(train) * args.epochs
    return {"seconds": seconds, "examples_per_s": n / seconds, "examples_per_cpu_s": n / cpu, "f1": test["f1"]}


@one_line_errors
def main() -> None:
    p = common.arguments(__doc__.splitlines()[0])
    p.add_argument("--student", default="bilstm", choices=("bilstm", "cnn", "bert-tiny"))
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    p.add_argument("--extra-path", default="", help="folders prepended to the peers' PYTHONPATH (packages you "
                                                    "could not install into this environment)")
    p.add_argument("--contender", help=argparse_hidden())
    p.add_argument("--data-slice", help=argparse_hidden())
    p.add_argument("--teacher-folder", help=argparse_hidden())
    args = common.settle(p.parse_args(), "peers")
    args.options = {"emb_dim": 16, "hidden": 16} if args.tiny and args.student == "bilstm" else {}
    if args.contender:
        print(json.dumps(contend(args)))
        return
    data_dir, teacher_dir = common.prepare(args)
    common.cached_logits(teacher_dir, args.dataset, data_dir)  # the teacher run wrote it; make sure before timing
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [args.extra_path, os.environ.get("PYTHONPATH")]))}
    rows = []
    for name in args.contenders:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--contender", name, "--data-slice", str(data_dir),
               "--teacher-folder", str(teacher_dir)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            rows.append({"contender": name, "examples/s": None, "test F1 %": None, "note": f"failed: {last[:90]}"})
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({"contender": name, "examples/s": round(result["examples_per_s"], 1),
                     "examples/CPU s": round(result["examples_per_cpu_s"], 1),
                     "test F1 %": round(100 * result["f1"], 2), "train s": round(result["seconds"], 1)})
    kdlib = next((r for r in rows if r["contender"] == "kdlib" and r["examples/s"]), None)
    for row in rows:
        if kdlib and row["examples/s"]:
            row["kdlib speed-up"] = f"{kdlib['examples/s'] / row['examples/s']:.2f}x"
            row["kdlib speed-up (CPU)"] = f"{kdlib['examples/CPU s'] / row['examples/CPU s']:.2f}x"
    common.print_table(
        f"bench_peers: {args.dataset}, student {args.student}, {args.train} train / {args.eval} test examples, "
        f"{args.epochs} epoch(s), teacher {args.teacher}, {args.threads} torch thread(s), batch {BATCH}", rows,
        ["kdlib: cached logits (written once by the teacher run), length-bucketed batches",
         "peers: teacher on every step (their default); +cache: the same cached logits kdlib reads, random batches",
         "kdlib speed-up = kdlib examples/s / contender examples/s, in this run; (CPU): per CPU second of the "
         "contender's process, which a busy machine disturbs less than wall time"])


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
