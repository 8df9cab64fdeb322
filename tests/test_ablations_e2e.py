"""The ablations end to end: the study file's ablation section, the plan, masked KD on tagging batches, transfer
sets labelled once through the logit cache, and notebooks 03-05 through papermill via `kdexam run`."""
from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch

from kdlib import cli, config, data, distill, models, params, rundir, runner, stats, teachers
from kdlib.errors import ConfigError
from kdlib.train import Collator, TrainConfig, batch_loss

GOOD = """
study: abl
datasets: [smsa, nergrit]
teacher: {base_model: tiny-random, epochs: 1}
distill: {students: [bilstm], epochs: 2}
ablation:
  students: [bilstm, bert-tiny]
  loss: {}
  embedding:
    variants: [random, {embedding: word2vec, freeze_embeddings: true}, vectors/small.vec]
    bert_variants: [random, mini]
  augmentation:
    loss: kl
    temperature: 2
    p_mask: 0.2
    variants: [{transfer: train}, {transfer: tang, transfer_size: 3}, {transfer: pool.txt, transfer_size: 2}]
"""


@pytest.fixture
def study_file(tmp_path):
    (tmp_path / "vectors").mkdir()
    (tmp_path / "vectors" / "small.vec").write_text("1 2\nnasi 1 2\n", encoding="utf-8")
    (tmp_path / "mini").mkdir()
    (tmp_path / "pool.txt").write_text("satu teks\n", encoding="utf-8")

    def write(text=GOOD):
        path = tmp_path / "study.yaml"
        path.write_text(textwrap.dedent(text) + f"output_dir: {tmp_path / 'out'}\n")
        return path
    return write


def test_ablation_section_defaults_and_paths(study_file, tmp_path):
    ab = config.load_params(study_file()).ablation
    assert ab.seeds == (0, 1, 2) and ab.students == ("bilstm", "bert-tiny")
    loss, emb, aug = ab.stages
    assert len(loss.variants) == 10 and loss.variants[1].settings == {"loss": "kl", "alpha": 0.0, "temperature": 1.0}
    assert emb.variants[2].settings["embedding"] == str(tmp_path / "vectors" / "small.vec")
    assert emb.bert_variants[1].student_options == {"init": str(tmp_path / "mini")}
    assert aug.settings == {"p_mask": 0.2, "loss": "kl", "alpha": 0.0, "temperature": 2.0}
    assert aug.variants[2].settings == {"transfer": str(tmp_path / "pool.txt"), "transfer_size": 2.0}
    assert config.load_params(study_file(GOOD.split("ablation:")[0])).ablation is None


