"""One training loop for fine-tuning teachers and distilling students.

The loop does not know which model it trains: a model maps a batch to unit-level logits (see kdlib.models), the
loss comes from kdlib.losses by name, and the validation metric from kdlib.metrics. It keeps the best epoch's
weights (early stopping on the validation metric), writes an atomic checkpoint after every epoch and resumes
from it after an interrupt.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm  # text bars (no notebook widget detection); a notebook run turns them off: kdlib.notebook

from kdlib import losses, rundir
from kdlib.data import IGNORE_INDEX, DatasetSpec
from kdlib.errors import ConfigError, RunFolderError

log = logging.getLogger(__name__)

TENSOR_KEYS_PAD = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0, "word_ids": None, "case_ids": 0}


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU), so a run is repeatable on the same machine and thread count."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> int:
    """Fix torch's intra-op threads (None/0 = all cores) and return the number in use, for the record."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def resolve_device(device: str = "auto") -> torch.device:
    """"auto": the GPU when torch sees one (CUDA), else the CPU; "cpu" and "cuda" as they say."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device {device!r}: use auto (CUDA when available), cpu or cuda.")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda, but torch sees no CUDA GPU (torch.cuda.is_available() is False); use "
                          "device: auto or cpu, or install a CUDA build of torch.")
    return torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")


def device_name(device: torch.device) -> str:
    """What metrics.json records: "cpu", or "cuda (<GPU name>)"."""
    return "cpu" if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})"


def mixed_precision(device: torch.device):
    """Autocast on CUDA (bfloat16 where the GPU has it, else float16); nothing on the CPU, whose path is as it was."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def model_device(model) -> torch.device:
    """Where a model's weights are; the CPU for anything else that maps a batch to logits (an ONNX session)."""
    weights = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return torch.device("cpu") if weights is None else weights.device


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one run; recorded in metrics.json."""

    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    eval_batch_size: int = 64
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    patience: int = 2  # epochs without validation improvement before stopping
    min_epochs: int = 1  # early stopping may end a run only after this many epochs (a slow start is not a plateau)
    max_grad_norm: float = 1.0
    loss: str = "ce"  # kdlib.losses.LOSSES key
    alpha: float = 0.0  # weight of hard-label CE in alpha*CE + (1-alpha)*KD
    temperature: float = 1.0
    seed: int = 0


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length (less padding), in a seeded random order that changes every epoch.

    Examples are shuffled, cut into pools of `pool` batches, sorted by length inside a pool and batched; the
    batches are then shuffled. `shuffle=False` gives length-sorted batches in a fixed order (for inference).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int = 0, pool: int = 50):
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.seed, self.pool = seed, pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1000 + self.epoch)
        order = list(range(len(self.lengths)))
        if not self.shuffle:
            order.sort(key=lambda i: self.lengths[i])
            yield from (order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size))
            return
        rng.shuffle(order)
        span = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        yield from batches

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


@dataclass(frozen=True)
class Collator:
    """Pads a list of feature dicts into a batch of tensors.

    Sequences are padded with the model's pad id (input_ids/word_ids), 0 (masks), -1 (word_index) or IGNORE_INDEX
    (word labels). Teacher logits are padded with NaN then zeroed, and `teacher_mask` marks the real ones.
    """

    pad_id: int = 0

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for key, pad in TENSOR_KEYS_PAD.items():
            if key in features[0]:
                batch[key] = _pad([f[key] for f in features], self.pad_id if pad is None else pad)
        if "word_ids" in batch:
            batch["lengths"] = torch.tensor([len(f["word_ids"]) for f in features])
        if "word_index" in features[0]:
            batch["word_index"] = _pad([f["word_index"] for f in features], -1)
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            tagging = "word_index" in features[0]
            batch["labels"] = _pad(labels, IGNORE_INDEX) if tagging else torch.tensor(labels)
        if "teacher_logits" in features[0]:
            arrays = [np.asarray(f["teacher_logits"], dtype=np.float32) for f in features]
            if arrays[0].ndim == 2 and "word_index" in features[0]:  # words: ragged
                width = batch["word_index"].shape[1]
                out = np.full((len(arrays), width, arrays[0].shape[1]), np.nan, dtype=np.float32)
                for i, a in enumerate(arrays):
                    out[i, :len(a)] = a[:width]
            else:
                out = np.stack(arrays)
            logits = torch.from_numpy(out)
            finite = torch.isfinite(logits).all(dim=-1)
            batch["teacher_logits"] = torch.nan_to_num(logits, nan=0.0)
            batch["teacher_mask"] = finite
        return batch


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows) or 1
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def feature_length(feature: dict) -> int:
    return len(feature.get("input_ids") or feature.get("word_ids") or [])


def make_loader(features: Sequence[dict], collator: Collator, batch_size: int, *, shuffle: bool,
                seed: int = 0) -> DataLoader:
    sampler = BucketBatchSampler([feature_length(f) for f in features], batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(features, batch_sampler=sampler, collate_fn=collator)


def kd_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Positions a loss may use: real words the teacher also saw (tagging); None = every position."""
    mask = batch["word_index"] >= 0 if "word_index" in batch else None
    if "teacher_mask" in batch and batch["teacher_mask"].dim() == 2 and mask is not None:
        mask = mask & batch["teacher_mask"]
    return mask


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig) -> torch.Tensor:
    logits = model(batch).logits.float()  # a no-op on the CPU; under CUDA autocast the loss is taken in float32
    return losses.distillation_loss(cfg.loss, logits, labels=batch.get("labels"),
                                    teacher_logits=batch.get("teacher_logits"), mask=kd_mask(batch),
                                    alpha=cfg.alpha, temperature=cfg.temperature)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, features: Sequence[dict], collator: Collator,
                   batch_size: int = 64, desc: str = "predict") -> list[np.ndarray]:
    """Unit-level logits per example, in the order of `features`: (C,), (A, C), or (n_words, C) for tagging,
    where words the model could not see (word_index -1) are NaN."""
    model.eval()
    device = model_device(model)
    loader = make_loader(features, collator, batch_size, shuffle=False)
    out: list[np.ndarray | None] = [None] * len(features)
    order = iter(loader.batch_sampler)
    for batch in tqdm(loader, desc=desc, leave=False, mininterval=5):
        with mixed_precision(device):
            logits = model(to_device(batch, device)).logits.float().cpu().numpy()
        for row, idx in enumerate(next(order)):
            value = logits[row]
            if "word_index" in batch:
                n_words = len(features[idx]["word_index"])
                value = value[:n_words].copy()
                value[np.asarray(features[idx]["word_index"]) < 0] = np.nan
            out[idx] = value
    return out  # type: ignore[return-value]


