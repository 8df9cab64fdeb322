"""The exam end to end on tiny configurations: every task shape through the recipes, and the notebooks through
papermill via `kdexam run` (interrupt, resume, skip)."""
from __future__ import annotations

import json
import textwrap

import pytest

from kdlib import cli, data, distill, metrics, models, params, results, rundir, train
from kdlib.teachers import Teacher, run_teacher

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def teachers(workdir, _tiny_master):
    """A tiny random teacher per task shape, fine-tuned on tiny slices of the real data."""
    out = {}
    for key in ("smsa", "wrete", "casa", "nergrit", "facqa"):
        p = params.TeacherParams(dataset=key, out_dir=str(workdir / "teacher" / key), data_dir=str(_tiny_master),
                               models_dir=str(workdir / "models"), epochs=1, lr=1e-3, max_length=64)
        out[key] = run_teacher(p)
    return out


@pytest.mark.parametrize("key", ["smsa", "wrete", "casa", "nergrit", "facqa"])
def test_teacher_scores_and_caches_every_split(key, teachers):
    m = teachers[key].metrics
    assert 0.0 <= m["f1"] <= 1.0 and m["metric"] == data.get_spec(key).metric
    assert len(list((teachers[key].out_dir / "logits").glob("*.npz"))) == 3
    assert (teachers[key].out_dir / "model" / "config.json").exists()
    saved = rundir.read_json(teachers[key].out_dir / rundir.PREDICTIONS)  # test predictions, as students save them
    assert metrics.score(saved["metric"], saved["gold"], saved["pred"])["f1"] == pytest.approx(m["f1"])


def test_a_teacher_records_where_its_tagging_head_reads_words(teachers, workdir, _tiny_master):
    p = params.TeacherParams(dataset="nergrit", out_dir=str(workdir / "teacher" / "nergrit-content"),
                             data_dir=str(_tiny_master), models_dir=str(workdir / "models"), epochs=1, lr=1e-3,
                             max_length=64, word_position="first-content")
    run = run_teacher(p)
    teacher = Teacher.load(run.out_dir)
    assert teacher.word_position == "first-content"
    assert run.metrics["pooling"] == "words (tagging, first-content sub-word)"
    older = Teacher.load(teachers["nergrit"].out_dir)  # the default is not written: older teachers read the same
    assert older.word_position == "first" and "word_position" not in older.info


def test_a_teacher_from_before_saved_predictions_gets_them_from_its_cached_logits(teachers, tmp_path, monkeypatch):
    import shutil

    from kdlib import teachers as teachers_lib

    old = tmp_path / "old"
    shutil.copytree(teachers["nergrit"].out_dir, old)
    (old / rundir.PREDICTIONS).unlink()
    monkeypatch.setattr(teachers_lib.Teacher, "model", lambda *a, **k: pytest.fail("the teacher ran: logits cached"))
    assert teachers_lib.backfill_predictions(old)
    assert rundir.read_json(old / rundir.PREDICTIONS) == rundir.read_json(teachers["nergrit"].out_dir /
                                                                          rundir.PREDICTIONS)
    (old / rundir.PREDICTIONS).unlink()
    record = rundir.read_json(old / rundir.METRICS)
    rundir.write_json(old / rundir.METRICS, {**record, "f1": record["f1"] + 0.01})  # logits of another model
    assert not teachers_lib.backfill_predictions(old) and not (old / rundir.PREDICTIONS).exists()


@pytest.mark.parametrize("key, student", [("smsa", "cnn"), ("wrete", "bilstm"), ("casa", "bert-tiny"),
                                          ("nergrit", "bilstm"), ("facqa", "cnn"), ("nergrit", "bert-mini")])
def test_students_distil_from_cache_without_running_the_teacher(key, student, teachers, workdir, _tiny_master,
                                                                 monkeypatch):
    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher's forward pass ran although its logits are cached")

    monkeypatch.setattr(models, "load_model", no_teacher)
    monkeypatch.setattr(models.BertTaskModel, "forward", no_teacher)
    if student.startswith("bert"):  # BERT students are BertTaskModels too: only block loading the teacher
        monkeypatch.undo()
        monkeypatch.setattr(models, "load_model", no_teacher)
    p = params.DistillParams(dataset=key, student=student, teacher_dir=str(teachers[key].out_dir),
                           out_dir=str(workdir / "distill" / key / student), data_dir=str(_tiny_master), epochs=2,
                           student_options={"emb_dim": 16} if student in ("bilstm", "cnn") else {})
    m = distill.run_distill(p).metrics
    assert m["kd"] and m["variant"] == "mse" and 0.0 <= m["f1"] <= 1.0
    assert m["teacher_f1"] == teachers[key].metrics["f1"]
    assert len(m["history"]) >= 1