@pytest.mark.parametrize("edit, message", [
    (("  loss: {}", "  loss: {}\n  los: {}"), "ablation: unknown key(s) los"),
    (("  loss: {}", "  loss: {epochs: two}"), "ablation.loss.epochs: 'two' is a str"),
    (("  loss: {}", "  loss: {loss: kl}"), "ablation.loss: unknown key 'loss'"),
    (("  loss: {}", "  loss: {variants: [mse, mse]}"), "listed twice"),
    (("  loss: {}", "  loss: {variants: [mse, {loss: kl, temp: 2}]}"), "unknown key(s) temp"),
    (("vectors/small.vec]", "vectors/big.vec]"), "variants[2]: 'vectors/big.vec' is not a file"),
    (("[random, mini]", "[random, maxi]"), "bert_variants[1]: 'maxi' is not a folder"),
    (("freeze_embeddings: true", "freeze: true"), "a mapping with keys embedding, freeze_embeddings"),
    (("{transfer: train}", "{transfer: train, transfer_size: 5}"), "transfer 'train' is exactly 1"),
    (("datasets: [smsa, nergrit]", "datasets: [smsa, facqa]"), "FacQA needs a question"),
    (("  students: [bilstm, bert-tiny]", "  students: [bilstm, lstm]"), "unknown student 'lstm'"),
    (("  students: [bilstm, bert-tiny]", "  seeds: [0, 0]"), "seeds: a list of distinct integers"),
])
def test_bad_ablation_sections_name_the_problem(study_file, edit, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        config.load_params(study_file(GOOD.replace(*edit)))


def test_plan_one_run_per_cell_and_the_last_of_a_grid_waits_for_the_rest(study_file, tiny_data_dir):
    study = config.load_params(study_file())
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    ablation = [r for r in runs if r.stage.startswith("ablation-")]
    # students x datasets x seeds x variants; embedding: bilstm has 3 variants, bert-tiny 2 (bert_variants)
    counts = {stage: sum(r.stage == stage for r in ablation) for stage in runner.NOTEBOOKS if "ablation" in stage}
    assert counts == {"ablation-loss": 2 * 2 * 3 * 10, "ablation-embedding": 2 * 3 * (3 + 2),
                      "ablation-augmentation": 2 * 2 * 3 * 3}
    grid = [r for r in ablation if r.stage == "ablation-embedding" and r.dataset == "nergrit"
            and r.parameters["student"] == "bert-tiny"]
    assert [r.variant for r in grid] == [f"bert-tiny-init-{n}-s{s}" for s in (0, 1, 2) for n in ("random", "mini")]
    assert grid[-1].needs == (grid[0].needs[0], *(r.out_dir for r in grid[:-1]))
    assert all(len(r.needs) == 1 for r in grid[:-1])
    vec = next(r for r in ablation if r.variant == "bilstm-vec-small-s1")
    assert vec.out_dir.parent.name == "smsa" and vec.out_dir.parent.parent.name == "ablation-embedding"
    assert vec.parameters["embedding"].endswith("small.vec") and vec.parameters["stage"] == "ablation-embedding"
    aug = next(r for r in ablation if r.variant == "bilstm-tang-x3-s2")
    assert (aug.parameters["loss"], aug.parameters["temperature"], aug.parameters["p_mask"]) == ("kl", 2.0, 0.2)
    assert next(r for r in ablation if r.variant == "bilstm-kl-T8-s0").parameters["epochs"] == 2
    runner.check_parameters(runs)  # every parameter exists in notebooks 03-05


def test_tagging_kd_is_masked_to_real_words_the_teacher_saw():
    # sentence 1: three words, the teacher did not see the third (NaN); sentence 2: one word, two padding positions
    features = [{"word_ids": [3, 4, 5], "word_index": [0, 1, 2], "labels": [0, 1, 0],
                 "teacher_logits": np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]], dtype=np.float32)},
                {"word_ids": [3], "word_index": [0], "labels": [1], "teacher_logits": np.array([[2.0, 2.0]])}]
    batch = Collator()(features)

    class Zero(torch.nn.Module):
        def forward(self, batch):
            return models.ModelOutput(torch.zeros(2, 3, 2))

    # MSE per unit: (1 + 0) / 2, (0 + 1) / 2, (4 + 4) / 2 -> (0.5 + 0.5 + 4) / 3
    mse = batch_loss(Zero(), batch, TrainConfig(loss="mse"))
    assert mse.item() == pytest.approx(5 / 3)
    # KL at T=2 against a uniform student: p = softmax([0.5, 0]) = (0.622459, 0.377541) for the two seen words of
    # sentence 1, uniform for sentence 2 (KL 0); T^2 * mean of (KL, KL, 0)
    p = math.exp(0.5) / (math.exp(0.5) + 1)
    kl_unit = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    kl = batch_loss(Zero(), batch, TrainConfig(loss="kl", temperature=2.0))
    assert kl.item() == pytest.approx(4 * 2 * kl_unit / 3, rel=1e-5)


