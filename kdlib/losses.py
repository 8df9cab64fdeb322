"""Distillation losses as pure functions of logits.

Shapes: logits are (..., C) with the unit dimensions first: (B, C) for single/pair, (B, A, C) for aspect tasks,
(B, W, C) for tagging/qa. Labels are the unit dimensions, (B,), (B, A) or (B, W), with IGNORE_INDEX (-100) for
units without a label. A mask, where given, is bool over the leading unit dimensions: (B,) or (B, W); True keeps
a position. Tagging uses `word_index >= 0`; aspect tasks need none (every (B, A) position is real).

The objective is alpha * CE(labels) + (1 - alpha) * KD(teacher), as in Hinton et al. (2015); Tang et al. (2019)
use the MSE between raw logits with alpha = 0.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlib.data import IGNORE_INDEX
from kdlib.errors import ConfigError, unknown_name


def ce(student_logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy with hard labels, averaged over labelled units.

    student_logits (..., C); labels (...) long, IGNORE_INDEX where there is no label. With no labelled unit at all
    the loss is 0 (with a gradient path), not NaN, so a fully unlabelled batch cannot poison training.
    """
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(f"labels have shape {tuple(labels.shape)} but logits {tuple(student_logits.shape)} need "
                         f"{tuple(student_logits.shape[:-1])}.")
    flat_labels = labels.reshape(-1)
    if not (flat_labels != IGNORE_INDEX).any():
        return student_logits.sum() * 0.0
    return F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]), flat_labels,
                           ignore_index=IGNORE_INDEX)


def _masked_mean(per_unit: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of per-unit values (...) over the True positions of mask, broadcast from (B,) or (B, W)."""
    if mask is None:
        return per_unit.mean()
    mask = mask.to(torch.bool)
    while mask.dim() < per_unit.dim():
        mask = mask.unsqueeze(-1)
    mask = mask.expand_as(per_unit)
    # where(), not a multiply by 0: a stray inf/NaN at a masked position would survive the multiply
    return torch.where(mask, per_unit, torch.zeros_like(per_unit)).sum() / mask.sum().clamp(min=1)


def _check_pair(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape; both must be unit-level (see kdlib.models).")


def mse(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between raw logits (..., C), averaged over classes and the valid positions of mask."""
    _check_pair(student_logits, teacher_logits)
    per_unit = (student_logits - teacher_logits.detach()).pow(2).mean(dim=-1)
    return _masked_mean(per_unit, mask)


def kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
       mask: Tensor | None = None) -> Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over valid positions.

    The T^2 factor keeps the gradient scale independent of T (Hinton et al., 2015). Logits are (..., C).
    """
    _check_pair(student_logits, teacher_logits)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    per_unit = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=-1)
    return temperature ** 2 * _masked_mean(per_unit, mask)


LOSSES: dict[str, Callable[..., Tensor]] = {"ce": ce, "mse": mse, "kl": kl}


def distillation_loss(kind: str, student_logits: Tensor, *, labels: Tensor | None = None,
                      teacher_logits: Tensor | None = None, mask: Tensor | None = None, alpha: float = 0.0,
                      temperature: float = 1.0) -> Tensor:
    """The training loss of one batch.

    "ce": hard labels only (no teacher). "mse"/"kl": alpha * CE + (1 - alpha) * KD; alpha = 0 is pure KD, and when
    the batch has no label (labels None or all IGNORE_INDEX, as on an unlabelled transfer set) the KD term is used
    alone. `mask` selects the positions the KD term averages over; CE relies on IGNORE_INDEX labels instead.
    """
    if kind not in LOSSES:
        raise unknown_name("loss", kind, LOSSES)
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1] (the weight of hard-label CE), got {alpha}.")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}.")
    if kind == "ce":
        if labels is None:
            raise ConfigError("loss 'ce' trains on labels, but the batch has none; use 'mse' or 'kl' with a teacher.")
        return ce(student_logits, labels)
    if teacher_logits is None:
        raise ConfigError(f"loss {kind!r} distils from teacher logits, but the batch has none; compute the teacher's "
                          "logits first, or use loss 'ce'.")
    kd_options = {"temperature": temperature} if kind == "kl" else {}  # MSE compares raw logits: no temperature
    kd = LOSSES[kind](student_logits, teacher_logits, mask=mask, **kd_options)
    if alpha == 0.0 or labels is None or not (labels != IGNORE_INDEX).any():
        return kd
    return alpha * ce(student_logits, labels) + (1.0 - alpha) * kd