def predictions(logits: Sequence[np.ndarray], fallback: int = 0) -> list:
    """Arg-max label ids per unit; words without logits (NaN) get `fallback` (the dataset's 'O' tag)."""
    preds = []
    for a in logits:
        ids = np.where(np.isnan(a).any(axis=-1), fallback, np.nan_to_num(a, nan=-np.inf).argmax(axis=-1))
        preds.append(ids.tolist())
    return preds


def prediction_record(spec: DatasetSpec, gold: Sequence, pred: Sequence) -> dict:
    """A run's predictions.json: test gold and predicted label ids in the form IndoNLU's metric reads (tag names for
    tagging), so paired tests and per-label comparisons can rescore them."""
    gold = list(gold)  # a datasets Column is not JSON
    if spec.is_tagging:
        gold = [[spec.labels[i] for i in seq] for seq in gold]
        pred = [[spec.labels[i] for i in seq] for seq in pred]
    return {"split": "test", "metric": spec.metric, "gold": gold, "pred": list(pred)}


def fallback_label(spec: DatasetSpec) -> int:
    return spec.labels.index("O") if "O" in spec.labels else 0


def evaluate(model: torch.nn.Module, features: Sequence[dict], gold: Sequence, spec: DatasetSpec,
             collator: Collator, batch_size: int = 64) -> dict[str, float]:
    """The official metric of `spec` on `features`, against gold label ids per example."""
    pred = predictions(predict_logits(model, features, collator, batch_size, desc="evaluate"),
                       fallback_label(spec))
    return score_ids(spec, gold, pred)