@pytest.mark.parametrize("key, student", [("nergrit", "bilstm"), ("casa", "cnn")])
def test_the_recipe_runs_in_the_main_stage(key, student, teachers, workdir, _tiny_master):
    """In-domain word2vec, a Tang et al. transfer set, word dropout, a case feature and an alpha-mixed KL at once."""
    p = params.DistillParams(dataset=key, student=student, teacher_dir=str(teachers[key].out_dir),
                           out_dir=str(workdir / "recipe" / key / student), data_dir=str(_tiny_master), epochs=1,
                           loss="kl", temperature=2.0, alpha=0.5, embedding="word2vec", transfer="tang",
                           transfer_size=2.0, word_dropout=0.25, embedding_dir=str(workdir / "embeddings"),
                           student_options={"emb_dim": 16, "case_dim": 4})
    m = distill.run_distill(p).metrics
    assert m["variant"] == "kl-T2-a0.5" and m["transfer"]["kind"] == "tang"
    assert m["transfer_examples"] > m["train_examples"]
    assert m["embedding"]["source"] == "word2vec" and 0.0 <= m["test_unk_rate"] < 1.0
    saved = json.loads((workdir / "recipe" / key / student / "model" / "config.json").read_text())
    assert saved["case_dim"] == 4 and saved["emb_dim"] == 16


def test_pruned_student_distils_from_the_teacher_it_was_cut_from(teachers, workdir, _tiny_master):
    p = params.DistillParams(dataset="smsa", student="pruned", teacher_dir=str(teachers["smsa"].out_dir),
                           out_dir=str(workdir / "distill" / "smsa" / "pruned"), data_dir=str(_tiny_master),
                           epochs=1, student_options={"layers": 1})
    m = distill.run_distill(p).metrics
    assert m["model"] == "pruned" and m["kd"]
    student = models.load_model(workdir / "distill" / "smsa" / "pruned" / "model")
    assert student.hf.config.num_hidden_layers == 1 and student.vocab_map is not None
    assert m["parameters"] < teachers["smsa"].metrics["parameters"]


def test_cache_miss_recomputes_the_teacher_logits(teachers, workdir, _tiny_master):
    teacher = teachers["smsa"].out_dir
    for f in (teacher / "logits").glob("train-*.npz"):
        f.unlink()
    p = params.DistillParams(dataset="smsa", student="bilstm", teacher_dir=str(teacher), epochs=1,
                           out_dir=str(workdir / "distill" / "miss"), data_dir=str(_tiny_master),
                           student_options={"emb_dim": 8})
    distill.run_distill(p)
    assert len(list((teacher / "logits").glob("train-*.npz"))) == 1


def test_a_capped_teacher_cache_serves_every_smaller_cap_without_the_teacher(teachers, workdir, _tiny_master,
                                                                           monkeypatch):
    teacher = run_teacher(params.TeacherParams(
        dataset="smsa", out_dir=str(workdir / "teacher" / "smsa-capped"), data_dir=str(_tiny_master),
        models_dir=str(workdir / "models"), epochs=1, lr=1e-3, max_length=64, logit_train_examples=25,
        max_valid_examples=15))
    assert teacher.metrics["logit_train_examples"] == 25
    assert teacher.metrics["valid_examples"] == 15 and teachers["smsa"].metrics["valid_examples"] == 40
    (train_file,) = (teacher.out_dir / "logits").glob("train-*.npz")
    full = Teacher.load(teachers["smsa"].out_dir).logits(data.get_spec("smsa"), "train",
                                      data.load_indonlu("smsa", str(_tiny_master))["train"])

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher's forward pass ran although its logits are cached")

    monkeypatch.setattr(models, "load_model", no_teacher)
    train = data.load_indonlu("smsa", str(_tiny_master))["train"]
    for cap in (10, 25):
        idx = data.subset_indices(len(train), cap)
        got = Teacher.load(teacher.out_dir).train_logits(data.get_spec("smsa"), train, idx)
        assert len(got) == cap and got[0].shape == full[0].shape
    p = params.DistillParams(dataset="smsa", student="cnn", teacher_dir=str(teacher.out_dir), epochs=1,
                           out_dir=str(workdir / "distill" / "capped"), data_dir=str(_tiny_master),
                           max_train_examples=20, max_valid_examples=12, student_options={"emb_dim": 8})
    m = distill.run_distill(p).metrics
    assert m["train_examples"] == 20 and m["valid_examples"] == 12
    monkeypatch.undo()  # a cap beyond the cached set: its own cache entry, filled once by the teacher
    Teacher.load(teacher.out_dir).train_logits(data.get_spec("smsa"), train, data.subset_indices(len(train), 30))
    assert len(list((teacher.out_dir / "logits").glob("train-*.npz"))) == 2 and train_file.exists()


