"""The resource profile on tiny models: every number exists and is positive, ONNX matches PyTorch on every task
shape, memory comes from a fresh process, and a study's profile: section plans the profile and analysis runs."""
from __future__ import annotations

import textwrap
import time

import numpy as np
import pytest
import torch

from kdlib import config, data, distill, models, params, profile, profile_tables, rundir, runner, teachers
from kdlib.errors import ConfigError
from kdlib.train import Collator


@pytest.fixture(scope="module")
def study(tmp_path_factory, _tiny_master):
    """A tiny study on SmSA: a tiny random teacher, a BiLSTM and a CNN, one epoch each."""
    root = tmp_path_factory.mktemp("profile-study")
    teacher = root / "teacher" / "smsa" / "teacher"
    teachers.run_teacher(params.TeacherParams(dataset="smsa", out_dir=str(teacher), data_dir=str(_tiny_master),
                                        models_dir=str(root.parent / "models"), epochs=1, lr=1e-3, max_length=64))
    for student, loss, options in (("bilstm", "mse", {"emb_dim": 8, "hidden": 8}),
                                   ("cnn", "mse", {"emb_dim": 8, "filters": 4})):
        distill.run_distill(params.DistillParams(dataset="smsa", student=student, teacher_dir=str(teacher), loss=loss,
                                            out_dir=str(root / "distill" / "smsa" / f"{student}-{loss}-s0"),
                                            data_dir=str(_tiny_master), epochs=1, student_options=options))
    return root


@pytest.fixture(scope="module")
def profiled(study, _tiny_master):
    p = params.ProfileParams(study_dir=str(study), dataset="smsa", out_dir=str(study / "profile" / "smsa" / "profile"),
                              data_dir=str(_tiny_master), thread_counts=[1, 0], batch_sizes=[1, 4], warmup=1, runs=2,
                              fixed_length=12, memory=False, max_test_examples=16)
    return profile.run_profile(p).profile


