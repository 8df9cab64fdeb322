"""kdlib.losses against values worked out by hand in the comments."""
from __future__ import annotations

import math

import pytest
import torch

from kdlib import losses
from kdlib.errors import ConfigError

T = torch.tensor


def test_ce_ignores_unlabelled_units():
    # row 0: -log(e^2 / (e^2 + 1)) = log(1 + e^-2) = 0.126928; row 1 is IGNORE_INDEX and does not count
    logits = T([[2.0, 0.0], [0.0, 0.0]])
    assert losses.ce(logits, T([0, -100])).item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_ce_on_word_logits_averages_over_labelled_words():
    # word 0: softmax([0, 0])[1] = 1/2 -> log 2 = 0.693147; word 1: softmax([ln 3, 0])[0] = 3/4 -> -ln(3/4) = 0.287682
    # word 2 is IGNORE_INDEX; mean of the two = 0.490415
    logits = T([[[0.0, 0.0], [math.log(3), 0.0], [50.0, -50.0]]])
    assert losses.ce(logits, T([[1, 0, -100]])).item() == pytest.approx(0.490415, abs=1e-6)


def test_ce_without_any_label_is_zero_not_nan():
    logits = T([[1.0, 2.0]], requires_grad=True)
    loss = losses.ce(logits, T([-100]))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_mse_on_raw_logits():
    # ((1 - 0)^2 + (2 - 0)^2) / 2 classes = 2.5
    assert losses.mse(T([[1.0, 2.0]]), T([[0.0, 0.0]])).item() == pytest.approx(2.5)


def test_mse_averages_over_aspects_and_masked_words():
    # aspect logits (B=1, A=2, C=2): per-aspect MSE 2.5 and 0 -> 1.25
    assert losses.mse(T([[[1.0, 2.0], [0.0, 0.0]]]), torch.zeros(1, 2, 2)).item() == pytest.approx(1.25)
    # word logits (B=1, W=2, C=2) with word 1 masked: only word 0 (2.5) counts, whatever word 1 holds
    mask = T([[True, False]])
    a = losses.mse(T([[[1.0, 2.0], [100.0, -7.0]]]), torch.zeros(1, 2, 2), mask)
    b = losses.mse(T([[[1.0, 2.0], [0.0, 3.0]]]), torch.zeros(1, 2, 2), mask)
    assert a.item() == pytest.approx(2.5) and b.item() == pytest.approx(2.5)


def test_kl_at_temperature_one():
    # teacher p = softmax([0, 0]) = (1/2, 1/2); student q = softmax([0, ln 3]) = (1/4, 3/4)
    # KL(p || q) = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3) = 0.143841  (KL(q || p) would be 0.130812)
    loss = losses.kl(T([[0.0, math.log(3)]]), T([[0.0, 0.0]]), temperature=1.0)
    assert loss.item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)


def test_kl_at_temperature_two_has_the_t_squared_factor():
    # student [0, 2 ln 3] / 2 = [0, ln 3] -> the same q as above; T^2 = 4 -> 4 * 0.143841 = 0.575364
    loss = losses.kl(T([[0.0, 2 * math.log(3)]]), T([[0.0, 0.0]]), temperature=2.0)
    assert loss.item() == pytest.approx(4 * 0.5 * math.log(4 / 3), abs=1e-6)


def test_kl_masked_positions_do_not_count():
    # word 0 as in test_kl_at_temperature_one; word 1 is masked, so changing it changes nothing
    teacher = torch.zeros(1, 2, 2)
    mask = T([[True, False]])
    a = losses.kl(T([[[0.0, math.log(3)], [5.0, -5.0]]]), teacher, mask=mask)
    b = losses.kl(T([[[0.0, math.log(3)], [-9.0, 9.0]]]), teacher, mask=mask)
    assert a.item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6) and a.item() == pytest.approx(b.item())


def test_kd_terms_do_not_backpropagate_into_the_teacher():
    student = T([[0.5, 1.0]], requires_grad=True)
    teacher = T([[1.0, 0.0]], requires_grad=True)
    losses.kl(student, teacher, temperature=2.0).backward()
    assert student.grad is not None and teacher.grad is None


def test_alpha_mixes_ce_and_mse_exactly():
    # CE: -log softmax([1, 2])[1] = log(1 + e^-1) = 0.313262; MSE vs [0, 0] = 2.5
    # 0.25 * 0.313262 + 0.75 * 2.5 = 1.953315
    loss = losses.distillation_loss("mse", T([[1.0, 2.0]]), labels=T([1]), teacher_logits=T([[0.0, 0.0]]),
                                    alpha=0.25)
    assert loss.item() == pytest.approx(0.25 * math.log(1 + math.exp(-1)) + 0.75 * 2.5, abs=1e-6)


def test_alpha_mixes_ce_and_kl_exactly():
    # CE: -log softmax([0, 2 ln 3])[0] = -log(1/10) = ln 10 = 2.302585; KL at T=2 = 0.575364 (above)
    # 0.5 * 2.302585 + 0.5 * 0.575364 = 1.438975
    loss = losses.distillation_loss("kl", T([[0.0, 2 * math.log(3)]]), labels=T([0]),
                                    teacher_logits=T([[0.0, 0.0]]), alpha=0.5, temperature=2.0)
    assert loss.item() == pytest.approx(0.5 * math.log(10) + 0.5 * 2 * math.log(4 / 3), abs=1e-6)


@pytest.mark.parametrize("labels", [None, T([-100])])
def test_unlabelled_batches_use_the_kd_term_alone(labels):
    # no label to mix in: the loss is the MSE (2.5), not 0.75 * 2.5
    loss = losses.distillation_loss("mse", T([[1.0, 2.0]]), labels=labels, teacher_logits=T([[0.0, 0.0]]),
                                    alpha=0.25)
    assert loss.item() == pytest.approx(2.5)


def test_alpha_zero_is_pure_kd_and_ce_kind_ignores_the_teacher():
    s, t, y = T([[1.0, 2.0]]), T([[0.0, 0.0]]), T([1])
    assert losses.distillation_loss("mse", s, labels=y, teacher_logits=t).item() == pytest.approx(2.5)
    assert losses.distillation_loss("ce", s, labels=y, teacher_logits=t, alpha=0.3).item() == pytest.approx(
        math.log(1 + math.exp(-1)), abs=1e-6)


def test_registry_holds_the_three_losses():
    assert set(losses.LOSSES) == {"ce", "mse", "kl"}


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "kll"}, "Did you mean 'kl'"),
    ({"alpha": 1.5}, "alpha must be in \\[0, 1\\].*1.5"),
    ({"alpha": -0.1}, "alpha must be in"),
    ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
    ({"teacher_logits": None}, "distils from teacher logits"),
    ({"kind": "ce", "labels": None}, "trains on labels"),
])
def test_bad_arguments_are_config_errors(kwargs, match):
    args = {"kind": "kl", "labels": T([0]), "teacher_logits": T([[0.0, 0.0]]), **kwargs}
    with pytest.raises(ConfigError, match=match):
        losses.distillation_loss(args.pop("kind"), T([[1.0, 2.0]]), **args)


def test_student_and_teacher_shapes_must_match():
    with pytest.raises(ValueError, match=r"\(1, 3, 2\).*\(1, 2, 2\)"):
        losses.mse(torch.zeros(1, 3, 2), torch.zeros(1, 2, 2))
