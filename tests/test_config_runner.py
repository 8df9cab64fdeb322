"""Study files are validated whole before anything runs; plans are ordered and complete."""
from __future__ import annotations

import re
import textwrap
import time

import pytest

from kdlib import cli, config, runner
from kdlib.errors import ConfigError

GOOD = """
study: t
datasets: [smsa, NERGrit]
seeds: [0, 1]
teacher: {base_model: tiny-random, epochs: 1, max_train_examples: 20}
distill:
  students: [bilstm, bert-tiny]
  variants: [mse, ce, {loss: kl, temperature: 2, alpha: 0.5}]
  epochs: 2
  student_options: {bilstm: {emb_dim: 16}}
per_dataset:
  nergrit: {teacher: {epochs: 3}, distill: {epochs: 5}}
per_student:
  bert-tiny: {epochs: 7}
"""


def write(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_file_loads(tmp_path):
    study = config.load_params(write(tmp_path, GOOD))
    assert study.datasets == ("smsa", "nergrit")
    assert study.variants[2] == config.Variant("kl", 0.5, 2)
    assert study.teacher == {"base_model": "tiny-random", "epochs": 1, "max_train_examples": 20}
    assert study.distill == {"epochs": 2}
    assert study.teacher_for("nergrit")["epochs"] == 3 and study.teacher_for("smsa")["epochs"] == 1
    assert study.distill_for("nergrit") == {"epochs": 5}


def test_recipe_keys_are_distill_settings(tmp_path, tiny_data_dir):
    text = GOOD.replace("  epochs: 2\n", "  epochs: 2\n  transfer: tang\n  transfer_size: 5\n  embedding: word2vec\n"
                        "  word_dropout: 0.25\n")
    text = text.replace("distill: {epochs: 5}", "distill: {epochs: 5, transfer_size: 10}")
    text += f"output_dir: {tmp_path / 'out'}\n"
    study = config.load_params(write(tmp_path, text))
    assert study.distill_for("smsa") == {"epochs": 2, "transfer": "tang", "transfer_size": 5, "embedding": "word2vec",
                                         "word_dropout": 0.25}
    assert study.distill_for("nergrit")["transfer_size"] == 10
    runs = {r.name: r.parameters for r in runner.plan(study, data_dir=str(tiny_data_dir)) if r.stage == "distill"}
    kd, no_kd = runs["distill/nergrit/bilstm-mse-s0"], runs["distill/nergrit/bilstm-no-kd-s0"]
    assert (kd["transfer"], kd["transfer_size"], kd["embedding"], kd["word_dropout"]) == ("tang", 10, "word2vec", 0.25)
    # the baseline: same embeddings and word dropout, the labelled train split only
    assert (no_kd["transfer"], no_kd["transfer_size"], no_kd["embedding"], no_kd["word_dropout"]) == (
        "train", 1.0, "word2vec", 0.25)
    assert kd["embedding_dir"] == no_kd["embedding_dir"] == str(tmp_path / "out" / "t" / "cache" / "embeddings")
    runner.check_parameters(list(runner.plan(study, data_dir=str(tiny_data_dir))))  # every key is a notebook parameter


@pytest.mark.parametrize("edit, message", [
    (("  epochs: 2\n", "  epochs: 2\n  transfer: tnag\n"), r"distill.transfer: 'tnag' is not a file"),
    (("  epochs: 2\n", "  epochs: 2\n  tranfser: tang\n"), r"distill: unknown key 'tranfser'"),
    (("  epochs: 2\n", "  epochs: 2\n  embedding: glove\n"), r"distill.embedding: 'glove' is not a file"),
    (("  epochs: 2\n", "  epochs: 2\n  transfer_size: 0.5\n"),
     r"distill.transfer_size: 0.5 is out of range; allowed: >= 1"),
    (("  epochs: 2\n", "  epochs: 2\n  word_dropout: -1\n"),
     r"distill.word_dropout: -1 is out of range; allowed: >= 0"),
    (("distill: {epochs: 5}", "distill: {epochs: 5, transfer: tang}"), None),
])
def test_recipe_keys_are_checked(edit, message, tmp_path, tiny_data_dir):
    path = write(tmp_path, GOOD.replace(*edit))
    if message is None:
        assert config.load_params(path).distill_for("nergrit")["transfer"] == "tang"
        return
    with pytest.raises(ConfigError, match=message):
        config.load_params(path)


def test_word_settings_of_the_shared_recipe_reach_word_students_only_and_seeds_per_student(tmp_path, tiny_data_dir):
    text = GOOD.replace("  epochs: 2\n", "  epochs: 2\n  embedding: word2vec\n  word_dropout: 0.25\n").replace(
        "bert-tiny: {epochs: 7}", "bert-tiny: {epochs: 7, seeds: [0], variants: [mse]}")
    study = config.load_params(write(tmp_path, text))
    assert study.distill_for("smsa", "bilstm")["embedding"] == "word2vec"
    assert "embedding" not in study.distill_for("smsa", "bert-tiny")  # a BERT student reads sub-words
    runs = [r for r in runner.plan(study, data_dir=str(tiny_data_dir)) if r.stage == "distill"]
    assert {r.parameters["seed"] for r in runs if r.parameters["student"] == "bert-tiny"} == {0}
    assert {r.parameters["seed"] for r in runs if r.parameters["student"] == "bilstm"} == {0, 1}
    assert {r.parameters["loss"] for r in runs if r.parameters["student"] == "bert-tiny"} == {"mse"}  # KD only
    assert {r.parameters["loss"] for r in runs if r.parameters["student"] == "bilstm"} == {"mse", "ce", "kl"}
    with pytest.raises(ConfigError, match=r"per_student.bert-tiny.seeds: a non-empty list of distinct integers"):
        config.load_params(write(tmp_path, text.replace("seeds: [0],", "seeds: [0, 0],")))
    with pytest.raises(ConfigError, match=r"unknown loss 'msee'"):
        config.load_params(write(tmp_path, text.replace("variants: [mse]}", "variants: [msee]}")))
    with pytest.raises(ConfigError, match=r"per_dataset.nergrit.per_student.bilstm: unknown key 'seeds'"):
        config.load_params(write(tmp_path, text.replace("distill: {epochs: 5}",
                                                        "distill: {epochs: 5}, per_student: {bilstm: {seeds: [0]}}")))


def test_transfer_size_needs_a_transfer_set(tmp_path, tiny_data_dir):
    study = config.load_params(write(tmp_path, GOOD.replace("  epochs: 2\n", "  epochs: 2\n  transfer_size: 5\n")))
    with pytest.raises(ConfigError, match="transfer_size 5 with transfer: train"):
        runner.plan(study, data_dir=str(tiny_data_dir))


@pytest.mark.parametrize("edit, message", [
    (("seeds: [0, 1]", "seeds: [0, 1]\nlearning_rate: 3"), "unknown key(s) learning_rate"),
    (("[smsa, NERGrit]", "[smsa, nergirt]"), "unknown dataset 'nergirt'. Did you mean 'nergrit'"),
    (("[bilstm, bert-tiny]", "[bilstm, bert-tiny, lstm]"), "unknown student 'lstm'"),
    (("epochs: 1,", "epoch: 1,"), "teacher: unknown key 'epoch'"),
    (("epochs: 2\n", "epochs: two\n"), "distill.epochs: 'two' is a str, expected int"),
    (("[mse, ce,", "[mse, cross,"), "unknown loss 'cross'"),
    (("alpha: 0.5", "alpha: 1.5"), "alpha must be in [0, 1]"),
    (("seeds: [0, 1]", "seeds: [zero]"), "seeds must be a non-empty list of integers"),
    (("nergrit: {teacher", "casa: {teacher"), "per_dataset.casa: casa is not in this study's datasets"),
    (("bert-tiny: {epochs: 7}", "bert-tiny: {epoch: 7}"), "per_student.bert-tiny: unknown key 'epoch'"),
    (("bert-tiny: {epochs: 7}", "bert-huge: {epochs: 7}"), "unknown student 'bert-huge'"),
    (("{teacher: {epochs: 3}", "{teacher: {epochs: 3, lr: fast}"), "per_dataset.nergrit.teacher.lr: 'fast' is a str"),
    (("study: t", "study: ../escape"), "study must be a plain folder name"),
    (("datasets: [smsa, NERGrit]", "datasets: [smsa, NERGrit"), "not valid YAML"),
])
def test_bad_files_name_the_problem(tmp_path, edit, message):
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        config.load_params(write(tmp_path, GOOD.replace(*edit)))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load_params(tmp_path / "nope.yaml")


def test_plan_order_paths_and_parameters(tmp_path, tiny_data_dir):
    study = config.load_params(write(tmp_path, GOOD + f"output_dir: {tmp_path / 'out'}\n"))
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    # 2 teachers + 2 datasets x 2 students x 2 seeds x 3 variants
    assert len(runs) == 2 + 2 * 2 * 2 * 3
    assert runs[0].stage == "teacher" and runs[0].out_dir == tmp_path / "out" / "t" / "teacher" / "smsa" / "teacher"
    names = [r.name for r in runs]
    assert names.index("distill/smsa/bilstm-no-kd-s0") < names.index("distill/smsa/bilstm-mse-s0")
    kl = next(r for r in runs if r.variant == "bert-tiny-kl-T2-a0.5-s1")
    assert kl.parameters["loss"] == "kl" and kl.parameters["temperature"] == 2.0 and kl.parameters["seed"] == 1
    assert kl.parameters["baseline_dir"].endswith("bert-tiny-no-kd-s1")
    assert kl.needs == (runs[0].out_dir,)
    assert [r.stage for r in runs[:2]] == ["teacher", "teacher"]
    epochs = {(r.dataset, r.parameters["student"]): r.parameters["epochs"] for r in runs if r.stage == "distill"}
    assert epochs == {("smsa", "bilstm"): 2, ("nergrit", "bilstm"): 5, ("smsa", "bert-tiny"): 7,
                      ("nergrit", "bert-tiny"): 7}  # per-student beats per-dataset beats the section
    assert next(r for r in runs if r.name == "teacher/nergrit/teacher").parameters["epochs"] == 3
    bilstm = next(r for r in runs if r.variant == "bilstm-mse-s0")
    assert bilstm.parameters["student_options"] == {"emb_dim": 16}
    runner.check_parameters(runs)  # every parameter exists in its notebook
    # unset keys come from the recipe's defaults, never from the notebook's tiny demo defaults
    assert runs[0].parameters["max_length"] == 128 and bilstm.parameters["max_train_examples"] is None
    assert bilstm.parameters["lr"] is None and bilstm.parameters["batch_size"] == 32


def test_teachers_cache_train_logits_on_the_largest_cap_their_kd_students_read(tmp_path, tiny_data_dir):
    def teacher_sets(*edits: tuple[str, str]) -> dict:
        text = GOOD.replace("  epochs: 2\n", "  epochs: 2\n  max_train_examples: 30\n")
        for old, new in edits:
            text = text.replace(old, new)
        study = config.load_params(write(tmp_path, text + f"output_dir: {tmp_path / 'out'}\n"))
        runs = runner.plan(study, data_dir=str(tiny_data_dir))
        runner.check_parameters(runs)
        return {r.dataset: r.parameters.get("logit_train_examples") for r in runs if r.stage == "teacher"}

    assert teacher_sets() == {"smsa": 30, "nergrit": 30}
    assert teacher_sets(("distill: {epochs: 5}", "distill: {epochs: 5, max_train_examples: 40}")) == {
        "smsa": 30, "nergrit": 40}
    uncapped = ("bert-tiny: {epochs: 7}", "bert-tiny: {epochs: 7, max_train_examples: null}")
    assert teacher_sets(uncapped) == {"smsa": None, "nergrit": None}  # a KD student reads the whole split
    own = ("teacher: {epochs: 3}", "teacher: {epochs: 3, logit_train_examples: 5}")
    assert teacher_sets(own) == {"smsa": 30, "nergrit": 5}


def test_per_dataset_per_student_overrides_win(tmp_path, tiny_data_dir):
    text = GOOD.replace("nergrit: {teacher: {epochs: 3}, distill: {epochs: 5}}",
                        "nergrit: {teacher: {epochs: 3}, distill: {epochs: 5}, per_student: {bert-tiny: {epochs: 1}}}")
    study = config.load_params(write(tmp_path, text))
    assert study.distill_for("nergrit", "bert-tiny")["epochs"] == 1  # beats per_student's 7
    assert study.distill_for("smsa", "bert-tiny")["epochs"] == 7
    assert study.distill_for("nergrit", "bilstm")["epochs"] == 5
    bad = text.replace("per_student: {bert-tiny:", "per_student: {bert-tiyn:")
    with pytest.raises(ConfigError, match="unknown student 'bert-tiyn'"):
        config.load_params(write(tmp_path, bad))
    bad = text.replace("{bert-tiny: {epochs: 1}}", "{bert-tiny: {epoch: 1}}")
    with pytest.raises(ConfigError, match="per_dataset.nergrit.per_student.bert-tiny"):
        config.load_params(write(tmp_path, bad))


def test_parameter_not_in_notebook_is_refused(tmp_path, tiny_data_dir):
    study = config.load_params(write(tmp_path, GOOD + f"output_dir: {tmp_path / 'out'}\n"))
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    bad = runner.Run(**{**runs[0].__dict__, "parameters": {**runs[0].parameters, "learning_rate": 1}})
    with pytest.raises(ConfigError,
                       match="learning_rate are not parameters of 01_teacher.ipynb .TeacherParams has: base"):
        runner.check_parameters([bad])


def test_shipped_params_files_validate():
    for path in sorted(runner.REPO_ROOT.glob("params/*.yaml")):
        study = config.load_params(path)
        assert study.datasets, path


def _finish(run: runner.Run, parameters: dict | None = None) -> None:
    """Make a run look finished, as execute_notebook leaves it, with these recorded parameters."""
    from kdlib import rundir

    rundir.write_json(run.out_dir / "params.json", {"run": run.name, "parameters": parameters or run.parameters})
    rundir.mark_done(run.out_dir, run=run.name)


def test_changed_settings_make_finished_runs_and_their_readers_stale(tmp_path, tiny_data_dir):
    study = config.load_params(write(tmp_path, GOOD + f"output_dir: {tmp_path / 'out'}\n"))
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    for run in runs:
        _finish(run, {**run.parameters, "threads": 7, "data_dir": "/elsewhere"})  # how it ran, not what it computed
    assert runner.stale_runs(runs) == {}

    edited = write(tmp_path, GOOD.replace("nergrit: {teacher: {epochs: 3}", "nergrit: {teacher: {epochs: 4}")
                   + f"output_dir: {tmp_path / 'out'}\n")
    runs = runner.plan(config.load_params(edited), data_dir=str(tiny_data_dir))
    stale = runner.stale_runs(runs)
    names = {r.out_dir: r.name for r in runs}
    assert stale[runs[1].out_dir] == ["epochs: 3 -> 4"]
    students = [r for r in runs if r.dataset == "nergrit" and r.stage == "distill"]
    assert {names[p] for p in stale} == {"teacher/nergrit/teacher", *(r.name for r in students)}
    assert stale[students[0].out_dir] == ["it read teacher/nergrit/teacher, which changed"]

    lines = []
    with pytest.raises(ConfigError, match=r"13 finished run\(s\) were made with other settings.*epochs: 3 -> 4.*"
                                          r"--rerun-changed"):
        runner.run_study(str(edited), data_dir=str(tiny_data_dir), echo=lines.append)
    runner.run_study(str(edited), data_dir=str(tiny_data_dir), dry_run=True, echo=lines.append)
    assert any("teacher/nergrit/teacher (done, CHANGED: epochs: 3 -> 4)" in line for line in lines)


def test_a_kdexam_upgrade_that_adds_a_parameter_does_not_make_runs_stale(tmp_path, tiny_data_dir):
    study = config.load_params(write(tmp_path, GOOD + f"output_dir: {tmp_path / 'out'}\n"))
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    old = {k: v for k, v in runs[0].parameters.items() if k != "patience"}  # recorded before `patience` existed
    _finish(runs[0], old)
    assert runner.stale_runs(runs) == {}
    # ... but a file that now sets the new key to a value other than its default did change the run
    capped = runner.Run(**{**runs[0].__dict__, "parameters": {**runs[0].parameters, "patience": 5}})
    assert runner.changed_settings(capped) == ["patience: (default) 2 -> 5"]


def test_moved_outputs_are_not_stale_but_unreadable_records_are(tmp_path, tiny_data_dir):
    study = config.load_params(write(tmp_path, GOOD + f"output_dir: {tmp_path / 'out'}\n"))
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    student = next(r for r in runs if r.stage == "distill")
    moved = {k: v.replace(str(tmp_path / "out"), "/old/place/out") if isinstance(v, str) else v
             for k, v in student.parameters.items()}
    assert moved["teacher_dir"].startswith("/old/place/out/t/teacher/")
    _finish(student, moved)
    assert runner.changed_settings(student) == []
    (student.out_dir / "params.json").write_text("{not json")
    assert runner.stale_runs(runs) == {student.out_dir: [
        f"its params.json is unreadable (truncated or corrupt), so its settings are unknown; delete {student.out_dir} "
        "to redo it"]}
    (student.out_dir / "params.json").unlink()  # made by hand (a notebook run in JupyterLab): taken as it is
    assert runner.stale_runs(runs) == {}


TEACHERS_FROM = """
study: borrower
datasets: [smsa]
teachers_from: lender
distill: {students: [bilstm], variants: [mse]}
"""


def test_teachers_from_reads_another_studys_finished_teachers(tmp_path, tiny_data_dir):
    out = tmp_path / "out"
    lender = config.load_params(write(tmp_path, GOOD.replace("study: t", "study: lender") + f"output_dir: {out}\n"))
    lender_runs = runner.plan(lender, data_dir=str(tiny_data_dir))
    params = write(tmp_path, TEACHERS_FROM + f"output_dir: {out}\n")
    lines = []
    with pytest.raises(ConfigError, match="teachers_from 'lender': no study with teachers at .*lender"):
        runner.run_study(str(params), data_dir=str(tiny_data_dir), dry_run=True, echo=lines.append)
    (out / "lender" / "teacher").mkdir(parents=True)  # the lender exists, its teacher is not finished
    with pytest.raises(ConfigError, match="teachers_from 'lender': no finished teacher for smsa in .*lender/teacher"):
        runner.run_study(str(params), data_dir=str(tiny_data_dir), dry_run=True, echo=lines.append)
    assert "teachers from" in lines[1] and "SOME MISSING" in lines[1]  # the runs are listed first
    with pytest.raises(ConfigError, match="no finished teacher for smsa"):  # a real run stops before anything runs
        runner.run_study(str(params), data_dir=str(tiny_data_dir), echo=lines.append)

    _finish(lender_runs[0])
    runs = runner.plan(config.load_params(params), data_dir=str(tiny_data_dir))
    assert [r.stage for r in runs] == ["distill"]  # nothing to train: the teacher is lender's
    assert runs[0].parameters["teacher_dir"] == str(out / "lender" / "teacher" / "smsa" / "teacher")
    assert runs[0].needs == (out / "lender" / "teacher" / "smsa" / "teacher",)
    assert runs[0].out_dir == out / "borrower" / "distill" / "smsa" / "bilstm-mse-s0"
    assert runs[0].parameters["cache_dir"] == str(out / "borrower" / "cache" / "teacher" / "smsa")  # its own folder
    runner.check_parameters(runs)
    assert runner.missing_teachers(config.load_params(params), runner.REPO_ROOT) == ""

    by_path = write(tmp_path, TEACHERS_FROM.replace("lender", "./out/lender") + f"output_dir: {out}\n")
    assert runner.plan(config.load_params(by_path), data_dir=str(tiny_data_dir))[0].needs == runs[0].needs
    _finish(runs[0])
    assert runner.stale_runs(runs) == {}
    time.sleep(1.1)  # done.json records whole seconds
    _finish(lender_runs[0])  # the lender's teacher is redone after the borrower's student read it
    assert runner.stale_runs(runs) == {runs[0].out_dir: ["it read " + str(runs[0].needs[0]) + ", which was redone "
                                                         "after it"]}


@pytest.mark.parametrize("extra, message", [
    ("teacher: {epochs: 2}\n", "reads that study's teachers as they were trained; remove its teacher"),
    ("per_dataset: {smsa: {teacher: {lr: 0.1}}}\n", "remove its per_dataset.smsa.teacher"),
    ("profile: {}\n", "a study with teachers_from has no teachers of its own"),
])
def test_teachers_from_refuses_teacher_settings_of_its_own(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        config.load_params(write(tmp_path, TEACHERS_FROM + extra))


def test_teachers_from_refuses_the_study_itself(tmp_path, tiny_data_dir):
    with pytest.raises(ConfigError, match="names this study itself"):
        config.load_params(write(tmp_path, TEACHERS_FROM.replace("lender", "borrower")))
    by_path = config.load_params(write(tmp_path, TEACHERS_FROM.replace("lender", "./outputs/borrower")
                                       + f"output_dir: {tmp_path / 'outputs'}\n"))
    with pytest.raises(ConfigError, match="is this study's own folder"):
        runner.plan(by_path, data_dir=str(tiny_data_dir))


def test_finished_runs_that_read_a_run_to_do_are_redone_after_it(tmp_path, tiny_data_dir):
    study = config.load_params(write(tmp_path, GOOD + f"output_dir: {tmp_path / 'out'}\n"))
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    for run in runs:
        _finish(run)
    assert runner.outdated_runs(runs) == []
    (runs[1].out_dir / "done.json").unlink()  # the nergrit teacher is to be redone (deleted, interrupted)
    nergrit = [r.out_dir for r in runs if r.dataset == "nergrit" and r.stage == "distill"]
    assert runner.outdated_runs(runs) == nergrit
    assert runner.stale_runs(runs) == {}  # nothing changed: no consent needed, they are simply redone
    assert runner.outdated_runs(runs, {runs[0].out_dir}) == [r.out_dir for r in runs[2:]]  # smsa's too


def test_an_unfinished_run_begun_with_other_settings_starts_afresh(tmp_path, tiny_data_dir):
    study = config.load_params(write(tmp_path, GOOD + f"output_dir: {tmp_path / 'out'}\n"))
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    student = next(r for r in runs if r.stage == "distill")
    from kdlib import rundir

    rundir.write_json(student.out_dir / "params.json", {"parameters": {**student.parameters, "epochs": 99}})
    same = runs[0]  # interrupted with the planned settings: it resumes
    rundir.write_json(same.out_dir / "params.json", {"parameters": same.parameters})
    assert runner.restarts(runs) == [student.out_dir]
    assert runner.stale_runs(runs) == {}  # not finished: nothing to refuse


def test_a_dataset_can_take_only_some_students(tmp_path, tiny_data_dir):
    text = GOOD.replace("nergrit: {teacher: {epochs: 3}, distill: {epochs: 5}}",
                        "nergrit: {teacher: {epochs: 3}, distill: {epochs: 5}, students: [bilstm]}")
    study = config.load_params(write(tmp_path, text + f"output_dir: {tmp_path / 'out'}\n"))
    assert study.students_for("nergrit") == ("bilstm",) and study.students_for("smsa") == ("bilstm", "bert-tiny")
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    pairs = {(r.dataset, r.parameters["student"]) for r in runs if r.stage == "distill"}
    assert pairs == {("smsa", "bilstm"), ("smsa", "bert-tiny"), ("nergrit", "bilstm")}
    with pytest.raises(ConfigError, match=r"per_dataset.nergrit.students: cnn not in distill.students"):
        config.load_params(write(tmp_path, text.replace("students: [bilstm]}", "students: [cnn]}")))
    with pytest.raises(ConfigError, match="unknown student 'bilstn'"):
        config.load_params(write(tmp_path, text.replace("students: [bilstm]}", "students: [bilstn]}")))


def test_stages_keep_only_their_runs(tmp_path, tiny_data_dir):
    text = GOOD + f"output_dir: {tmp_path / 'out'}\nprofile: {{thread_counts: [1]}}\n"
    params = write(tmp_path, text)
    lines = []
    runner.run_study(str(params), data_dir=str(tiny_data_dir), dry_run=True, stages=["teacher", "distill"],
                     echo=lines.append)
    listed = [line for line in lines if line.startswith("  ") and "(to run)" in line]
    assert listed and all(re.match(r"  (teacher|distill)/", line) for line in listed)
    assert len(listed) == 2 + 2 * 2 * 2 * 3  # 2 teachers; 2 datasets x 2 students x 2 seeds x 3 variants
    with pytest.raises(ConfigError, match="unknown stage.*profil.*the stages are teacher, distill"):
        runner.run_study(str(params), data_dir=str(tiny_data_dir), dry_run=True, stages=["profil"])
    with pytest.raises(ConfigError, match="has no ablation-loss runs"):
        runner.run_study(str(params), data_dir=str(tiny_data_dir), dry_run=True, stages=["ablation-loss"])
    lines.clear()
    runner.run_study(str(params), data_dir=str(tiny_data_dir), dry_run=True, stages=["teacher", "distill"],
                     datasets=["nergrit"], echo=lines.append)
    listed = [line for line in lines if line.startswith("  ") and "(to run)" in line]
    assert len(listed) == 1 + 2 * 2 * 3 and all("/nergrit/" in line for line in listed)
    with pytest.raises(ConfigError, match="dataset.*casa not in this study"):
        runner.run_study(str(params), data_dir=str(tiny_data_dir), dry_run=True, datasets=["casa"])


def test_an_interim_analysis_reads_what_is_finished_and_is_redone_when_the_rest_finishes(tmp_path, tiny_data_dir,
                                                                                          capsys):
    study = config.load_params(write(tmp_path, GOOD + f"output_dir: {tmp_path / 'out'}\n"
                                     "profile: {thread_counts: [1]}\n"))
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    smsa = [r for r in runs if r.dataset == "smsa"]
    for run in smsa:  # smsa finished and profiled; nergrit not started
        _finish(run)
    analysis = runs[-1]
    assert analysis.stage == "analysis" and len(analysis.needs) == 2
    now = runner.interim_analysis(runs)
    assert now[-1].needs == tuple(r.out_dir for r in smsa if r.stage == "profile")  # the finished profile only
    assert now[:-1] == runs[:-1]  # nothing else changes
    _finish(analysis)  # the interim analysis ran; the next plain run redoes it after nergrit's profile
    assert analysis.out_dir in runner.outdated_runs(runs)
    time.sleep(1.1)  # done.json records whole seconds
    for run in runs[:-1]:  # nergrit finishes after it (another kdexam run): the analysis is redone, not CHANGED
        if run.dataset == "nergrit":
            _finish(run)
    assert analysis.out_dir in runner.stale_runs(runs)
    lines = []
    runner.run_study(str(tmp_path / "study.yaml"), data_dir=str(tiny_data_dir), dry_run=True, stages=["analysis"],
                     echo=lines.append)
    assert "  analysis/all/analysis (done, redone after the runs it reads)" in lines
    with pytest.raises(ConfigError, match="--interim runs the study's analysis now, but no analysis run"):
        runner.interim_analysis([r for r in runs if r.stage != "analysis"])
    assert cli.main(["run", str(tmp_path / "study.yaml"), "--data-dir", str(tiny_data_dir), "--stage", "teacher",
                     "--interim", "--dry-run"]) == 1
    assert capsys.readouterr().err.strip().endswith("--stage (if given) must include analysis.")