def test_find_models_takes_the_teacher_and_one_distilled_run_per_student(tmp_path):
    def run(path, **metrics):
        (path / "model").mkdir(parents=True)
        rundir.write_json(path / rundir.METRICS, metrics)

    with pytest.raises(ConfigError, match="no finished teacher for nergrit"):
        profile.find_models(tmp_path, "nergrit")
    run(tmp_path / "teacher" / "nergrit" / "teacher", model="teacher")
    for name, model, kd, seed in (("cnn-mse-s0", "cnn", True, 0), ("bilstm-no-kd-s0", "bilstm", False, 0),
                                  ("bilstm-mse-s1", "bilstm", True, 1), ("bilstm-mse-s0", "bilstm", True, 0)):
        run(tmp_path / "distill" / "nergrit" / name, model=model, kd=kd, seed=seed)
    (tmp_path / "distill" / "nergrit" / "bert-tiny-mse-s0").mkdir()  # unfinished: no metrics.json
    found = profile.find_models(tmp_path, "nergrit")
    assert [(m.name, m.run_dir.name) for m in found] == [
        ("teacher", "teacher"), ("bilstm", "bilstm-mse-s0"), ("cnn", "cnn-mse-s0")]  # students in STUDENTS order


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_profile_numbers_exist_are_positive_and_onnx_matches(profiled, study):
    assert (study / "profile" / "smsa" / "profile" / profile.PROFILE).exists()
    threads = profile.resolve_threads([1, 0])
    assert profiled["threads"] == threads
    rows = profiled["latency"]
    # 3 models x 3 engines x threads x 2 batch sizes x 2 input kinds
    assert len(rows) == 3 * 3 * len(threads) * 2 * 2
    for r in rows:
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] * 0.999 and r["examples_per_s"] > 0, r
    assert {r["mean_width"] for r in rows if r["inputs"] == "fixed"} == {12.0}
    for m in profiled["models"]:
        assert m["parameters"] > 0 and m["safetensors_bytes"] > 0 and m["onnx_bytes"] > 0 and m["int8_bytes"] > 0
        assert m["onnx_match"] and m["onnx_max_abs_diff"] <= 1e-3, m
        assert m["f1_onnx"] == pytest.approx(m["f1_torch"]) and 0 <= m["f1_int8"] <= 1
        assert m["eval_examples"] == 16
    assert [m["kind"] for m in profiled["models"]] == ["bert", "word", "word"]
    teacher = profiled["models"][0]
    assert teacher["int8_bytes"] < teacher["onnx_bytes"]
    machine = profiled["machine"]
    assert machine["cpu"] and machine["usable_cores"] >= 1 and machine["onnxruntime"] and machine["torch"]
    assert profiled["settings"]["runs"] == 2


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_display_tables(profiled):
    sizes = profile_tables.size_table(profiled)
    assert list(sizes.index) == ["teacher", "bilstm", "cnn"] and (sizes["parameters (M)"] > 0).all()
    speed = profile_tables.speedup_table(profiled)
    assert speed.loc["teacher", ("torch", 1, 1)] == 1.0
    assert profile_tables.latency_table(profiled).notna().all().all()


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_memory_is_measured_in_a_fresh_process(profiled, study):
    bilstm = study / "distill" / "smsa" / "bilstm-mse-s0"
    onnx = study / "profile" / "smsa" / "profile" / "onnx" / "bilstm.onnx"
    batch = {"word_ids": np.array([[5, 6, 7], [8, 9, 0]]), "lengths": np.array([3, 2])}
    batch_file = study / "batch.npz"
    np.savez(batch_file, **batch)
    m = profile.measure_memory(bilstm / "model", "torch", batch_file)
    assert m["engine"] == "torch" and m["baseline_mb"] > 0 and m["peak_mb"] >= m["baseline_mb"]
    assert m["model_mb"] > 0 and m["resident_mb"] >= m["model_mb"] and m["batch_size"] == 2
    # the onnxruntime path of the same child, in this process (a fresh one per engine is the slow part)
    m = profile._memory_child(str(bilstm / "model"), "onnx", str(batch_file), str(onnx), 1)
    assert m["engine"] == "onnx" and m["peak_mb"] > 0


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
@pytest.mark.parametrize("key", ["smsa", "wrete", "casa", "nergrit", "facqa"])
@pytest.mark.parametrize("student", ["bilstm", "cnn"])
def test_onnx_matches_pytorch_on_every_task_shape_and_width(key, student, _tiny_master, tmp_path):
    """Exported once, then run on batches of other widths, including inputs shorter than the CNN's widest kernel."""
    spec = data.get_spec(key)
    ds = data.load_split(key, "test", _tiny_master)
    vocab = data.Vocab.build(data.example_words(ex, spec) for ex in ds)
    torch.manual_seed(0)
    options = {"emb_dim": 8, "hidden": 8} if student == "bilstm" else {"emb_dim": 8, "filters": 4}
    options["case_dim"] = 4 if key in ("casa", "nergrit") else 0  # the case feature is an ONNX input too
    model = models.build_student(student, spec, vocab=vocab, **options).eval()
    feats = ds.map(data.encode_for_words, batched=True, remove_columns=ds.column_names,
                   fn_kwargs={"vocab": vocab, "spec": spec}).to_list()
    keys = model.input_keys + (("word_index",) if spec.is_tagging else ())
    assert ("case_ids" in keys) == bool(options["case_dim"])
    collate = lambda fs: {k: v for k, v in Collator()(fs).items() if k in keys}  # noqa: E731
    feats.sort(key=lambda f: len(f["word_ids"]))
    path = profile.export_onnx(model, collate([feats[-1], feats[len(feats) // 2]]), keys, tmp_path / "m.onnx")
    session = profile.OrtModel(profile.onnx_session(path, 1), keys)
    short = {**feats[0], "word_ids": feats[0]["word_ids"][:2], "case_ids": feats[0]["case_ids"][:2]}
    if spec.is_tagging:
        short["word_index"] = [i if i < 2 else -1 for i in feats[0]["word_index"]]
    batches = [collate([short]), collate(feats[:7]), collate(feats[-3:]), collate([feats[5]])]
    with torch.inference_mode():
        diff = profile.max_abs_diff(lambda b: model(b).logits.numpy(), session.run, batches)
    assert diff < 1e-4


def test_int8_quantizes_a_cnn_that_onnxruntime_can_run(tmp_path):
    vocab = data.Vocab(["<pad>", "<unk>", "<sep>", *[f"w{i}" for i in range(50)]])
    model = models.build_student("cnn", data.get_spec("smsa"), vocab=vocab, emb_dim=8, filters=4).eval()
    batch = {"word_ids": torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 0, 0, 0, 0]]), "lengths": torch.tensor([6, 2])}
    path = profile.export_onnx(model, batch, ("word_ids", "lengths"), tmp_path / "cnn.onnx")
    q = profile.quantize_int8(path, tmp_path / "cnn.int8.onnx")
    out = profile.OrtModel(profile.onnx_session(q, 1), ("word_ids", "lengths")).run(batch)
    assert out.shape == (2, 3) and np.isfinite(out).all()


def test_time_batches_reports_median_p90_and_throughput():
    delays = iter([0.05] + [0.001, 0.002, 0.003, 0.004, 0.02])  # the first (warm-up) one is not timed
    timing = profile.time_batches(lambda b: time.sleep(next(delays)), [{"x": torch.zeros(4, 2)}], warmup=1, runs=5)
    assert timing.runs == 5
    assert 2.5 <= timing.median_ms < 10 and timing.p90_ms >= 10 and timing.median_ms < timing.mean_ms
    assert 4 * 5 / 0.05 < timing.examples_per_s < 4 * 5 / 0.029


def test_models_are_timed_interleaved_round_by_round():
    calls = []
    fns = {n: (lambda b, n=n: calls.append((n, int(b["x"][0])))) for n in ("a", "b", "c")}
    batches = {n: [{"x": torch.tensor([i])} for i in range(10)] for n in fns}
    timings = profile.time_interleaved(fns, batches, warmup=1, runs=3)
    assert calls[:3] == [("a", 0), ("b", 0), ("c", 0)]  # warm-up
    assert calls[3:] == [("a", 1), ("b", 1), ("c", 1), ("b", 2), ("c", 2), ("a", 2), ("c", 3), ("a", 3), ("b", 3)]
    assert {n: t.runs for n, t in timings.items()} == {"a": 3, "b": 3, "c": 3}


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_resolve_threads_and_fixed_batches(study, _tiny_master):
    cores = profile.resolve_threads([0])[0]
    assert cores >= 1 and profile.resolve_threads([1, 0, 1]) == ([1] if cores == 1 else [1, cores])
    pm = profile.find_models(study, "smsa")[1]
    inputs = profile.model_inputs(pm, data.get_spec("smsa"), data.load_split("smsa", "test", _tiny_master),
                                  study / "teacher" / "smsa" / "teacher")
    batches = profile.fixed_batches(inputs, list(range(10)), batch_size=3, length=50, count=2)
    assert [tuple(b["word_ids"].shape) for b in batches] == [(3, 50), (3, 50)]
    assert batches[0]["lengths"].tolist() == [50, 50, 50] and set(batches[0]) == {"word_ids", "lengths"}
    real = profile.real_batches(inputs, [3, 1, 2], batch_size=2, count=2)
    assert real[1]["lengths"].tolist() == [len(inputs.features[2]["word_ids"]), len(inputs.features[3]["word_ids"])]


@pytest.mark.parametrize("field, value, message", [
    ("batch_sizes", [0], "batch_sizes [0]"), ("thread_counts", [], "thread_counts []"),
    ("input_kinds", ["long"], "input_kinds ['long']"), ("runs", 0, "runs 0")])
def test_bad_profile_settings_are_refused(field, value, message):
    p = params.ProfileParams(study_dir="s", dataset="smsa", out_dir="o", **{field: value})
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        params.check_profile_params(p)


STUDY = """
study: t
output_dir: {out}
datasets: [smsa, nergrit]
teacher: {{base_model: tiny-random, epochs: 1}}
distill:
  students: [bilstm, cnn]
  variants: [mse, ce]
"""


def test_profile_section_plans_a_profile_per_dataset_then_the_analysis(tmp_path, tiny_data_dir):
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")))
    assert not [r for r in runner.plan(config.load_params(path), data_dir=str(tiny_data_dir))
                if r.stage in ("profile", "analysis")]  # no profile: section, no profile runs
    path.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")) + "profile: {runs: 3, thread_counts: [1]}\n")
    runs = runner.plan(config.load_params(path), data_dir=str(tiny_data_dir))
    assert [r.name for r in runs[-3:]] == ["profile/smsa/profile", "profile/nergrit/profile", "analysis/all/analysis"]
    smsa = runs[-3]
    assert smsa.parameters["runs"] == 3 and smsa.parameters["thread_counts"] == [1]
    assert smsa.parameters["batch_sizes"] == [1, 32] and smsa.parameters["prepare_if_missing"] is False
    assert set(smsa.needs) == {r.out_dir for r in runs if r.dataset == "smsa" and r.stage in ("teacher", "distill")}
    assert len(smsa.needs) == 1 + 2 * 2
    assert runs[-1].needs == (runs[-3].out_dir, runs[-2].out_dir)
    assert runs[-1].parameters["executed_notebook"] == str(runs[-1].out_dir / "07_analysis.ipynb")
    runner.check_parameters(runs)
    path.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")) + "profile:\n")
    assert runner.plan(config.load_params(path), data_dir=str(tiny_data_dir))[-3].parameters["runs"] == 30


@pytest.mark.parametrize("section, message", [
    ("profile: {run: 3}", "profile: unknown key 'run'"),
    ("profile: {runs: many}", "profile.runs: 'many' is a str"),
    ("profile: {batch_sizes: [1, 0]}", "profile.batch_sizes: [1, 0] is out of range; allowed: a non-empty list "
                                       "of distinct values, each >= 1."),
    ("profile: {batch_sizes: [1, 1]}", "profile.batch_sizes: 1 is listed twice in [1, 1]"),
    ("profile: [1, 32]", "profile: expected a mapping"),
])
def test_bad_profile_sections_name_the_problem(tmp_path, section, message):
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")) + section + "\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        config.load_params(path)


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_a_bert_base_shaped_reference_is_timed_beside_the_models(study, _tiny_master, monkeypatch):
    """The reference's cost is a random model of the reference's shape (here shrunk, so the test stays fast)."""
    monkeypatch.setitem(profile.REFERENCES, "bert-base", dict(vocab_size=40, hidden_size=16, num_hidden_layers=3,
                                                              num_attention_heads=2, intermediate_size=32,
                                                              max_position_embeddings=128))
    out = study / "profile" / "smsa" / "with-reference"
    p = params.ProfileParams(study_dir=str(study), dataset="smsa", out_dir=str(out), data_dir=str(_tiny_master),
                              thread_counts=[1], batch_sizes=[1], input_kinds=["real"], warmup=1, runs=3,
                              memory=False, onnx=False, int8=False, max_test_examples=8, reference="bert-base")
    prof = profile.run_profile(p).profile
    name = "bert-base (timing only)"
    ref = next(m for m in prof["models"] if m["model"] == name)
    reloaded = models.load_model(out / "onnx" / "reference" / "model")
    assert reloaded.hf.config.num_hidden_layers == 3 and reloaded.word_embeddings().num_embeddings == 40
    assert ref["parameters"] == models.count_parameters(reloaded)
    speed = profile_tables.reference_speedups(prof)
    assert speed.loc[name].iloc[0] == pytest.approx(1.0) and set(speed.index) >= {"teacher", "bilstm", name}
    with pytest.raises(ConfigError, match="reference 'gpt'"):
        profile.reference_model("gpt", data.get_spec("smsa"), study / "teacher" / "smsa" / "teacher", out / "x")
