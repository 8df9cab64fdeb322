"""Export and predict: an exported student labels the test split as the trained model does (every student kind and
task shape), its card carries the figures, `kdexam predict` runs without torch or transformers, bad input is one
clear error, and `kdexam recommend` prints the export command of its pick."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdlib import cli, data, distill, export, models, params, predict, profile, rundir, teachers
from kdlib.predict import PredictError

SHAPES = {"single": "smsa", "pair": "wrete", "aspect": "casa", "tagging": "nergrit", "qa": "facqa"}
OPTIONS = {"bilstm": {"emb_dim": 8, "hidden": 8}, "cnn": {"emb_dim": 8, "filters": 4, "case_dim": 4}, "bert-tiny": {},
           "pruned": {"layers": 1}}  # the CNN with the case feature: an ONNX input of its own


def untrained_teacher(run: Path, key: str, data_dir: Path, models_dir: Path) -> Path:
    """A teacher run folder without training it: a tiny random BERT with a head, its tokenizer, teacher.json.

    The students below train on labels (loss ce), so the teacher is read only for its tokenizer and max_length.
    """
    spec = data.get_spec(key)
    base = teachers.resolve_base_model(params.TINY_RANDOM, models_dir, data.load_indonlu(key, data_dir), spec)
    from transformers import AutoTokenizer

    models.BertTaskModel.from_encoder(base, spec).save_pretrained(run / "model")
    AutoTokenizer.from_pretrained(base).save_pretrained(run / "model")
    rundir.write_json(run / rundir.TEACHER_INFO, {"dataset": key, "base_model": params.TINY_RANDOM, "max_length": 64,
                                                "pooling": "cls"})
    rundir.write_json(run / rundir.METRICS, {"stage": "teacher", "dataset": key, "model": "teacher", "f1": 0.5})
    return run


def distil(study: Path, key: str, student: str, data_dir: Path, loss: str = "ce", seed: int = 0) -> Path:
    out = study / "distill" / key / f"{student}-{loss}-s{seed}"
    distill.run_distill(params.DistillParams(dataset=key, student=student, teacher_dir=str(study / "teacher" / key /
                                                                                      "teacher"),
                                        out_dir=str(out), data_dir=str(data_dir), loss=loss, epochs=1, seed=seed,
                                        student_options=OPTIONS[student]))
    return out


# Every student on one shape, and every shape with at least one student (the tagging CNN reads the case feature).
PAIRS = [("single", s) for s in OPTIONS] + [("pair", "cnn"), ("aspect", "bilstm"), ("tagging", "cnn"),
                                           ("tagging", "pruned"), ("qa", "bert-tiny")]


@pytest.fixture(scope="module")
def shape_study(tmp_path_factory, _tiny_master):
    """One tiny study per task shape: an untrained tiny teacher, and the students of PAIRS trained 1 epoch."""
    root = tmp_path_factory.mktemp("export-study")
    for shape, key in SHAPES.items():
        untrained_teacher(root / "teacher" / key / "teacher", key, _tiny_master, root / "models")
        for student in [s for sh, s in PAIRS if sh == shape]:
            distil(root, key, student, _tiny_master)
    return root


def _check(result, key: str) -> dict:
    info = result.info
    for name in ("model.onnx", "model.int8.onnx", "export.json", "labels.json", "MODEL_CARD.md"):
        assert (result.out_dir / name).is_file(), name
    parity = info["parity"]
    assert parity["test_examples"] == 40 and parity["onnx"]["agreement"] >= export.PARITY_MIN, parity
    assert parity["onnx"]["max_abs_logit_diff"] <= 1e-3, parity
    assert parity["onnx"]["f1"] == pytest.approx(parity["f1_trained"]) == pytest.approx(info["test_f1"])
    card = (result.out_dir / "MODEL_CARD.md").read_text()
    assert f"{100 * parity['int8_f1_change']:+.2f}" in card and data.get_spec(key).name in card
    return info


@pytest.mark.slow
@pytest.mark.parametrize("shape, student", PAIRS)
def test_export_agrees_with_the_trained_model_on_every_shape(shape_study, shape, student, tmp_path):
    key = SHAPES[shape]
    result = export.export_student(export.ExportParams(study_dir=str(shape_study), dataset=key, student=student,
                                                       out_dir=str(tmp_path / "export")))
    info = _check(result, key)
    vocabulary = "vocab.json" if student in ("bilstm", "cnn") else "tokenizer.json"
    assert (result.out_dir / vocabulary).is_file() and info["model"]["shape"] == shape
    predictor = predict.Predictor(result.out_dir)
    out = predictor.predict([export.predictor_input(_first_test(key), data.get_spec(key))])[0]
    labels = data.get_spec(key).labels
    if shape in ("tagging", "qa"):
        assert set(out["tags"]) <= set(labels) and len(out["tags"]) == len(out["tokens"])
    elif shape == "aspect":
        assert set(out["labels"]) == set(data.get_spec(key).aspects)
    else:
        assert out["label"] in labels and sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def _first_test(key: str) -> dict:
    return data.read_records(data.get_spec(key), "test", os.environ.get("KDEXAM_DATA_DIR"), limit=1)[0]


@pytest.mark.slow
def test_a_mean_pooled_bert_task_model_with_an_id_map_exports_generically(shape_study, tmp_path):
    """What a pruned teacher or a `pooling: mean` head looks like to export: a BertTaskModel folder (kdexam.json)
    under a student name kdlib.models does not know, with a VocabMap's id_map buffer, read through its forward."""
    bert = shape_study / "distill" / "smsa" / "bert-tiny-ce-s0"
    model = models.load_model(bert / "model")
    assert model.vocab_map is not None
    model.pooling = "mean"
    run = shape_study / "distill" / "smsa" / "mystery-ce-s0"
    model.save_pretrained(run / "model")
    metrics = rundir.read_json(bert / rundir.METRICS)
    from kdlib.train import predict_logits, predictions, score_ids

    spec, test = data.get_spec("smsa"), data.load_split("smsa", "test", metrics["params"]["data_dir"])
    inputs = profile.model_inputs(profile.ProfiledModel("mystery", run, metrics), spec, test,
                                  shape_study / "teacher" / "smsa" / "teacher")
    f1 = score_ids(spec, teachers.gold_labels(test, spec), predictions(predict_logits(model, inputs.features,
                                                                                  inputs.collator)))["f1"]
    rundir.write_json(run / rundir.METRICS, {**metrics, "model": "mystery", "f1": f1})
    result = export.export_student(export.ExportParams(study_dir=str(shape_study), dataset="smsa", student="mystery",
                                                       out_dir=str(tmp_path / "mystery")))
    _check(result, "smsa")