def score_ids(spec: DatasetSpec, gold: Sequence, pred: Sequence) -> dict[str, float]:
    """IndoNLU's metric for `spec` on label ids (tag ids become tag strings, which chunking needs)."""
    from kdlib import metrics

    if spec.is_tagging:
        gold = [[spec.labels[i] for i in seq] for seq in gold]
        pred = [[spec.labels[i] for i in seq] for seq in pred]
    return metrics.score(spec.metric, gold, pred)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_valid: float = -math.inf
    resumed_from_epoch: int = 0
    train_seconds: float = 0.0


def fit(model: torch.nn.Module, train_features: Sequence[dict], valid_features: Sequence[dict],
        valid_gold: Sequence, spec: DatasetSpec, cfg: TrainConfig, work_dir: str | os.PathLike,
        collator: Collator, *, device: torch.device | None = None,
        progress: Callable[[dict], None] | None = None) -> FitResult:
    """Train with AdamW and linear warm-up/decay, keep the best validation epoch, checkpoint every epoch.

    `work_dir/checkpoint.pt` holds the state after the last finished epoch (model, optimiser, scheduler, RNG,
    history); a rerun with the same arguments resumes after it. `work_dir/best.pt` holds the best weights,
    which are loaded into `model` before returning. Both hold tensors and plain values only and are read with
    `weights_only=True`, so a run folder from elsewhere cannot run code when resumed. best.pt is written after
    checkpoint.pt: a kill between the two leaves a checkpoint whose best epoch is its own last epoch, and resuming
    rewrites best.pt from that checkpoint's weights.

    `device` (default: the CPU) is where the model trains, with mixed precision on CUDA; the device is not part of
    the checkpoint's settings, so a run may resume on another one. `progress` is called every few seconds and after
    each epoch with a dict (epoch, epochs, step, steps, loss, valid_f1, eta_seconds) for the terminal.
    """
    from transformers import get_linear_schedule_with_warmup

    device = device or torch.device("cpu")
    if device.type != "cpu":
        model.to(device)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and not torch.cuda.is_bf16_supported() else None
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    rundir.clean_temp_files(work_dir)  # a killed attempt's half-written checkpoint
    set_seed(cfg.seed)
    loader = make_loader(train_features, collator, cfg.batch_size, shuffle=True, seed=cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one vectorised kernel for all parameters. The default CPU AdamW loops over them and spent ~13x longer
    # per step on a BERT student's 250k x 128 embedding matrix than the fused one (benchmarks/bench_cache.py).
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    total = max(1, len(loader) * cfg.epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    result = FitResult()
    bad_epochs, start_epoch = 0, 0

    ckpt_path, best_path = work_dir / "checkpoint.pt", work_dir / "best.pt"
    if ckpt_path.exists():
        state = _load(ckpt_path)
        written = {**asdict(TrainConfig()), **state["config"]}  # a setting added since has its default there
        if written != asdict(cfg):
            raise ValueError(f"{ckpt_path} was written with other settings ({state['config']}); delete "
                             f"{work_dir} to start over with {asdict(cfg)}.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])  # its state follows the parameters' device
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        result.history, result.best_epoch = state["history"], state["best_epoch"]
        result.best_valid = state["best_valid"]
        start_epoch, bad_epochs = state["epoch"], state["bad_epochs"]
        result.resumed_from_epoch = start_epoch
        if result.best_epoch == start_epoch:  # killed between checkpoint.pt and best.pt, perhaps: its weights are best
            _atomic_torch_save(state["model"], best_path)
        log.info("resuming %s after epoch %d", work_dir, start_epoch)

    report = _Reporter(progress, cfg.epochs, len(loader), start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience and epoch >= cfg.min_epochs:
            break
        model.train()
        loader.batch_sampler.set_epoch(epoch)
        started, total_loss, seen = time.perf_counter(), 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, mininterval=5)
        for step, batch in enumerate(bar, start=1):
            batch = to_device(batch, device)
            with mixed_precision(device):
                loss = batch_loss(model, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
            else:  # float16 on a GPU without bfloat16: scale the loss so small gradients survive
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            n = len(next(iter(batch.values())))
            total_loss, seen = total_loss + loss.item() * n, seen + n
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
            report.step(epoch + 1, step, total_loss / seen)
        seconds = time.perf_counter() - started
        valid = evaluate(model, valid_features, valid_gold, spec, collator, cfg.eval_batch_size)
        row = {"epoch": epoch + 1, "train_loss": total_loss / max(seen, 1), "valid_f1": valid["f1"],
               "lr": scheduler.get_last_lr()[0], "seconds": seconds, "examples_per_s": seen / max(seconds, 1e-9)}
        result.history.append(row)
        log.info("epoch %d: %s", epoch + 1, row)
        improved = valid["f1"] > result.best_valid
        if improved:
            result.best_valid, result.best_epoch, bad_epochs = valid["f1"], epoch + 1, 0
        else:
            bad_epochs += 1
        _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                            "history": result.history, "best_epoch": result.best_epoch,
                            "best_valid": result.best_valid, "epoch": epoch + 1, "bad_epochs": bad_epochs,
                            "config": asdict(cfg)}, ckpt_path)
        if improved:  # after the checkpoint: best.pt is never newer than the best epoch it records
            _atomic_torch_save(model.state_dict(), best_path)
        report.epoch(epoch + 1, row["train_loss"], valid["f1"])
    if best_path.exists():
        model.load_state_dict(_load(best_path))
    result.train_seconds = sum(r["seconds"] for r in result.history)
    return result


class _Reporter:
    """Calls `progress` at most every PROGRESS_SECONDS during an epoch and after every epoch; ETA assumes every
    remaining epoch runs (early stopping may end sooner)."""

    PROGRESS_SECONDS = 5.0

    def __init__(self, progress: Callable[[dict], None] | None, epochs: int, steps: int, start_epoch: int):
        self.progress, self.epochs, self.steps = progress, epochs, max(1, steps)
        self.started, self.done_steps, self.last = time.perf_counter(), 0, 0.0
        self.remaining = (epochs - start_epoch) * self.steps
        self.valid_f1: float | None = None

    def _send(self, **fields) -> None:
        per_step = (time.perf_counter() - self.started) / max(1, self.done_steps)
        self.progress({"epochs": self.epochs, "steps": self.steps, "valid_f1": self.valid_f1,
                       "eta_seconds": per_step * max(0, self.remaining - self.done_steps), **fields})
        self.last = time.perf_counter()

    def step(self, epoch: int, step: int, loss: float) -> None:
        self.done_steps += 1
        if self.progress and time.perf_counter() - self.last >= self.PROGRESS_SECONDS:
            self._send(epoch=epoch, step=step, loss=loss)

    def epoch(self, epoch: int, loss: float, valid_f1: float) -> None:
        self.valid_f1 = valid_f1
        if self.progress:
            self._send(epoch=epoch, step=self.steps, loss=loss)


def _atomic_torch_save(obj, path: Path) -> None:
    with rundir.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load(path: Path):
    """A checkpoint of tensors and plain values; anything else (a pickled object, a truncated file) is refused."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")  # a GPU run's checkpoint resumes anywhere
    except pickle.UnpicklingError:
        reason = "it holds objects other than tensors and plain values, which could run code when loaded"
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        reason = f"truncated or corrupt ({type(e).__name__})"
    raise RunFolderError(f"{path}: not loaded: {reason}; delete {path.parent} to start this run's training over.")
