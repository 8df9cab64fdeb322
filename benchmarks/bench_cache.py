"""Distillation from cached teacher logits vs the teacher run on the fly: training speed-up per student epoch.

    python benchmarks/bench_cache.py                      # SmSA, 1000 train examples, offline teacher, 2 epochs
    python benchmarks/bench_cache.py --teacher-dir outputs/core-offline/teacher/smsa/teacher

Two copies of the same student (same initial weights) are trained side by side on the same batches, in kdlib's
order (length-bucketed): each batch is one step of kdlib's training step (collate, forward, MSE against the
teacher's logits, backward, clip, AdamW, schedule) for the copy that reads the cached logits, then one for the
copy whose teacher logits are computed by a no-grad forward pass of the teacher on that batch, as a distillation
tool does by default. Alternating step by step makes both see the same machine load, so their ratio holds on a
busy machine. The one cost of the cache, a teacher pass over the train split, is paid once per dataset by the
teacher run and shared by every student, variant and seed; it is measured too.
"""
from __future__ import annotations

import copy
import time

import common
import torch
from transformers import BertConfig

from kdlib import data, models
from kdlib.errors import one_line_errors
from kdlib.train import BucketBatchSampler, TrainConfig, feature_length, make_loader

BATCH = 32
TINY_OPTIONS = {"bilstm": {"emb_dim": 16, "hidden": 16}, "cnn": {"emb_dim": 16, "filters": 8}}


def base_shaped_teacher(teacher_dir, dataset: str) -> torch.nn.Module:
    """A randomly initialised BERT-base-sized teacher (IndoBERT-base's shape: 12 x 768) on the teacher's tokenizer:
    its forward pass costs what the paper's teacher's does; its logits are only timed, never learned from."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir / "model")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    return models.BertTaskModel.from_config(config, data.get_spec(dataset)).eval().requires_grad_(False)


def teacher_passes(teachers: list, features: list[dict], collator) -> list[float]:
    """Seconds of one no-grad pass over `features` for each teacher (None: skipped), batch by batch in turn."""
    seconds = [0.0 for _ in teachers]
    with torch.no_grad():
        for batch in make_loader(features, collator, 64, shuffle=False):
            for i, teacher in enumerate(teachers):
                if teacher is not None:
                    started = time.perf_counter()
                    teacher(batch)
                    seconds[i] += time.perf_counter() - started
    return [s if t is not None else None for s, t in zip(seconds, teachers)]


@one_line_errors
def main() -> None:
    p = common.arguments(__doc__.splitlines()[0])
    p.add_argument("--students", nargs="+", default=["bilstm", "cnn", "bert-tiny"],
                   choices=("bilstm", "cnn", "bert-tiny", "bert-mini", "bert-small"))
    args = common.settle(p.parse_args(), "cache")
    data_dir, teacher_dir = common.prepare(args)
    teacher, teacher_feats, teacher_collator = common.teacher_features(teacher_dir, args.dataset, data_dir)
    base = None if args.tiny else base_shaped_teacher(teacher_dir, args.dataset)
    fill, base_fill = teacher_passes([teacher, base], teacher_feats, teacher_collator)
    logits = common.cached_logits(teacher_dir, args.dataset, data_dir)

    rows = []
    for student in args.students:
        inputs = common.student_inputs(student, args.dataset, data_dir, teacher_dir,
                                       TINY_OPTIONS.get(student, {}) if args.tiny else {})
        cfg = TrainConfig(lr=inputs.lr, loss="mse")
        sampler = BucketBatchSampler([feature_length(f) for f in inputs.features["train"]], BATCH, shuffle=True)
        steps = len(sampler) * args.epochs
        cached_feats = common.with_logits(inputs.features["train"], logits)
        fly_feats = common.with_teacher_inputs(inputs.features["train"], teacher_feats)
        pair = common.PairCollator(inputs.collator, teacher_collator)
        cached = common.Trainee(inputs.model, cfg, steps)
        on_the_fly = common.Trainee(common.TeacherOnTheFly(copy.deepcopy(inputs.model), teacher), cfg, steps)
        first = next(iter(sampler))  # warm-up (lazy kernel set-up) on throw-away copies, untimed
        common.Trainee(copy.deepcopy(cached.model), cfg, steps).step(inputs.collator, [cached_feats[i] for i in first])
        common.Trainee(copy.deepcopy(on_the_fly.model), cfg, steps).step(pair, [fly_feats[i] for i in first])
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for batch in sampler:
                cached.step(inputs.collator, [cached_feats[i] for i in batch])
                on_the_fly.step(pair, [fly_feats[i] for i in batch])
        per_epoch = cached.seconds / args.epochs, on_the_fly.seconds / args.epochs
        row = {"student": student, "cached s/epoch": round(per_epoch[0], 2),
               "on-the-fly s/epoch": round(per_epoch[1], 2),
               "speed-up per epoch": f"{per_epoch[1] / per_epoch[0]:.1f}x"}
        if base_fill:  # on the fly = cached + teacher passes; a BERT-base pass costs base_fill / fill of ours
            base_epoch = per_epoch[0] + (per_epoch[1] - per_epoch[0]) * base_fill / fill
            row["BERT-base teacher: speed-up"] = f"{base_epoch / per_epoch[0]:.1f}x"
        row["cache fill / cached epoch"] = round(fill / per_epoch[0], 1)
        rows.append(row)
    n_teacher = sum(p.numel() for p in teacher.parameters()) / 1e6
    notes = [f"one teacher pass over the {args.train} train examples (the cache fill, paid once per dataset by the "
             f"teacher run, shared by every student, variant and seed): {fill:.1f}s",
             "speed-up per epoch = on-the-fly s/epoch / cached s/epoch: the same steps on the same batches, alternated"]
    if base_fill:
        notes.append(f"BERT-base teacher (IndoBERT-base's shape, 12x768, random weights, timing only): a pass costs "
                     f"{base_fill / fill:.2f}x ours (the two passes alternated batch by batch: {base_fill:.0f}s vs "
                     f"{fill:.0f}s); its speed-up = (cached + (on-the-fly - cached) x {base_fill / fill:.2f}) / cached")
    common.print_table(
        f"bench_cache: {args.dataset}, {args.train} train examples, {args.epochs} epoch(s), batch {BATCH}, teacher "
        f"{args.teacher} ({n_teacher:.0f}M parameters), {args.threads} torch thread(s)", rows, notes)


if __name__ == "__main__":
    main()