# ----------------------------------------------------------------------------------------------------------------
# A study with a profile: the card's costs, --recommend, recommend's command, predict without torch

@pytest.fixture(scope="module")
def profiled_study(tmp_path_factory, _tiny_master):
    """SmSA: a teacher trained 1 epoch, CNN and BiLSTM distilled with MSE (two CNN seeds), profiled briefly."""
    root = tmp_path_factory.mktemp("export-profiled")
    teacher = root / "teacher" / "smsa" / "teacher"
    teachers.run_teacher(params.TeacherParams(dataset="smsa", out_dir=str(teacher), data_dir=str(_tiny_master),
                                        models_dir=str(root / "models"), epochs=1, lr=1e-3, max_length=64))
    rundir.mark_done(teacher)  # recommend reads finished runs only, as the runner leaves them
    for student, seed in (("cnn", 0), ("cnn", 1), ("bilstm", 0)):
        rundir.mark_done(distil(root, "smsa", student, _tiny_master, loss="mse", seed=seed))
    profile.run_profile(params.ProfileParams(
        study_dir=str(root), dataset="smsa", out_dir=str(root / "profile" / "smsa" / "profile"),
        data_dir=str(_tiny_master), thread_counts=[1], batch_sizes=[1, 4], input_kinds=["real"], warmup=1, runs=3,
        memory=False))
    return root


