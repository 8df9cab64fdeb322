"""Issue 18: what a careless or hurried user can feed kd-exam is refused in one line, before anything runs; corrupt
run folders are named, not tracebacks; resuming never unpickles code; temporary files never collide."""
from __future__ import annotations

import logging
import re
import textwrap
import typing
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kdlib import augment, cache, cli, config, data, embeddings, params, results, rundir, runner, train
from kdlib.errors import ConfigError, DataError, RunFolderError

ROOT = Path(__file__).resolve().parents[1]

STUDY = """
study: t
datasets: [smsa]
seeds: [0]
teacher: {base_model: tiny-random, epochs: 1}
distill:
  students: [bilstm]
  variants: [mse, ce]
  epochs: 2
  student_options: {bilstm: {emb_dim: 16}}
"""
ABLATION = STUDY + """
ablation:
  students: [cnn]
  seeds: [0, 1]
  augmentation: {variants: [{transfer: tang, transfer_size: 2}], p_mask: 0.1}
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str, message: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        config.load_params(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    return str(e.value)


# ----------------------------------------------------------------------------------------------------------------
# 1. Ranges, allowed values and duplicates, when the file loads

@pytest.mark.parametrize("edit, message", [
    (("epochs: 1}", "epochs: -1}"), "teacher.epochs: -1 is out of range; allowed: >= 1."),
    (("epochs: 1}", "epochs: 1, patience: 0}"), "teacher.patience: 0 is out of range; allowed: >= 1."),
    (("epochs: 1}", "epochs: 1, max_train_examples: -5}"),
     "teacher.max_train_examples: -5 is out of range; allowed: >= 1 or null."),
    (("epochs: 1}", "epochs: 1, lr: 0}"), "teacher.lr: 0 is out of range; allowed: > 0."),
    (("epochs: 1}", "epochs: 1, pooling: max}"), "teacher.pooling: 'max' is out of range; allowed: one of auto, cls, "
                                                 "mean."),
    (("  epochs: 2", "  batch_size: 0"), "distill.batch_size: 0 is out of range; allowed: >= 1."),
    (("  epochs: 2", "  max_vocab: 0"), "distill.max_vocab: 0 is out of range; allowed: >= 1 or null."),
    (("  epochs: 2", "  lr: -0.1"), "distill.lr: -0.1 is out of range; allowed: > 0 or null."),
    (("seeds: [0]", "seeds: [0]\nthreads: -2"), "threads: -2 is out of range; allowed: >= 0."),
    (("seeds: [0]", "seeds: [-1]"), "seeds: [-1] is out of range"),
    (("{emb_dim: 16}", "{emb_dim: 0}"), "distill.student_options.bilstm.emb_dim: 0 is out of range; allowed: >= 1."),
    (("{emb_dim: 16}", "{dropout: 1.5}"), "student_options.bilstm.dropout: 1.5 is out of range; allowed: in [0, 1)."),
    (("{emb_dim: 16}", "{embdim: 16}"), "student_options.bilstm: unknown option 'embdim'"),
    (("{emb_dim: 16}", "{emb_dim: big}"), "student_options.bilstm.emb_dim: 'big' is a str, expected int."),
    (("[mse, ce]", "[mse, {loss: kl, temperature: hot}]"), "distill.variants[1].temperature: 'hot' is a str"),
    (("p_mask: 0.1", "p_mask: 1.5"), "ablation.augmentation.p_mask: 1.5 is out of range; allowed: in [0, 1]."),
    (("p_mask: 0.1", "max_ng: 0"), "ablation.augmentation.max_ng: 0 is out of range; allowed: >= 1."),
    (("p_mask: 0.1", "pos_lexicon: xx"), "ablation.augmentation.pos_lexicon: 'xx' is out of range; allowed: one of "
                                         "posp, bapos."),
])
def test_out_of_range_values_are_refused_in_one_line(tmp_path, edit, message):
    assert edit[0] in ABLATION
    refused(tmp_path, ABLATION.replace(*edit, 1), message)


@pytest.mark.parametrize("edit, message", [
    (("[smsa]", "[smsa, SmSA]"), "datasets: 'smsa' is listed twice in ['smsa', 'smsa']; list each entry once."),
    (("seeds: [0]", "seeds: [0, 0]"), "seeds: 0 is listed twice in [0, 0]"),
    (("[bilstm]", "[bilstm, bilstm]"), "distill.students: 'bilstm' is listed twice"),
    (("[mse, ce]", "[mse, ce, mse]"), "distill.variants: Variant(loss='mse', alpha=0.0, temperature=1.0) is listed "
                                      "twice"),
    (("seeds: [0, 1]", "seeds: [1, 1]"), "ablation.seeds: a list of distinct integers"),
    (("[cnn]", "[cnn, cnn]"), "ablation.students: 'cnn' is listed twice"),
])
def test_duplicate_entries_are_refused(tmp_path, edit, message):
    assert edit[0] in ABLATION
    refused(tmp_path, ABLATION.replace(*edit, 1), message)


def test_duplicates_in_dataset_sections_and_keys(tmp_path):
    refused(tmp_path, STUDY + "per_dataset: {smsa: {students: [bilstm, bilstm]}}\n",
            "per_dataset.smsa.students: 'bilstm' is listed twice")
    refused(tmp_path, STUDY.replace("[smsa]", "[smsa, casa]") + "per_dataset: {smsa: {}, SMSA: {}}\n",
            "per_dataset.SMSA: smsa has two per_dataset sections")
    message = refused(tmp_path, STUDY + "distill: {epochs: 3}\n", "not valid YAML (key 'distill' given twice)")
    assert re.search(r"study.yaml:11: ", message)  # the line of the second one


def test_variants_that_plan_the_same_folder_are_refused(tmp_path, tiny_data_dir):
    study = config.load_params(write(tmp_path, STUDY.replace("[mse, ce]", "[mse, {loss: mse, temperature: 2}]")
                                     + f"output_dir: {tmp_path / 'out'}\n"))
    with pytest.raises(ConfigError, match=r"two entries plan the same run distill/smsa/bilstm-mse-s0 \(temperature "
                                          r"1.0 vs 2.0\); list each dataset, seed, student and variant once"):
        runner.plan(study, data_dir=str(tiny_data_dir))


def test_every_number_and_choice_of_every_recipe_has_a_limit():
    """A new field of TeacherParams/DistillParams/AblationParams needs a line in params.LIMITS (ProfileParams:
    params.PROFILE_LIMITS), else a params file could set it to anything."""
    def numeric(hint) -> bool:
        args = typing.get_args(hint) or (hint,)
        return any(a in (int, float) for a in args) or typing.get_origin(hint) is list

    for cls, table in [(params.TeacherParams, params.LIMITS), (params.AblationParams, params.LIMITS),
                       (params.ProfileParams, params.PROFILE_LIMITS)]:
        hints = typing.get_type_hints(cls)
        missing = [f.name for f in fields(cls)
                   if numeric(hints[f.name]) and f.name not in table and f.name not in config.RUN_OWNED]
        assert not missing, f"{cls.__name__}: no limit for {missing}"
        for f in fields(cls):  # and every limit admits the field's default
            if f.name in table and isinstance(f.default, (int, float, str)) and not isinstance(f.default, bool):
                assert table[f.name].ok(f.default), (cls.__name__, f.name, f.default)


def test_shipped_params_files_still_load():
    for path in sorted((ROOT / "params").glob("*.yaml")):
        config.load_params(path)


# ----------------------------------------------------------------------------------------------------------------
# 2. Names that become folders

def test_long_or_odd_study_names_are_refused(tmp_path):
    refused(tmp_path, STUDY.replace("study: t", "study: " + "x" * 300), "study must be a plain folder name (at most "
            "100 letters, digits, '.', '_' or '-', starting with a letter or digit)")
    refused(tmp_path, STUDY.replace("study: t", "study: 'my study'"), "got 'my study'")
    refused(tmp_path, STUDY + "teachers_from: 'a b'\n", "teachers_from: 'a b' is not a study name")


def test_run_folders_named_after_files_are_checked(tmp_path, tiny_data_dir):
    vec = tmp_path / ("v" * 120 + ".vec")
    vec.write_text("a 0.1 0.2\n", encoding="utf-8")
    text = STUDY + f"output_dir: {tmp_path / 'out'}\nablation: {{students: [cnn], embedding: {{variants: [{vec}]}}}}\n"
    study = config.load_params(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"folder name 'cnn-vec-vvvv.*' \(131 characters\) must be at most 100 "
                                          "letters"):
        runner.plan(study, data_dir=str(tiny_data_dir))


# ----------------------------------------------------------------------------------------------------------------
# 3. teachers_from: an error when it does not resolve; a borrower writes only in its own folder

BORROWER = """
study: borrower
datasets: [smsa]
teachers_from: nobody
distill: {students: [bilstm], variants: [mse]}
ablation: {students: [cnn], embedding: {variants: [word2vec]}}
"""


def test_teachers_from_nowhere_fails_the_dry_run(tmp_path, tiny_data_dir, capsys):
    params = write(tmp_path, BORROWER + f"output_dir: {tmp_path / 'out'}\n")
    assert cli.main(["run", str(params), "--dry-run", "--data-dir", str(tiny_data_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert "teachers_from 'nobody': no study with teachers at" in err and len(err.splitlines()) == 1


def test_a_borrower_keeps_its_caches_and_vectors_in_its_own_folder(tmp_path, tiny_data_dir):
    out = tmp_path / "out"
    (out / "nobody" / "teacher" / "smsa" / "teacher").mkdir(parents=True)
    runs = runner.plan(config.load_params(write(tmp_path, BORROWER + f"output_dir: {out}\n")),
                       data_dir=str(tiny_data_dir))
    own = out / "borrower"
    for run in runs:
        assert run.parameters["cache_dir"] == str(own / "cache" / "teacher" / "smsa")
        assert run.parameters["teacher_dir"] == str(out / "nobody" / "teacher" / "smsa" / "teacher")
    assert runs[-1].parameters["embedding_dir"] == str(own / "cache" / "embeddings")  # not a shared outputs/models
    runner.check_parameters(runs)  # the notebooks take cache_dir
    refused(tmp_path, BORROWER.replace("[word2vec]}", "[word2vec], embedding_dir: /elsewhere}"),
            "unknown key 'embedding_dir'")


def test_a_cache_reads_a_borrowed_folder_and_writes_only_its_own(tmp_path):
    lender, own = tmp_path / "lender" / "logits", tmp_path / "own" / "logits"
    cache.LogitCache(lender).save("train", "k1", [np.ones(3, np.float32)])
    before = sorted(p.name for p in lender.parent.rglob("*"))
    store = cache.LogitCache(own, read_also=[lender])
    assert store.get_or_compute("train", "k1", lambda: pytest.fail("not read from the lender"))[0].tolist() == [1] * 3
    assert store.get_or_compute("transfer-tang-x2", "k2", lambda: [np.zeros(2)])[0].tolist() == [0, 0]
    assert (own / "transfer-tang-x2-k2.npz").exists()
    assert sorted(p.name for p in lender.parent.rglob("*")) == before  # no entry, lock or temp file there

    model_dir = tmp_path / "lender" / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    value = cache.fingerprint_model_dir(model_dir, tmp_path / "own")
    assert (tmp_path / "own" / cache.FINGERPRINT_FILE).read_text() == value
    assert [p.name for p in model_dir.iterdir()] == ["config.json"]
    assert cache.fingerprint_model_dir(model_dir, tmp_path / "own") == value


# ----------------------------------------------------------------------------------------------------------------
# 4. Corrupt or truncated files of run folders

def _run(folder: Path, metrics: dict | str) -> None:
    folder.mkdir(parents=True)
    text = metrics if isinstance(metrics, str) else __import__("json").dumps(metrics)
    (folder / rundir.METRICS).write_text(text)
    rundir.mark_done(folder)


def test_report_names_a_corrupt_run_and_shows_the_others(tmp_path, capsys, caplog):
    study = tmp_path / "s"
    _run(study / "teacher" / "smsa" / "teacher", {"stage": "teacher", "dataset": "smsa", "model": "teacher",
                                                  "variant": "offline", "seed": 0, "f1": 0.8, "valid": {"f1": 0.7}})
    _run(study / "distill" / "smsa" / "bilstm-mse-s0", '{"stage": "distill", "f1": 0.')  # truncated
    with caplog.at_level(logging.WARNING):
        assert cli.main(["report", "--study", str(study)]) == 0
    assert "80.0" in capsys.readouterr().out  # the teacher's test F1
    bad = study / "distill" / "smsa" / "bilstm-mse-s0"
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"{bad / rundir.METRICS}: truncated or corrupt JSON") and "\n" not in warning
    assert f"delete the run folder {bad} and run the study again to redo it" in warning


def test_unreadable_run_files_are_one_line_errors(tmp_path):
    run = tmp_path / "teacher"
    run.mkdir()
    (run / rundir.TEACHER_INFO).write_text('{"max_length": 6')
    with pytest.raises(RunFolderError, match=rf"teacher.json: truncated or corrupt JSON .*; delete the run folder "
                                             rf"{run} and run the study again to redo it\."):
        rundir.read_json(run / rundir.TEACHER_INFO)
    (run / "profile.json").write_text("[]")
    assert results._profiles(tmp_path) == []  # recommend and the analysis leave it out, with a warning
    logits = tmp_path / "logits"
    cache.LogitCache(logits).save("valid", "k", [np.ones(2)])
    path = logits / "valid-k.npz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(RunFolderError, match=r"valid-k.npz: truncated or corrupt cache entry .*; delete this file and "
                                             "the next run computes it again"):
        cache.LogitCache(logits).load("valid", "k")


# ----------------------------------------------------------------------------------------------------------------
# 5. Checkpoints: tensors and plain values only, read with weights_only=True

class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.EmbeddingBag(10, 3)

    def forward(self, batch):
        return SimpleNamespace(logits=self.emb(batch["word_ids"]))


FEATURES = [{"word_ids": [i % 10, (i * 3 + 1) % 10], "labels": i % 3} for i in range(16)]
CFG = train.TrainConfig(epochs=2, lr=0.5, batch_size=4, patience=5, loss="ce")


def _fit(model, work, monkeypatch, scores, snapshots):
    def scripted(model, *args, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"f1": scores.pop(0)}
    monkeypatch.setattr(train, "evaluate", scripted)
    return train.fit(model, FEATURES, FEATURES, [0] * 16, data.get_spec("smsa"), CFG, work, train.Collator())


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_holds_code_is_refused_unrun(tmp_path, monkeypatch):
    work, marker = tmp_path / "work", tmp_path / "ran"
    work.mkdir()
    torch.save({"config": {}, "payload": _RunsCode(marker)}, work / "checkpoint.pt")
    with pytest.raises(RunFolderError, match=rf"checkpoint.pt: not loaded: it holds objects other than tensors .*; "
                                             rf"delete {work} to start this run's training over"):
        _fit(_Tiny(), work, monkeypatch, [0.5, 0.6], [])
    assert not marker.exists()


def test_no_unsafe_load_is_left():
    unsafe = "weights_only=" + "False"
    hits = [p for p in [*ROOT.glob("kdlib/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("notebooks/*.ipynb")]
            if unsafe in p.read_text(encoding="utf-8")]
    assert hits == []


# ----------------------------------------------------------------------------------------------------------------
# 7. Write order and temporary files

def test_a_kill_between_checkpoint_and_best_model_never_leaves_them_inconsistent(tmp_path, monkeypatch):
    """Killed at the second save of epoch 2 (whatever file it is), then resumed with epoch 2 scoring worse: the
    model returned must be the weights of the best epoch the run records."""
    work, calls, snapshots = tmp_path / "work", [], []
    save = train._atomic_torch_save

    def killed_at_the_fourth(obj, path):
        calls.append(path.name)
        if len(calls) == 4:
            raise KeyboardInterrupt
        save(obj, path)
    monkeypatch.setattr(train, "_atomic_torch_save", killed_at_the_fourth)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        _fit(_Tiny(), work, monkeypatch, [0.5, 0.9], snapshots)
    monkeypatch.setattr(train, "_atomic_torch_save", save)
    model = _Tiny()
    result = _fit(model, work, monkeypatch, [0.1, 0.1], [])
    best = snapshots[result.best_epoch - 1]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items()), result.best_epoch


def test_temporary_files_are_unique_and_leftovers_cleaned(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "fingerprint.sha256.tmp").mkdir()  # another writer's file under the old fixed name
    assert len(cache.fingerprint_model_dir(model_dir)) == 64
    logits = tmp_path / "logits"
    logits.mkdir()
    (logits / "valid-k.npz.tmp.npz").mkdir()
    (logits / ".valid-k.npz.x1y2.tmp").write_text("half")  # left by a writer killed under the entry's lock
    cache.LogitCache(logits).get_or_compute("valid", "k", lambda: [np.ones(2)])
    assert sorted(p.name for p in logits.iterdir()) == [".valid-k.lock", "valid-k.npz"]
    work = tmp_path / "work"
    work.mkdir()
    (work / "checkpoint.pt.tmp").write_text("half")
    (work / ".best.pt.abc.tmp").write_text("half")
    _fit(_Tiny(), work, monkeypatch, [0.5, 0.6], [])
    assert sorted(p.name for p in work.iterdir()) == ["best.pt", "checkpoint.pt"]


# ----------------------------------------------------------------------------------------------------------------
# 6. One rule for text: UTF-8, a BOM dropped everywhere, a bad byte named by its line

BOM = "\ufeff"


def test_a_bom_is_dropped_by_every_reader(tiny_data_dir, tmp_path):
    for key in ("terma", "emot"):  # a token<TAB>tag file, a CSV file with a header
        path = data.get_spec(key).path(tiny_data_dir, "train")
        path.write_text(BOM + path.read_text(encoding="utf-8"), encoding="utf-8")
        first = data.read_records(data.get_spec(key), "train", tiny_data_dir)[0]
        assert BOM not in str(first)
    pool = write(tmp_path, BOM + "satu dua\n", "pool.txt")
    texts, _ = augment.pool_texts(str(pool), data.get_spec("smsa"))
    assert texts == [["satu", "dua"]]
    vec = write(tmp_path, BOM + "1 2\nkata 0.5 1.5\n", "v.vec")
    vectors = embeddings.read_vec(vec)
    assert vectors.dim == 2 and vectors.vector("kata").tolist() == [0.5, 1.5]
    assert rundir.read_json(write(tmp_path, BOM + '{"a": 1}', "metrics.json")) == {"a": 1}
    assert config.load_params(write(tmp_path, BOM + STUDY)).name == "t"


def test_a_bad_byte_is_named_by_its_line(tiny_data_dir, tmp_path):
    text = tmp_path / "extra.txt"
    text.write_bytes("satu\ndua é\n".encode() + b"tiga \xe9\n")
    with pytest.raises(DataError, match=r"extra.txt:3: not valid UTF-8 \(byte 0xe9 at column 6\); embedding_text"):
        embeddings.in_domain_corpus(tiny_data_dir, text)
    path = data.get_spec("terma").path(tiny_data_dir, "train")
    lines = path.read_bytes().split(b"\n")
    lines[29] = lines[29][:3] + b"\xff" + lines[29][3:]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:30: not valid UTF-8 \(byte 0xff at column 4\); "
                                        "the file is corrupt"):
        data.load_indonlu("terma", tiny_data_dir)