@pytest.fixture(scope="module")
def nergrit_teacher(tmp_path_factory, _tiny_master):
    out = tmp_path_factory.mktemp("abl-teacher") / "nergrit"
    teachers.run_teacher(params.TeacherParams(dataset="nergrit", out_dir=str(out), data_dir=str(_tiny_master), epochs=1,
                                        lr=1e-3, max_length=64, threads=1,
                                        models_dir=str(out.parent / "models")))
    return out


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_a_transfer_set_is_labelled_once_through_the_cache(nergrit_teacher, tmp_path, _tiny_master, monkeypatch):
    base = dict(dataset="nergrit", student="bilstm", teacher_dir=str(nergrit_teacher), data_dir=str(_tiny_master),
                epochs=1, threads=1, student_options={"emb_dim": 8, "hidden": 8}, transfer="tang", transfer_size=2.0,
                stage="ablation-augmentation", variant="tang-x2")
    first = distill.run_distill(params.AblationParams(out_dir=str(tmp_path / "s0"), seed=0, **base)).metrics
    cached = sorted((nergrit_teacher / "logits").glob("transfer-tang-x2-*.npz"))
    assert len(cached) == 1
    assert first["transfer_examples"] == 80 and first["transfer"]["extra_examples"] == 40
    assert (first["stage"], first["variant"]) == ("ablation-augmentation", "tang-x2")
    saved = json.loads((tmp_path / "s0" / rundir.PREDICTIONS).read_text())
    assert saved["metric"] == "chunk_f1_macro" and isinstance(saved["gold"][0][0], str)

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran although the transfer set's logits are cached")

    monkeypatch.setattr(models, "load_model", no_teacher)
    distill.run_distill(params.AblationParams(out_dir=str(tmp_path / "s1"), seed=1, **base))  # another seed: cache hit
    monkeypatch.undo()
    distill.run_distill(params.AblationParams(out_dir=str(tmp_path / "a1"), seed=0, augment_seed=1, **base))
    assert len(list((nergrit_teacher / "logits").glob("transfer-tang-x2-*.npz"))) == 2  # new content, new entry


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_a_bert_student_from_a_miniature_with_its_own_tokenizer(nergrit_teacher, tmp_path, _tiny_master):
    tokens = (" ".join(r["tokens"]) for r in data.read_records(data.get_spec("nergrit"), "train", _tiny_master))
    mini = models.save_random_bert(tmp_path / "mini", data.train_wordpiece(tokens, vocab_size=300), layers=2,
                                   hidden=128, heads=2, intermediate=512)
    m = distill.run_distill(params.AblationParams(
        dataset="nergrit", student="bert-tiny", teacher_dir=str(nergrit_teacher), out_dir=str(tmp_path / "run"),
        data_dir=str(_tiny_master), epochs=1, threads=1, student_options={"init": str(mini)}, transfer="tang",
        transfer_size=1.5)).metrics
    assert 0.0 <= m["f1"] <= 1.0 and m["parameters"] < 1_000_000  # 300 pieces, not the teacher's vocabulary
    with pytest.raises(ConfigError, match="for word students"):
        distill.run_distill(params.AblationParams(
            dataset="nergrit", student="bert-tiny", teacher_dir=str(nergrit_teacher),
                                             out_dir=str(tmp_path / "bad"), data_dir=str(_tiny_master),
                                             embedding="word2vec"))


STUDY = """
study: abl
output_dir: {out}
datasets: [smsa]
threads: 1
teacher: {{base_model: tiny-random, epochs: 1, lr: 0.001, max_length: 64}}
distill: {{epochs: 1, student_options: {{bilstm: {{emb_dim: 8, hidden: 8}}}}}}
ablation:
  seeds: [0]
  students: [bilstm]
  loss: {{variants: [mse, ce]}}
  embedding: {{variants: [word2vec]}}
  augmentation: {{variants: [{{transfer: tang, transfer_size: 2}}]}}
"""


@pytest.mark.slow
def test_kdexam_run_executes_the_three_ablation_notebooks(tmp_path, _tiny_master, capsys):
    """One teacher and four ablation runs (papermill is slow to start: the statistics are tested in test_stats)."""
    params = tmp_path / "study.yaml"
    params.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")))
    assert cli.main(["run", str(params), "--data-dir", str(_tiny_master)]) == 0
    assert "done 5, skipped (already done) 0, failed 0" in capsys.readouterr().out
    study = tmp_path / "out" / "abl"
    for stage, notebook, last, n in [
            ("ablation-loss", "03_ablation_loss.ipynb", "bilstm-no-kd-s0", 2),
            ("ablation-embedding", "04_ablation_embedding.ipynb", "bilstm-word2vec-s0", 1),
            ("ablation-augmentation", "05_ablation_augmentation.ipynb", "bilstm-tang-x2-s0", 1)]:
        runs = stats.ablation_runs(study / stage / "smsa")
        assert len(runs) == n and runs["f1"].between(0, 1).all() and (runs["stage"] == stage).all()
        executed = json.loads((study / stage / "smsa" / last / notebook).read_text())
        outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"]
        html = " ".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
        assert ("runner-up" in html) == (n > 1)  # the grid's last run shows the winners of the whole grid
    emb = stats.ablation_runs(study / "ablation-embedding").iloc[0]
    assert emb["embedding"] == "word2vec" and 0 <= emb["oov_rate"] < 1
    kept = [p for p in (study / "cache" / "embeddings").iterdir() if not p.name.startswith(".")]  # not locks
    assert len(kept) == 1  # kept for the study's other runs
    aug = stats.ablation_runs(study / "ablation-augmentation").iloc[0]
    assert (aug["transfer"], aug["transfer_size"]) == ("tang", 2.0) and aug["transfer_examples"] > 40
