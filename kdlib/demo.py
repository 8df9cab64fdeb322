"""Fixtures for running a notebook by hand, outside a study: a tiny teacher, student and profile where none exist.

Each builds only what is missing, and only when `enabled` (the notebook's train_teacher_if_missing or
prepare_if_missing); the runner always passes enabled=False, because there a missing run is an error, not
something to paper over.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from kdlib import data, distill, profile, rundir, teachers
from kdlib.params import TINY_RANDOM, DistillParams, ProfileParams, TeacherParams

log = logging.getLogger(__name__)


def ensure_teacher(teacher_dir: str | os.PathLike, dataset: str, *, data_dir: str | None = None,
                   enabled: bool = True, max_train_examples: int | None = 300) -> Path:
    """For running 02_distill (and the ablations) alone: fine-tune a tiny random teacher into `teacher_dir`."""
    teacher_dir = Path(teacher_dir)
    if enabled and not (teacher_dir / rundir.TEACHER_INFO).exists():
        log.warning("no teacher in %s: fine-tuning a tiny random one for this standalone run", teacher_dir)
        teachers.run_teacher(TeacherParams(dataset=dataset, out_dir=str(teacher_dir), base_model=TINY_RANDOM,
                                           data_dir=data_dir, models_dir=str(teacher_dir.parent / "base-models"),
                                           max_train_examples=max_train_examples, epochs=2, lr=1e-3))
    return teacher_dir


def ensure_models(study_dir: str | os.PathLike, dataset: str, *, data_dir: str | None = None,
                  enabled: bool = True) -> Path:
    """For running 06_profile alone: a tiny teacher and a tiny BiLSTM student in `study_dir` if none are there."""
    study_dir, key = Path(study_dir), data.get_spec(dataset).key
    if not enabled:
        return study_dir
    teacher = ensure_teacher(rundir.teacher_dir(study_dir, key), key, data_dir=data_dir)
    students = rundir.student_dirs(study_dir, key)
    if not any(profile.finished(r) for r in students.glob("*/")):
        log.warning("no student in %s: distilling a tiny BiLSTM for this standalone run", students)
        distill.run_distill(DistillParams(dataset=key, student="bilstm", teacher_dir=str(teacher),
                                          out_dir=str(rundir.student_dir(study_dir, key, "bilstm", "mse", 0)),
                                          data_dir=data_dir, max_train_examples=300, epochs=2,
                                          student_options={"emb_dim": 32, "hidden": 32}))
    return study_dir


def ensure_profiled(study_dir: str | os.PathLike, dataset: str, *, data_dir: str | None = None,
                    enabled: bool = True) -> Path:
    """For running 07_analysis alone: a tiny study, profiled briefly, in `study_dir` if it holds no profile yet."""
    study_dir = Path(study_dir)
    if enabled and not any(study_dir.rglob(rundir.PROFILE)):
        ensure_models(study_dir, dataset, data_dir=data_dir)
        key = data.get_spec(dataset).key
        profile.run_profile(ProfileParams(study_dir=str(study_dir), dataset=key, data_dir=data_dir,
                                          out_dir=str(rundir.profile_dir(study_dir, key)), thread_counts=[1],
                                          batch_sizes=[1, 4], warmup=1, runs=5, memory=False, max_test_examples=100))
    return study_dir
