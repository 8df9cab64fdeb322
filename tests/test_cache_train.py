"""The logit cache, the length-bucketed sampler, the collator and atomic run folders."""
from __future__ import annotations

import numpy as np
import torch

from kdlib import cache, rundir
from kdlib.train import BucketBatchSampler, Collator, predictions


def test_cache_roundtrip_ragged_and_nan(tmp_path):
    store = cache.LogitCache(tmp_path)
    logits = [np.arange(6, dtype=np.float32).reshape(3, 2), np.array([[1.0, np.nan]], dtype=np.float32),
              np.zeros((0, 2), dtype=np.float32)]
    store.save("train", "k1", logits)
    back = store.load("train", "k1")
    assert [a.shape for a in back] == [(3, 2), (1, 2), (0, 2)]
    np.testing.assert_array_equal(back[0], logits[0])
    assert np.isnan(back[1][0, 1])
    assert store.load("train", "other") is None
    assert not list(tmp_path.glob("*.tmp*"))


def test_get_or_compute_runs_once(tmp_path):
    store, calls = cache.LogitCache(tmp_path), []

    def compute():
        calls.append(1)
        return [np.ones(3)]

    a = store.get_or_compute("valid", "k", compute)
    b = store.get_or_compute("valid", "k", compute)
    assert len(calls) == 1 and np.array_equal(a[0], b[0])


def test_runs_needing_the_same_logits_at_once_compute_them_once(tmp_path):
    import threading

    store, calls, out = cache.LogitCache(tmp_path / "logits"), [], []

    def compute():
        calls.append(1)
        threading.Event().wait(0.3)  # the other run asks while the teacher is still running
        return [np.ones(3)]

    runs = [threading.Thread(target=lambda: out.append(store.get_or_compute("transfer-tang-x5", "k", compute)))
            for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert len(calls) == 1 and len(out) == 2 and np.array_equal(out[0][0], out[1][0])


def test_key_changes_with_every_input():
    base = cache.cache_key("t", "smsa", "e", {"max_length": 128})
    assert base == cache.cache_key("t", "smsa", "e", {"max_length": 128})
    others = {cache.cache_key("t2", "smsa", "e", {"max_length": 128}),
              cache.cache_key("t", "casa", "e", {"max_length": 128}),
              cache.cache_key("t", "smsa", "e2", {"max_length": 128}),
              cache.cache_key("t", "smsa", "e", {"max_length": 64})}
    assert base not in others and len(others) == 4


def test_model_fingerprint_tracks_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    first = cache.fingerprint_model_dir(tmp_path)
    assert cache.fingerprint_model_dir(tmp_path) == first
    import os
    import time
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    later = time.time() + 5
    os.utime(tmp_path / "model.safetensors", (later, later))
    assert cache.fingerprint_model_dir(tmp_path) != first
    assert cache.fingerprint_examples([{"a": 1}]) != cache.fingerprint_examples([{"a": 2}])


def test_bucket_sampler_covers_all_and_groups_lengths():
    lengths = [(i * 37) % 100 for i in range(1000)]
    sampler = BucketBatchSampler(lengths, 10, shuffle=True, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 10  # random batches of 10 from 0..99 spread ~80
    assert list(BucketBatchSampler(lengths, 10, shuffle=True, seed=3)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    ordered = list(BucketBatchSampler(lengths, 10, shuffle=False))
    assert [lengths[i] for b in ordered for i in b] == sorted(lengths)


def test_collator_pads_words_labels_and_teacher_logits():
    feats = [{"word_ids": [5, 6, 7], "word_index": [0, 1, 2], "labels": [1, 0, 2],
              "teacher_logits": np.array([[1, 2, 3], [4, 5, 6], [np.nan] * 3], dtype=np.float32)},
             {"word_ids": [8], "word_index": [0], "labels": [2], "teacher_logits": np.ones((1, 3), np.float32)}]
    batch = Collator(pad_id=0)(feats)
    assert batch["word_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["lengths"].tolist() == [3, 1]
    assert batch["word_index"].tolist() == [[0, 1, 2], [0, -1, -1]]
    assert batch["labels"].tolist() == [[1, 0, 2], [2, -100, -100]]
    assert batch["teacher_mask"].tolist() == [[True, True, False], [True, False, False]]
    assert torch.isfinite(batch["teacher_logits"]).all()


def test_collator_classification_and_aspects():
    batch = Collator(pad_id=1)([{"input_ids": [0, 9, 2], "attention_mask": [1, 1, 1], "labels": [0, 2],
                                 "teacher_logits": np.zeros((2, 3))},
                                {"input_ids": [0, 2], "attention_mask": [1, 1], "labels": [1, 1],
                                 "teacher_logits": np.ones((2, 3))}])
    assert batch["input_ids"].tolist() == [[0, 9, 2], [0, 2, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].shape == (2, 2) and batch["teacher_logits"].shape == (2, 2, 3)


def test_predictions_fall_back_on_unseen_words():
    logits = [np.array([[0.1, 0.9], [np.nan, np.nan], [2.0, 1.0]]), np.array([3.0, 1.0])]
    assert predictions(logits, fallback=1) == [[1, 1, 0], 0]


def test_write_json_is_atomic_and_done_marker(tmp_path):
    rundir.write_json(tmp_path / "run" / "metrics.json", {"f1": np.float32(0.5)})
    assert rundir.read_json(tmp_path / "run" / "metrics.json") == {"f1": 0.5}
    assert not rundir.is_done(tmp_path / "run")
    rundir.mark_done(tmp_path / "run", run="x")
    assert rundir.is_done(tmp_path / "run") and not list((tmp_path / "run").glob(".*tmp"))
    env = rundir.environment()
    assert env["cores"] >= 1 and env["torch"] and env["cpu"]


def _scripted_fit(tmp_path, monkeypatch, scores, **config):
    from types import SimpleNamespace

    from kdlib import data, train

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.EmbeddingBag(10, 3)

        def forward(self, batch):
            return SimpleNamespace(logits=self.emb(batch["word_ids"]))

    scores = list(scores)
    monkeypatch.setattr(train, "evaluate", lambda *args, **kwargs: {"f1": scores.pop(0)})
    features = [{"word_ids": [i % 10, (i * 3 + 1) % 10], "labels": i % 3} for i in range(8)]
    cfg = train.TrainConfig(epochs=10, lr=0.1, batch_size=4, loss="ce", **config)
    return train.fit(Tiny(), features, features, [0] * 8, data.get_spec("smsa"), cfg, tmp_path / "work",
                     train.Collator())


def test_early_stopping_waits_for_min_epochs(tmp_path, monkeypatch):
    """A run stuck at the majority class (the same F1 epoch after epoch) is not stopped before min_epochs."""
    flat_then_up = [0.29] * 6 + [0.5, 0.6, 0.6, 0.6]
    stopped = _scripted_fit(tmp_path / "a", monkeypatch, flat_then_up, patience=3)
    assert len(stopped.history) == 4 and stopped.best_epoch == 1  # the old rule: patience alone
    waited = _scripted_fit(tmp_path / "b", monkeypatch, flat_then_up, patience=3, min_epochs=8)
    assert len(waited.history) == 10 and waited.best_epoch == 8