@pytest.mark.slow
def test_kdexam_export_cnn_writes_a_card_and_predict_runs_without_torch(profiled_study, tmp_path, capsys):
    out = tmp_path / "cnn"
    assert cli.main(["export", "--study", str(profiled_study), "--dataset", "smsa", "--student", "cnn",
                     "--out", str(out)]) == 0
    assert "labels as the trained model on 100.00% of 40 test units" in capsys.readouterr().out
    info = json.loads((out / "export.json").read_text())
    best_seed = max((0, 1), key=lambda s: (rundir.read_json(profiled_study / "distill" / "smsa" / f"cnn-mse-s{s}" /
                                                           rundir.METRICS)["valid"]["f1"], -s))
    assert (info["student"], info["variant"], info["seed"]) == ("cnn", "mse", best_seed)
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Cost (the study's profile)" in card and "| onnx | 1 | 4 |" in card and info["command"] in card
    assert f"--seed {best_seed}" in info["command"] and info["profile"]["machine"]["cpu"] in card

    texts = tmp_path / "texts.txt"
    texts.write_text("makanannya enak sekali , pelayanan ramah\n\ntempatnya kotor dan mahal\n", encoding="utf-8")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys

        class Block:  # a service image without torch, transformers (or datasets, sklearn, pandas)
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "datasets", "sklearn", "pandas"):
                    raise ImportError(f"blocked: {name}")

        sys.meta_path.insert(0, Block())
        """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "blocked: torch" in check.stderr
    done = subprocess.run([sys.executable, "-m", "kdlib.cli", "predict", str(out), str(texts)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["input"] for r in rows] == ["makanannya enak sekali , pelayanan ramah", "tempatnya kotor dan mahal"]
    assert all(r["label"] in data.get_spec("smsa").labels for r in rows)
    table = subprocess.run([sys.executable, "-m", "kdlib.cli", "predict", str(out), "-", "--format", "table",
                            "--int8"], env=env, input="bagus\n", capture_output=True, text=True)
    assert table.returncode == 0 and table.stdout.split("\t")[0] in data.get_spec("smsa").labels, table.stderr
    empty = subprocess.run([sys.executable, "-m", "kdlib.cli", "predict", str(out), "-"], env=env, input="\n",
                           capture_output=True, text=True)
    assert empty.returncode == 1 and empty.stderr.strip().count("\n") == 0
    assert "no input in stdin" in empty.stderr


@pytest.mark.slow
def test_export_recommend_and_recommend_prints_the_export_command(profiled_study, tmp_path, capsys):
    assert cli.main(["recommend", "--study", str(profiled_study), "--max-size-mb", "100"]) == 0
    text = capsys.readouterr().out
    command = next(line.split("export it: ", 1)[1] for line in text.splitlines() if "export it: " in line)
    assert command.startswith(f"kdexam export --study {profiled_study} --dataset smsa --student ")
    assert " --variant mse --seed " in command and command.endswith("--out exports/smsa-" + command.split(
        "--student ")[1].split()[0])
    assert cli.main(["export", "--study", str(profiled_study), "-d", "smsa", "--recommend", "--max-size-mb", "100",
                     "--out", str(tmp_path / "rec")]) == 0
    info = json.loads((tmp_path / "rec" / "export.json").read_text())
    assert info["command"].split(" --out ")[0] == command.split(" --out ")[0]
    assert "kdexam recommend" in (tmp_path / "rec" / "MODEL_CARD.md").read_text()
    assert cli.main(["export", "--study", str(profiled_study), "-d", "smsa", "--recommend", "--max-size-mb",
                     "0.000001", "--out", str(tmp_path / "none")]) == 1
    assert "recommend picks nothing" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Errors, without a model

def test_a_folder_that_is_not_an_export_is_one_error(tmp_path, capsys):
    with pytest.raises(PredictError, match="not a kdexam export"):
        predict.Predictor(tmp_path)
    with pytest.raises(PredictError, match="not found"):
        predict.Predictor(tmp_path / "nope")
    rundir.write_json(tmp_path / predict.EXPORT_CONFIG, {"format": 99})
    with pytest.raises(PredictError, match="export format 99"):
        predict.Predictor(tmp_path)
    assert cli.main(["predict", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kdexam: error: export folder") and err.count("\n") == 1


@pytest.mark.parametrize("shape, item, message", [
    ("single", ("a", "b"), "a single model reads a text"),
    ("single", "   ", "input 1 is empty"),
    ("pair", "one text only", "a pair model reads a pair"),
    ("tagging", 42, "a tagging model reads a text"),
    ("tagging", [], "input 1 is empty"),
    ("qa", ["only a question"], "a qa model reads a pair"),
])
def test_a_wrong_input_kind_is_one_error(shape, item, message):
    with pytest.raises(PredictError, match=message):
        predict.example_of(item, shape)


def test_lines_are_read_per_task_shape_and_errors_name_the_line():
    assert predict.read_lines(["a\tb\n", "\n", "c\td"], "pair") == [["a", "b"], ["c", "d"]]
    assert predict.read_lines(['["Budi", "ke", "Jakarta"]', "Ani pergi"], "tagging") == [["Budi", "ke", "Jakarta"],
                                                                                          "Ani pergi"]
    assert predict.example_of({"question": "siapa dia", "passage": "dia Budi"}, "qa") == {
        "question": ["siapa", "dia"], "tokens": ["dia", "Budi"]}
    with pytest.raises(PredictError, match=r"f.txt:2: a pair model reads two texts separated by one tab, got 1"):
        predict.read_lines(["a\tb", "no tab here"], "pair", "f.txt")
    with pytest.raises(PredictError, match=r"stdin:1: not valid JSON"):
        predict.read_lines(["[broken"], "tagging", "stdin")
    with pytest.raises(PredictError, match="no input in f.txt"):
        predict.read_lines(["", "  "], "single", "f.txt")
    with pytest.raises(PredictError, match="predict takes a list of inputs, got str"):
        predict._inputs("a bare text")


def test_find_run_chooses_on_validation_and_names_what_exists(tmp_path):
    def run(name, model, variant, seed, valid):
        rundir.write_json(tmp_path / "distill" / "smsa" / name / rundir.METRICS,
                          {"model": model, "variant": variant, "seed": seed, "valid": {"f1": valid}})

    run("cnn-mse-s0", "cnn", "mse", 0, 0.5)
    run("cnn-mse-s1", "cnn", "mse", 1, 0.7)
    run("cnn-no-kd-s0", "cnn", "no-kd", 0, 0.65)
    run("cnn-no-kd-s1", "cnn", "no-kd", 1, 0.65)
    run("bilstm-mse-s0", "bilstm", "mse", 0, 0.9)
    assert export.find_run(tmp_path, "smsa", "cnn")[1]["seed"] == 0  # no-kd: mean 0.65 > mse 0.6
    assert export.find_run(tmp_path, "smsa", "cnn", "mse")[0].name == "cnn-mse-s1"
    assert export.find_run(tmp_path, "smsa", "cnn", "mse", 0)[0].name == "cnn-mse-s0"
    with pytest.raises(export.ConfigError, match="no finished 'bert-tiny' run for smsa .* students: bilstm, cnn"):
        export.find_run(tmp_path, "smsa", "bert-tiny")
    with pytest.raises(export.ConfigError, match="no finished variant 'kl'; it has mse, no-kd"):
        export.find_run(tmp_path, "smsa", "cnn", "kl")
    with pytest.raises(export.ConfigError, match="no finished seed 7; it has 0, 1"):
        export.find_run(tmp_path, "smsa", "cnn", "mse", 7)
    with pytest.raises(export.ConfigError, match="no finished student run for nergrit"):
        export.find_run(tmp_path, "nergrit", "cnn")
    assert export.export_command("outputs/s", "smsa", "cnn", "mse", 1) == (
        "kdexam export --study outputs/s --dataset smsa --student cnn --variant mse --seed 1 --out exports/smsa-cnn")


def test_predict_reads_each_word_where_its_teacher_did():
    # kdlib.predict (tokenizers only) must build the word_index kdlib.data built for training, in either position
    from tests.test_data import sentencepiece_like

    spm = sentencepiece_like()
    examples = [{"tokens": ["harga", "rp", "5000", ",", "ok"], "tags": [0, 1, 2, 3, 4]}]
    spec = data.get_spec("posp")
    for position in params.WORD_POSITIONS:
        trained = data.encode_for_bert({k: [v] for k, v in examples[0].items()}, spm, spec, 64, position)
        served = predict._subword_features(spm.backend_tokenizer, examples, "tagging", position)
        assert served[0]["word_index"] == trained["word_index"][0] and served[0]["input_ids"] == trained["input_ids"][0]
    assert predict.ExportConfig(dataset="posp", shape="tagging", labels=("a",), aspects=(), kind="subword",
                                inputs=(), pad_id=0, max_words=1, max_length=8, fallback=0).word_position == "first"
