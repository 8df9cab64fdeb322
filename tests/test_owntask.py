"""Issue 16, your own task: your datasets in the params file, a teacher you fine-tuned, a device, any folder,
progress."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlib import augment, config, data, distill, models, owndata, parallel, params, progress, runner, teachers, train
from kdlib.errors import ConfigError, DataError, KdExamError

EXAMPLE = Path(__file__).parent / "examples" / "own-task"


@pytest.fixture
def example(tmp_path) -> Path:
    """A writable copy of the example study (tickets: JSONL classification, products: CoNLL tagging)."""
    shutil.copytree(EXAMPLE, tmp_path / "own")
    return tmp_path / "own" / "own-task.yaml"


def test_own_datasets_load_beside_nothing_of_indonlu(example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = config.load_params(example)
    assert study.datasets == ("tickets", "products")
    assert study.own_datasets["tickets"]["labels"] == ["account", "billing", "bug"]  # from train, sorted
    assert study.own_datasets["products"]["labels"] == ["B-ORG", "B-PRODUCT", "I-ORG", "I-PRODUCT", "O"]
    runs = runner.plan(study, data_dir=str(tmp_path / "no-indonlu-here"))  # no IndoNLU folder is needed
    runner.check_parameters(runs)
    teacher = next(r for r in runs if r.name == "teacher/tickets/teacher")
    assert teacher.out_dir == tmp_path / "outputs" / "own-task" / "teacher" / "tickets" / "teacher"  # ./outputs
    spec = data.get_spec(teacher.parameters["dataset"])  # what the notebook rebuilds from its parameter
    assert (spec.key, spec.shape, spec.metric, spec.num_labels) == ("tickets", "single", "macro_f1", 3)
    dd = data.load_indonlu(spec)
    assert (len(dd["train"]), dd["test"].column_names) == (120, ["text", "label"])
    products = data.load_indonlu(study.own_datasets["products"])
    assert products["train"][0]["tokens"][:3] == ["our", "team", "at"]
    assert data.get_spec(study.own_datasets["products"]).metric == "chunk_f1_macro"


def test_a_test_label_never_seen_in_train_is_refused_naming_file_line_and_label(example):
    test = example.parent / "tickets-test.jsonl"
    with test.open("a") as f:
        f.write(json.dumps({"ticket": "send me a refund form", "topic": "refund"}) + "\n")
    with pytest.raises(DataError, match=r"tickets-test\.jsonl:31: label 'refund' is not in the label set of tickets "
                                        r"\(account, billing, bug: the labels of its train split\)"):
        config.load_params(example)


def test_an_unseen_tag_in_conll_names_its_own_line(example):
    path = example.parent / "products-valid.conll"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].split("\t")[0] + "\tB-PLACE\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"products-valid\.conll:3: tag 'B-PLACE' is not in the label set"):
        config.load_params(example)


BAD = {  # edit of the example -> the one-line error
    "missing file": (lambda d: (d / "tickets-valid.jsonl").unlink(), r"tickets-valid\.jsonl: file not found"),
    "missing column": (lambda d: _replace(d / "tickets-train.jsonl", '"topic"', '"kind"', 1),
                       r"tickets-train\.jsonl:1: no column 'topic' \(it has: ticket, kind\); set label:"),
    "malformed line": (lambda d: _replace(d / "tickets-test.jsonl", "}\n", "\n", 1),
                       r"tickets-test\.jsonl:1: malformed line: not JSON"),
    "empty split": (lambda d: (d / "tickets-test.jsonl").write_text(""), r"tickets-test\.jsonl: the test split of "
                                                                         r"tickets is empty"),
    "bad encoding": (lambda d: (d / "tickets-valid.jsonl").write_bytes(b'{"ticket": "caf\xe9", "topic": "bug"}\n'),
                     r"tickets-valid\.jsonl:1: not valid UTF-8 \(byte 0xe9 at column 16\); save it as UTF-8"),
    "conll line": (lambda d: _replace(d / "products-test.conll", "\tO\n", " O\n", 1),
                   r"products-test\.conll:\d+: malformed line .*expected token<TAB>tag"),
    "IndoNLU name": (lambda d: _replace(d / "own-task.yaml", "name: tickets", "name: smsa", 1),
                     r"name 'smsa' is an IndoNLU dataset's key"),
    "unknown key": (lambda d: _replace(d / "own-task.yaml", "label: topic", "label: topic\n    colour: red", 1),
                    r"unknown key\(s\) colour"),
    "task": (lambda d: _replace(d / "own-task.yaml", "task: classification", "task: regression", 1),
             r"task 'regression' is not one of classification, pair, aspects, tagging"),
}


def _replace(path: Path, old: str, new: str, count: int = -1) -> None:
    path.write_text(path.read_text().replace(old, new, count))


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_own_data_is_one_line_error(example, case):
    edit, message = BAD[case]
    edit(example.parent)
    with pytest.raises(KdExamError, match=message) as e:
        config.load_params(example)
    assert "\n" not in str(e.value)


def test_given_labels_keep_their_order_and_refuse_others(example):
    _replace(example, "label: topic", "label: topic\n    labels: [bug, billing, account]")
    assert config.load_params(example).own_datasets["tickets"]["labels"] == ["bug", "billing", "account"]
    _replace(example, "labels: [bug, billing, account]", "labels: [bug, billing]")
    with pytest.raises(DataError, match=r"tickets-train\.jsonl:\d+: label 'account' .*\(bug, billing: its labels:\)"):
        config.load_params(example)


def test_csv_pair_aspects_and_a_datasets_folder(tmp_path):
    import datasets

    rows = {"train": [("good food", "fast", "pos", "neg"), ("bad food", "slow", "neg", "neg"),
                      ("ok food", "fast", "pos", "pos")], "valid": [("nice", "slow", "pos", "neg")],
            "test": [("meh", "fast", "neg", "pos")]}
    for split, lines in rows.items():
        (tmp_path / f"{split}.csv").write_text("a,b,food,speed\n" + "".join(",".join(r) + "\n" for r in lines))
    files = {s: f"{s}.csv" for s in rows}
    pair = owndata.definition({"name": "pairs", "task": "pair", **files, "text": "a", "text_pair": "b",
                               "label": "food"}, tmp_path, "t")
    assert data.load_indonlu(pair)["train"][0] == {"text_a": "good food", "text_b": "fast", "label": 1}
    aspects = owndata.definition({"name": "asp", "task": "aspects", **files, "text": "a",
                                  "label": ["food", "speed"]}, tmp_path, "t")
    spec = data.get_spec(aspects)
    assert (spec.shape, spec.aspects, spec.metric) == ("aspect", ("food", "speed"), "aspect_macro_f1")
    assert data.load_indonlu(spec)["test"][0]["labels"] == [0, 1]
    label = datasets.ClassLabel(names=["neg", "pos"])
    dd = datasets.DatasetDict({("validation" if s == "valid" else s): datasets.Dataset.from_dict(
        {"review": [r[0] for r in lines], "stars": [label.str2int(r[2]) for r in lines]},
        features=datasets.Features({"review": datasets.Value("string"), "stars": label})) for s, lines in rows.items()})
    dd.save_to_disk(tmp_path / "hf")
    hf = owndata.definition({"name": "hfset", "task": "classification", "hf": "hf", "text": "review",
                             "label": "stars"}, tmp_path, "t")
    assert hf["labels"] == ["neg", "pos"] and data.load_indonlu(hf)["valid"][0] == {"text": "nice", "label": 1}


def test_the_tang_rule_without_a_pos_lexicon_is_skipped_with_a_note(example):
    spec = data.get_spec(config.load_params(example).own_datasets["products"])
    train = data.load_indonlu(spec)["train"].select(range(20))
    transfer = augment.build_transfer_set("tang", 2.0, train, spec, seed=0)
    assert "POS-guided replacement of the Tang rule is skipped" in transfer.info["pos_rule"]
    assert transfer.info["rules"]["p_pos"] == 0.0 and transfer.info["extra_examples"] > 0


def test_device_is_how_runs_execute(example, tmp_path, monkeypatch):
    assert train.resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert train.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device: cuda, but torch sees no CUDA GPU"):
            train.resolve_device("cuda")
    assert "device" in runner.NOT_SETTINGS and params.LIMITS["device"].ok("auto")
    monkeypatch.chdir(tmp_path)
    run = runner.plan(config.load_params(example), data_dir=str(tmp_path))[0]
    run.out_dir.mkdir(parents=True)
    recorded = {**run.parameters, "device": "cuda"}
    (run.out_dir / "params.json").write_text(json.dumps({"parameters": recorded}))
    assert runner.changed_settings(run) == []  # trained on a GPU, planned on a CPU: still the same run
    _replace(example, "study: own-task", "study: own-task\ndevice: gpu")
    with pytest.raises(ConfigError, match="device: 'gpu' is out of range; allowed: one of auto, cpu, cuda"):
        config.load_params(example)


def test_indonlu_runs_keep_their_parameters(tiny_data_dir):
    """An IndoNLU study still passes the key as dataset, and only how-it-runs keys were added."""
    study = config.load_params(runner.REPO_ROOT / "params" / "quickstart.yaml")
    runs = runner.plan(study, data_dir=str(tiny_data_dir))
    assert {r.parameters["dataset"] for r in runs if "dataset" in r.parameters} <= {"smsa", "nergrit"}
    teacher = next(r for r in runs if r.stage == "teacher")
    assert (teacher.parameters["fine_tune"], teacher.parameters["device"]) == (True, "auto")
    assert runner._recipe_default("teacher", "fine_tune") is True  # a run recorded before the key: the same


def test_progress_lines_and_the_runner_shows_each_change_once(tmp_path):
    write = progress.writer(tmp_path, what="teacher")
    write({"epoch": 2, "epochs": 3, "step": 40, "steps": 120, "loss": 0.53214, "valid_f1": 0.612, "eta_seconds": 190})
    assert progress.line(progress.read(tmp_path)) == ("teacher: epoch 2/3, step 40/120, loss 0.5321, valid F1 61.20, "
                                                      "ETA 3m10s")
    lines: list[str] = []
    shown = runner.ProgressShown(lines.append)
    run = runner.Run("teacher", "x", "teacher", Path("01_teacher.ipynb"), tmp_path, {})
    shown.poll([run], 1, 4)
    shown.poll([run], 1, 4)
    assert lines == ["[#####---------------] 1/4 runs | teacher/x/teacher: teacher: epoch 2/3, step 40/120, "
                     "loss 0.5321, valid F1 61.20, ETA 3m10s"]
    write(phase="teacher logits: train (120 examples)")
    assert progress.line(progress.read(tmp_path)) == "teacher logits: train (120 examples)"


def test_notebooks_run_in_this_interpreter_and_ship_with_the_package():
    args = parallel.kernel_arguments(parallel.THIS_INTERPRETER)
    manager = args["kernel_manager_class"](kernel_name=args["kernel_name"])
    assert manager.kernel_spec.argv[0] == sys.executable
    assert parallel.kernel_arguments("kd-exam") == {"kernel_name": "kd-exam"}
    assert (runner.notebooks_folder() / "01_teacher.ipynb").is_file()


# ----------------------------------------------------------------------------------------------------------------
# Slow: training

@pytest.mark.slow
def test_a_drop_in_fine_tuned_teacher_is_used_without_training(example, tmp_path):
    """A tiny teacher fine-tuned here and saved as a plain Hugging Face folder (its labels in another order) gives
    the same test F1 as its own evaluation, without a training epoch."""
    from transformers import AutoTokenizer


    tickets = config.load_params(example).own_datasets["tickets"]
    first = teachers.run_teacher(params.TeacherParams(
        dataset=tickets, out_dir=str(tmp_path / "trained"), epochs=3, lr=1e-3,
                                                models_dir=str(tmp_path / "models"), threads=1, device="cpu"))
    hf = models.load_model(tmp_path / "trained" / "model").hf
    order = [2, 0, 1]  # the user's model lists its labels in its own order
    head = hf.classifier
    with torch.no_grad():
        head.weight.copy_(head.weight[order])
        head.bias.copy_(head.bias[order])
    names = [tickets["labels"][i] for i in order]
    hf.config.id2label, hf.config.label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    hf.save_pretrained(tmp_path / "mine")
    AutoTokenizer.from_pretrained(tmp_path / "trained" / "model").save_pretrained(tmp_path / "mine")
    dropped = teachers.run_teacher(params.TeacherParams(dataset=tickets, out_dir=str(tmp_path / "dropped"),
                                                  base_model=str(tmp_path / "mine"), fine_tune=False, threads=1))
    assert dropped.metrics["f1"] == pytest.approx(first.metrics["f1"]) and dropped.metrics["history"] == []
    assert dropped.metrics["test"] == pytest.approx(first.metrics["test"])
    assert (tmp_path / "dropped" / "logits").is_dir()  # cached like a trained teacher's
    student = distill.run_distill(params.DistillParams(dataset=tickets, student="bilstm", teacher_dir=str(
        tmp_path / "dropped"), out_dir=str(tmp_path / "student"), epochs=1, threads=1,
        student_options={"emb_dim": 16, "hidden": 16}))
    assert student.metrics["teacher_f1"] == dropped.metrics["f1"]
    hf.config.id2label = {0: "bug", 1: "billing", 2: "refund"}
    hf.save_pretrained(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"its labels do not match tickets's: tickets has account, which the model "
                                          r"lacks; the model has refund, which tickets lacks"):
        teachers.run_teacher(params.TeacherParams(dataset=tickets, out_dir=str(tmp_path / "x"),
                                            base_model=str(tmp_path / "other"), fine_tune=False))


@pytest.mark.slow
def test_own_task_end_to_end_from_an_empty_folder(example, tmp_path):
    """kdexam run from an empty folder: the notebooks of the package, outputs in ./outputs, the report shows both."""
    work = tmp_path / "empty"
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("KDEXAM_DATA_DIR", None)  # no IndoNLU data at all
    kdexam = [sys.executable, "-m", "kdlib.cli"]
    run = subprocess.run([*kdexam, "run", str(example), "--jobs", "2", "--threads", "1"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "done 6, skipped (already done) 0, failed 0" in run.stdout
    report = subprocess.run([*kdexam, "report", "--study", "outputs/own-task"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "tickets" in report.stdout and "products" in report.stdout
    metrics = json.loads((work / "outputs/own-task/distill/products/bilstm-mse-s0/metrics.json").read_text())
    assert (metrics["dataset"], metrics["shape"], metrics["device"]) == ("products", "tagging", "cpu")