def test_training_resumes_after_an_interrupt(teachers, workdir, _tiny_master, monkeypatch):

    p = params.DistillParams(dataset="nergrit", student="bilstm", teacher_dir=str(teachers["nergrit"].out_dir),
                           out_dir=str(workdir / "distill" / "resume"), data_dir=str(_tiny_master), epochs=3,
                           patience=5, student_options={"emb_dim": 8})
    real_evaluate, calls = train.evaluate, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second epoch's validation
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        distill.run_distill(p)
    assert not (workdir / "distill" / "resume" / "metrics.json").exists()
    monkeypatch.setattr(train, "evaluate", real_evaluate)
    m = distill.run_distill(p).metrics
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]  # epoch 1 kept, 2 and 3 trained after the restart


STUDY = """
study: e2e
output_dir: {out}
datasets: [smsa, nergrit]
teacher: {{base_model: tiny-random, epochs: 1, lr: 0.001, max_length: 64}}
distill:
  students: [bilstm]
  variants: [mse, ce]
  epochs: 2
  max_train_examples: 30
  student_options: {{bilstm: {{emb_dim: 16, hidden: 16}}}}
"""


def test_kdexam_run_executes_notebooks_then_skips_and_resumes(tmp_path, _tiny_master, capsys):
    params = tmp_path / "study.yaml"
    params.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")))
    argv = ["run", str(params), "--data-dir", str(_tiny_master)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "done 6, skipped (already done) 0, failed 0" in out
    study = tmp_path / "out" / "e2e"
    run = study / "distill" / "nergrit" / "bilstm-mse-s0"
    executed = json.loads((run / "02_distill.ipynb").read_text())
    assert any(c["metadata"].get("tags") == ["injected-parameters"] for c in executed["cells"])
    assert not [c for c in executed["cells"] if c["cell_type"] == "code" and
                any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    # it reads as a report: no progress bars, log lines or warnings in it (they are in run.log beside it)
    assert not [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "stream"]
    assert "epoch" in (run / "run.log").read_text()
    df = results.collect(study)
    assert len(df) == 6 and df["f1"].between(0, 1).all()
    assert set(df["variant"]) == {"tiny-random", "mse", "no-kd"}

    # a run killed half-way: no done.json -> redone; everything else skipped
    (run / rundir.DONE).unlink()
    assert cli.main(argv) == 0
    assert "done 1, skipped (already done) 5, failed 0" in capsys.readouterr().out
    assert cli.main(["report", "--study", str(study)]) == 0
    out = capsys.readouterr().out
    assert "bilstm KD" in out
    assert "CAPPED train sets (a fixed random subset of the split, for speed): nergrit bilstm 30 of 40; " in out
    assert "teacher" not in out.split("CAPPED")[1].splitlines()[0]  # the teachers read the whole (tiny) split
    assert "STOPPED BY THE EPOCH CAP" in out  # one-epoch runs: the cap ended them, and the report says so
    assert cli.main(["report", "--study", str(study), "--runs"]) == 0
    printed = capsys.readouterr().out
    rows = printed.split("every run:")[1].split("\n\n")[0].splitlines()[2:]
    assert len(rows) == 6 and rows[0].split()[:2] == ["nergrit", "teacher"]  # 2 teachers + 2 x 2 students
    kd = printed.split("KD against no KD per student")[1].splitlines()[2:]
    assert [r.split()[:2] for r in kd] == [["nergrit", "bilstm"], ["smsa", "bilstm"]]


def test_kdexam_run_reports_failures_and_exit_1(tmp_path, _tiny_master, capsys):
    params = tmp_path / "study.yaml"
    pool = tmp_path / "pool.txt"  # a file when the study loads, unreadable when the KD run reads it
    pool.write_bytes(b"teks satu\nteks \xff dua\n")
    params.write_text(textwrap.dedent(STUDY.format(out=tmp_path / "out")).replace("[smsa, nergrit]", "[keps]")
                      .replace("epochs: 2", f"epochs: 2\n  transfer: {pool}\n  transfer_size: 2"))
    assert cli.main(["run", str(params), "--data-dir", str(_tiny_master)]) == 1
    out = capsys.readouterr().out
    assert "failed 1" in out and "FAILED distill/keps/bilstm-mse-s0" in out and "02_distill.ipynb" in out
    assert "pool.txt:2: not valid UTF-8" in out  # the notebook's one-line error, in the summary
