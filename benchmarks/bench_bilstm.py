"""The BiLSTM student's encoder: two unidirectional LSTMs over padded batches (kdlib) against one bidirectional
LSTM over a PackedSequence (the textbook way, and kd-exam's before), on real batches, one thread.

    python benchmarks/bench_bilstm.py                      # SmSA and NERGrit, 640 examples each
    python benchmarks/bench_bilstm.py --dataset emot --examples 320

Both contenders have the same weights (the packed one's are loaded into kdlib's, as an old saved model would be)
and give the same states (checked on every batch); they take their steps in turn, so both see the same machine
load. Training: forward, loss, backward and AdamW on length-bucketed batches of 32, as kdlib trains. Inference:
batches of 32 and single examples.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from kdlib import data, models  # noqa: E402
from kdlib.errors import one_line_errors  # noqa: E402
from kdlib.train import Collator, make_loader, set_threads  # noqa: E402


class PackedBiLSTM(models.BiLSTMStudent):
    """The same student, encoding with one nn.LSTM(bidirectional=True) over a PackedSequence."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.config
        self.lstm = nn.LSTM(c["emb_dim"], c["hidden"], num_layers=c["layers"], bidirectional=True, batch_first=True)

    def encode(self, x, lengths):
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])[0]


def batches(key: str, n: int, data_dir: str | None, batch_size: int) -> tuple[list[dict], int]:
    spec = data.get_spec(key)
    train = data.cap(data.load_indonlu(key, data_dir)["train"], n)
    vocab = data.Vocab.build(data.example_words(ex, spec) for ex in train)
    feats = train.map(data.encode_for_words, batched=True, remove_columns=train.column_names,
                      fn_kwargs={"vocab": vocab, "spec": spec, "max_words": 256}).to_list()
    loader = make_loader(feats, Collator(pad_id=vocab.pad_id), batch_size, shuffle=True, seed=0)
    return list(loader), len(vocab)


def step(model: nn.Module, batch: dict, optimizer) -> None:
    logits = model(batch).logits
    loss = logits.float().pow(2).mean()  # any scalar: the cost is the encoder's
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def bench(key: str, args: argparse.Namespace) -> list[dict]:
    spec = data.get_spec(key)
    train_batches, vocab_size = batches(key, args.examples, args.data_dir, 32)
    torch.manual_seed(0)
    shape = spec.shape if spec.shape in ("tagging", "qa") else "single"
    packed = PackedBiLSTM(vocab_size, spec.num_labels, shape)
    ours = models.BiLSTMStudent(vocab_size, spec.num_labels, shape)
    state = {k: v for k, v in packed.state_dict().items() if not k.startswith(("forward_lstm", "backward_lstm"))}
    ours.load_state_dict(state)  # what loading a BiLSTM saved before this change does
    contenders = {"packed nn.LSTM(bidirectional)": packed, "kdlib: two directions, padded": ours}
    words = sum(int(b["lengths"].sum()) for b in train_batches)
    rows = {name: {"dataset": key, "contender": name, "train s": 0.0, "infer b32 s": 0.0, "infer b1 s": 0.0}
            for name in contenders}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-3) for name, m in contenders.items()}
    for m in contenders.values():
        m.eval()
    with torch.no_grad():  # the same states, batch by batch
        for b in train_batches[:5]:
            x, lengths = packed.embedding(b["word_ids"]), b["lengths"]
            real = torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
            diff = (packed.encode(x, lengths) - ours.encode(x, lengths))[real].abs().max().item()
            assert diff < 1e-4, f"the encoders disagree by {diff}"
    for m in contenders.values():
        m.train()
    for b in train_batches:  # one training step each, in turn
        for name, m in contenders.items():
            rows[name]["train s"] += timed(step, m, b, optimizers[name])
    with torch.no_grad():
        for m in contenders.values():
            m.eval()
        for b in train_batches:
            for name, m in contenders.items():
                rows[name]["infer b32 s"] += timed(m, b)
        singles = [{k: v[i:i + 1] for k, v in b.items()} for b in train_batches[:4] for i in range(len(b["lengths"]))]
        for b in singles:
            n = int(b["lengths"][0])
            b = {k: v[:, :n] if v.dim() == 2 else v for k, v in b.items()}  # alone: no padding
            for name, m in contenders.items():
                rows[name]["infer b1 s"] += timed(m, b)
    out = []
    base = rows["packed nn.LSTM(bidirectional)"]
    for r in rows.values():
        out.append({**r, "train words/s": round(words / r["train s"]),
                    "train ×": round(base["train s"] / r["train s"], 2),
                    "infer b32 ×": round(base["infer b32 s"] / r["infer b32 s"], 2),
                    "infer b1 ms": round(1000 * r["infer b1 s"] / len(singles), 2),
                    "infer b1 ×": round(base["infer b1 s"] / r["infer b1 s"], 2)})
    return out


@one_line_errors
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", action="append", help="dataset key, repeatable (default: smsa and nergrit)")
    p.add_argument("--examples", type=int, default=640, help="train examples per dataset (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="IndoNLU data (default: $KDEXAM_DATA_DIR or data/indonlu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = p.parse_args()
    set_threads(args.threads)
    rows = [r for key in args.dataset or ["smsa", "nergrit"] for r in bench(key, args)]
    table = pd.DataFrame(rows).drop(columns=["train s", "infer b32 s", "infer b1 s"])
    print(f"BiLSTM student (emb 300, hidden 300), one epoch of length-bucketed batches of 32, {args.threads} "
          f"thread(s); × = faster than the packed LSTM in this run")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
