"""What batching costs: length-bucketed batches with dynamic padding vs random batches, dynamic or padded to the
maximum length, and how much of a step is host work (collating a batch) rather than the model.

    python benchmarks/bench_loader.py                     # SmSA, 1000 train examples, BiLSTM and BERT-Tiny

One epoch per variant of the same training step kdlib runs (forward, MSE on cached teacher logits, backward,
clip, AdamW), from the same student weights on the same examples; only the order and padding of batches change.
The variants take their steps in turn (one step each, then the next), so all see the same machine load.
"""
from __future__ import annotations

import copy
import time

import common
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from kdlib.errors import one_line_errors
from kdlib.train import BucketBatchSampler, Collator, TrainConfig, batch_loss, feature_length

BATCH = 32


class PadTo(Collator):
    """Pads every sequence to a fixed width (what `padding="max_length"` tokenisation gives)."""

    def __init__(self, pad_id: int, width: int):
        super().__init__(pad_id=pad_id)
        object.__setattr__(self, "width", width)

    def __call__(self, features):
        key = "input_ids" if "input_ids" in features[0] else "word_ids"
        padded = []
        for f in features:
            extra = self.width - len(f[key])
            g = dict(f)
            g[key] = f[key] + [self.pad_id] * extra
            if "attention_mask" in f:
                g["attention_mask"] = f["attention_mask"] + [0] * extra
            if "token_type_ids" in f:
                g["token_type_ids"] = f["token_type_ids"] + [0] * extra
            padded.append(g)
        batch = super().__call__(padded)
        if "lengths" in batch:  # the BiLSTM packs by real length: keep those
            batch["lengths"] = torch.tensor([len(f[key]) for f in features])
        return batch


class Variant:
    """One batching variant: its own copy of the student, its optimiser, and the time it spends per part."""

    def __init__(self, model, loader: DataLoader, cfg: TrainConfig):
        self.model, self.cfg, self.batches = copy.deepcopy(model).train(), cfg, iter(loader)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=cfg.lr,
                                           weight_decay=cfg.weight_decay, fused=True)  # as kdlib.train.fit
        self.pad_id = loader.collate_fn.pad_id
        self.host = self.step_seconds = 0.0
        self.real = self.total = 0

    def step(self) -> None:
        t0 = time.perf_counter()
        batch = next(self.batches)
        t1 = time.perf_counter()
        loss = batch_loss(self.model, batch, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        t2 = time.perf_counter()
        self.host, self.step_seconds = self.host + t1 - t0, self.step_seconds + t2 - t1
        real = batch["attention_mask"] if "attention_mask" in batch else batch["word_ids"] != self.pad_id
        self.real, self.total = self.real + int(real.sum()), self.total + real.numel()


@one_line_errors
def main() -> None:
    p = common.arguments(__doc__.splitlines()[0])
    p.add_argument("--students", nargs="+", default=["bilstm", "bert-tiny"], choices=("bilstm", "cnn", "bert-tiny"))
    args = common.settle(p.parse_args(), "loader")
    data_dir, teacher_dir = common.prepare(args)
    logits = common.cached_logits(teacher_dir, args.dataset, data_dir)
    rows = []
    for student in args.students:
        options = {"emb_dim": 16, "hidden": 16} if args.tiny and student == "bilstm" else {}
        inputs = common.student_inputs(student, args.dataset, data_dir, teacher_dir, options)
        train = common.with_logits(inputs.features["train"], logits)
        cfg = TrainConfig(lr=inputs.lr, loss="mse")
        width = max(feature_length(f) for f in train)
        torch.manual_seed(0)
        order = list(BatchSampler(RandomSampler(train), BATCH, drop_last=False))  # one random order for both
        variants = {
            "bucketed, dynamic padding (kdlib)": DataLoader(
                train, batch_sampler=BucketBatchSampler([feature_length(f) for f in train], BATCH, shuffle=True),
                collate_fn=inputs.collator),
            "random, dynamic padding": DataLoader(train, batch_sampler=order, collate_fn=inputs.collator),
            f"random, padded to the longest ({width})": DataLoader(
                train, batch_sampler=order, collate_fn=PadTo(inputs.collator.pad_id, width)),
        }
        running = {name: Variant(inputs.model, loader, cfg) for name, loader in variants.items()}
        for _ in range(len(order)):  # step by step in turn, so every variant sees the same machine load
            for variant in running.values():
                variant.step()
        base = running["bucketed, dynamic padding (kdlib)"]
        for name, v in running.items():
            epoch = v.host + v.step_seconds
            rows.append({"student": student, "batches": name, "epoch s": round(epoch, 2),
                         "vs kdlib": f"{epoch / (base.host + base.step_seconds):.2f}x",
                         "padding %": round(100 * (1 - v.real / v.total), 1),
                         "host (collate) %": round(100 * v.host / epoch, 1)})
    common.print_table(
        f"bench_loader: {args.dataset}, {args.train} train examples, one epoch per variant, batch {BATCH}, "
        f"{args.threads} torch thread(s)", rows,
        ["vs kdlib = epoch seconds / kdlib's epoch seconds (same weights, examples and step)",
         "padding % = padded positions / all positions; host % = share of the epoch spent collating batches"])


if __name__ == "__main__":
    main()
