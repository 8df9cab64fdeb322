"""`kdexam export`: one trained student of a study as a self-contained folder that kdlib.predict serves without
torch (the files are listed in kdlib.predict's docstring).

The model goes through kdlib.profile's exporter (`torch.onnx.export`, then onnxruntime's dynamic int8
quantization), so every model the profile exports, word students and anything saved as a BertTaskModel (BERT
students, pruned teachers, mean-pooled heads, a VocabMap's id_map), exports the same way. Before the folder is
called done the export is checked against the trained model: both label the test split, the trained model in
PyTorch on kdlib's own features and the export through kdlib.predict from the raw text, and the share of units
(examples, aspects or words) with the same label is written, with the test F1 of the fp32 and int8 exports, to
export.json and MODEL_CARD.md. An export that agrees on fewer than PARITY_MIN of the units is an error.

The run is named (`student`, optionally `variant` and `seed`) or chosen by kdlib.recommend.recommend within a
budget. Without `variant`, the variant with the best mean validation F1 is taken, as recommend does; without
`seed`, that variant's seed with the best validation F1 (test F1 never chooses).
"""
from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kdlib import data, predict, published, rundir
from kdlib.errors import ConfigError, KdExamError

PARITY_MIN = 0.999
CARD = "MODEL_CARD.md"


class ExportError(KdExamError):
    """An export that could not be written or does not agree with its trained model."""


@dataclass(frozen=True)
class ExportParams:
    study_dir: str
    dataset: str
    out_dir: str
    student: str
    variant: str | None = None  # None: the best variant on validation F1
    seed: int | None = None  # None: the variant's seed with the best validation F1
    data_dir: str | None = None  # None: the folder the run was trained on, else $KDEXAM_DATA_DIR
    max_test_examples: int | None = None  # parity on the first N test examples; None: the whole test split
    command: str = ""  # how the export was asked for, for the card
    picked_by: str = ""  # recommend's answer, when it chose the student


@dataclass
class ExportResult:
    out_dir: Path
    info: dict  # export.json


# ----------------------------------------------------------------------------------------------------------------
# Which run

def student_runs(study_dir: str | os.PathLike, dataset: str) -> list[tuple[Path, dict]]:
    """Every student run of a dataset in the study with a metrics.json, and that metrics.json."""
    folder = rundir.student_dirs(study_dir, data.get_spec(dataset).key)
    return [(run, rundir.read_json(run / rundir.METRICS)) for run in sorted(folder.glob("*/"))
            if (run / rundir.METRICS).is_file()]


def _valid_f1(metrics: dict) -> float:
    value = (metrics.get("valid") or {}).get("f1")
    return float(value) if value is not None else float("-inf")


def find_run(study_dir: str | os.PathLike, dataset: str, student: str, variant: str | None = None,
             seed: int | None = None) -> tuple[Path, dict]:
    """The run folder and metrics of a student (see the module docstring for the default variant and seed)."""
    key = data.get_spec(dataset).key
    runs = student_runs(study_dir, key)
    if not runs:
        raise ConfigError(f"no finished student run for {key} under {Path(study_dir) / 'distill' / key}; run the "
                          "study first (`kdexam run PARAMS`).")
    mine = [(r, m) for r, m in runs if m.get("model") == student]
    if not mine:
        known = sorted({m.get("model") for _, m in runs} - {None})
        raise ConfigError(f"no finished {student!r} run for {key} in {study_dir}; its students: {', '.join(known)}.")
    variants = sorted({m.get("variant") for _, m in mine})
    if variant is None:
        mean = {v: np.mean([_valid_f1(m) for _, m in mine if m.get("variant") == v]) for v in variants}
        variant = max(variants, key=lambda v: (mean[v], v))
    elif variant not in variants:
        raise ConfigError(f"{student} on {key} has no finished variant {variant!r}; it has {', '.join(variants)}.")
    mine = [(r, m) for r, m in mine if m.get("variant") == variant]
    if seed is not None:
        seeds = sorted(m.get("seed") for _, m in mine)
        mine = [(r, m) for r, m in mine if m.get("seed") == seed]
        if not mine:
            raise ConfigError(f"{student} ({variant}) on {key} has no finished seed {seed}; it has "
                              f"{', '.join(map(str, seeds))}.")
    return max(mine, key=lambda rm: (_valid_f1(rm[1]), -int(rm[1].get("seed") or 0)))


def export_command(study_dir: str | os.PathLike, dataset: str, student: str, variant: str | None = None,
                   seed: int | None = None, out_dir: str | os.PathLike | None = None) -> str:
    """The `kdexam export` command line that exports exactly this run."""
    out = out_dir or Path("exports") / f"{data.get_spec(dataset).key}-{student}"
    args = ["kdexam", "export", "--study", str(study_dir), "--dataset", data.get_spec(dataset).key,
            "--student", student]
    args += ["--variant", variant] if variant is not None else []
    args += ["--seed", str(seed)] if seed is not None else []
    return shlex.join([*args, "--out", str(out)])


def recommended_command(study_dir: str | os.PathLike, rec) -> str | None:
    """The export command of a kdlib.recommend.Recommendation's pick (None when nothing was picked). A pick that is
    not on this machine (recommend read it from a published folder, which keeps no weights) gets `rec.export_hint`
    instead: how to train it here, then export it."""
    if rec.model is None:
        return None
    variant = rec.row.get("variant")
    folder = published.default_folder(study_dir)
    local = Path("outputs") / Path(study_dir).name if folder is not None else Path(study_dir)
    try:
        run, metrics = find_run(local, rec.dataset, rec.model, variant)
    except ConfigError:  # not here: a published pick, or a study changed under our feet
        run = None
    if run is None or not (run / "model").is_dir():
        rec.export_hint = train_then_export(local, rec.dataset, rec.model, variant)
        return None
    return export_command(local, rec.dataset, rec.model, variant, metrics.get("seed"))


def train_then_export(study_dir: str | os.PathLike, dataset: str, student: str, variant: str | None) -> str:
    """What to run for a pick whose model is not on this machine (published results keep no model weights)."""
    name = Path(study_dir).name
    params = Path("params") / f"{name}.yaml"
    run = f"kdexam run {params} -d {data.get_spec(dataset).key}"
    return (f"its model is not on this machine (published results keep no weights): train the dataset here with "
            f"`{run} --force` (--force: the runner skips published datasets; add --stage teacher --stage distill "
            f"to skip the profile), then `{export_command(study_dir, dataset, student, variant)}`")


# ----------------------------------------------------------------------------------------------------------------
# The export

def export_student(p: ExportParams) -> ExportResult:
    """Write the export folder of one student run, check it against the trained model, write its card."""
    from kdlib import models, profile, teachers

    started = time.perf_counter()
    run, metrics = find_run(p.study_dir, p.dataset, p.student, p.variant, p.seed)
    spec = data.get_spec(metrics["dataset"])
    pm = profile.ProfiledModel(metrics["model"], run, metrics)
    if not pm.model_dir.is_dir():
        raise ConfigError(f"{run} has no model/ folder; the run did not finish: rerun it with `kdexam run`.")
    teacher_dir = Path((metrics.get("params") or {}).get("teacher_dir", ""))
    if not (teacher_dir / "model").is_dir():
        raise ConfigError(f"the teacher of {run} ({teacher_dir}) is gone; a BERT student needs its tokenizer and "
                          "the card its scores: restore the teacher run.")
    teacher = teachers.Teacher.load(teacher_dir, dataset=spec.key)
    test = _test_split(spec, metrics, p)
    inputs = profile.model_inputs(pm, spec, test, teacher)
    model = models.load_model(pm.model_dir).eval()
    out = _out_folder(Path(p.out_dir))

    by_length = sorted(range(len(inputs.features)), key=lambda i: len(profile._units(inputs.features[i])))
    example = inputs.collator([inputs.features[by_length[0]], inputs.features[by_length[-1]]])
    profile.export_onnx(model, {k: example[k] for k in inputs.keys}, inputs.keys, out / predict.MODEL_FILES[False])
    profile.quantize_int8(out / predict.MODEL_FILES[False], out / predict.MODEL_FILES[True])
    _write_vocabulary(pm, teacher, out)
    info = _export_info(p, pm, spec, inputs.keys, teacher)
    rundir.write_json(out / predict.LABELS_FILE, {"dataset": spec.key, "shape": spec.shape,
                                                  "labels": list(spec.labels), "aspects": list(spec.aspects)})
    rundir.write_json(out / predict.EXPORT_CONFIG, info)  # the Predictor of the parity check reads it

    info["parity"] = check_parity(model, inputs, test, spec, out)
    info["profile"] = profiled_costs(Path(p.study_dir), spec.key, metrics["model"])
    info["files"] = {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.is_file()}
    info["export_seconds"] = time.perf_counter() - started
    rundir.write_json(out / predict.EXPORT_CONFIG, info)
    (out / CARD).write_text(model_card(info), encoding="utf-8")
    agreement = info["parity"]["onnx"]["agreement"]
    if agreement < PARITY_MIN:
        raise ExportError(f"the ONNX export in {out} gives the trained model's labels on only {100 * agreement:.2f}% "
                          f"of {info['parity']['onnx']['units']} test units (at least {100 * PARITY_MIN:g}% "
                          "needed); the folder is kept for inspection: report this model's class and task shape.")
    return ExportResult(out, info)


def _test_split(spec: data.DatasetSpec, metrics: dict, p: ExportParams):
    trained_on = (metrics.get("params") or {}).get("data_dir")
    data_dir = p.data_dir or (trained_on if trained_on and Path(trained_on).is_dir() else None)
    test = data.load_split(spec.key, "test", data_dir)
    return test.select(range(min(p.max_test_examples, len(test)))) if p.max_test_examples else test


def _out_folder(out: Path) -> Path:
    """An empty folder, or an earlier export (replaced); anything else is refused rather than overwritten."""
    if out.exists() and any(out.iterdir()) and not (out / predict.EXPORT_CONFIG).is_file():
        raise ConfigError(f"--out {out} exists and is not an export; give an empty or new folder.")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def _write_vocabulary(pm, teacher, out: Path) -> None:
    """vocab.json for word students; the tokenizer they were trained with as one tokenizer.json for BERT ones."""
    from kdlib import profile

    if pm.kind == "word":
        shutil.copy(pm.model_dir / predict.VOCAB_FILE, out / predict.VOCAB_FILE)
        return
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(profile.tokenizer_dir(pm, teacher))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"the tokenizer in {profile.tokenizer_dir(pm, teacher)} has no fast (tokenizers) "
                          "version, which kdlib.predict reads; convert it to a fast tokenizer first.")
    backend.save(str(out / predict.TOKENIZER_FILE))


def _export_info(p: ExportParams, pm, spec: data.DatasetSpec, keys: Sequence[str], teacher) -> dict:
    import kdlib
    from kdlib.train import fallback_label

    run, metrics = pm.run_dir, pm.metrics
    params = metrics.get("params") or {}
    word = pm.kind == "word"
    teacher_metrics, teacher_info = teacher.metrics, teacher.info
    model = predict.ExportConfig(
        dataset=spec.key, shape=spec.shape, labels=spec.labels, aspects=spec.aspects,
        kind="word" if word else "subword", inputs=tuple(keys), pad_id=_pad_id(pm, teacher),
        max_words=int(params.get("max_words", 256)), max_length=teacher.max_length, fallback=fallback_label(spec),
        word_position=teacher.word_position)
    return {
        "format": predict.FORMAT_VERSION, "model": asdict(model), "student": metrics["model"],
        "variant": metrics.get("variant"), "seed": metrics.get("seed"), "metric": spec.metric,
        "test_f1": metrics.get("f1"), "valid_f1": (metrics.get("valid") or {}).get("f1"),
        "teacher_f1": metrics.get("teacher_f1"),
        "teacher": {"run_dir": str(teacher.run_dir), "base_model": teacher_info.get("base_model"),
                    "pooling": teacher_info.get("pooling"), "test_f1": teacher_metrics.get("f1")},
        "recipe": {k: metrics.get(k) for k in ("stage", "loss", "alpha", "temperature", "kd", "lr", "best_epoch",
                                               "train_examples", "train_split_examples", "transfer_examples",
                                               "parameters")},
        "params": params, "epochs_run": len(metrics.get("history") or []), "run_dir": str(run),
        "command": export_command(p.study_dir, spec.key, metrics["model"], metrics.get("variant"),
                                  metrics.get("seed"), p.out_dir), "asked_as": p.command,
        "out_dir": str(p.out_dir), "picked_by": p.picked_by, "kdexam": kdlib.__version__,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _pad_id(pm, teacher) -> int:
    """The id batches are padded with: the vocabulary's PAD for word students, the tokenizer's pad for BERT."""
    if pm.kind == "word":
        return data.Vocab.load(pm.model_dir / predict.VOCAB_FILE).pad_id
    from transformers import AutoTokenizer

    from kdlib import profile

    return int(AutoTokenizer.from_pretrained(profile.tokenizer_dir(pm, teacher)).pad_token_id)


# ----------------------------------------------------------------------------------------------------------------
# Parity, costs

def predictor_input(example: dict, spec: data.DatasetSpec):
    """A dataset row as kdlib.predict's input for its task shape (the row's labels are left out)."""
    return {"single": lambda: example["text"], "aspect": lambda: example["text"],
            "pair": lambda: (example["text_a"], example["text_b"]), "tagging": lambda: list(example["tokens"]),
            "qa": lambda: (list(example["question"]), list(example["tokens"]))}[spec.shape]()


def _flat(labels) -> list:
    return [u for item in labels for u in (item if isinstance(item, list) else [item])]


def check_parity(model, inputs, test, spec: data.DatasetSpec, out: Path) -> dict:
    """Labels of the trained model (PyTorch, kdlib's features) against the export's (kdlib.predict, raw text) on
    the test examples, per unit; F1 with IndoNLU's metric of each, and the int8 export's change of it."""
    from kdlib.teachers import gold_labels
    from kdlib.train import fallback_label, predict_logits, predictions, score_ids

    gold = list(gold_labels(test, spec))
    trained_logits = predict_logits(model, inputs.features, inputs.collator, desc="parity")
    trained = predictions(trained_logits, fallback_label(spec))
    items = [predictor_input(ex, spec) for ex in test]
    result = {"test_examples": len(test), "f1_trained": score_ids(spec, gold, trained)["f1"]}
    reference = _flat(trained)
    for engine, int8 in (("onnx", False), ("int8", True)):
        logits = predict.Predictor(out, int8=int8).logits(items)
        labels = [predict.label_ids(lg, fallback_label(spec)) for lg in logits]
        same = sum(a == b for a, b in zip(reference, _flat(labels), strict=True))
        # labels alone say little about a model that predicts one class everywhere; the logits say more
        diff = max(float(np.nanmax(np.abs(a - b), initial=0.0)) for a, b in zip(trained_logits, logits))
        result[engine] = {"agreement": same / len(reference), "units_same": same, "units": len(reference),
                          "max_abs_logit_diff": diff, "f1": score_ids(spec, gold, labels)["f1"]}
    result["int8_f1_change"] = result["int8"]["f1"] - result["onnx"]["f1"]
    return result


def profiled_costs(study_dir: Path, dataset: str, student: str) -> dict | None:
    """The study profile's numbers for this student's architecture (and the teacher's latency beside it)."""
    from kdlib import profile_tables

    folder = rundir.profile_dir(study_dir, dataset)
    if not (folder / rundir.PROFILE).is_file():
        return None
    prof = profile_tables.read_profile(folder)
    entry = next((m for m in prof["models"] if m["model"] == student), None)
    if entry is None:
        return None
    rows = [r for r in prof["latency"] if r["model"] in (student, "teacher") and r["inputs"] == "real"]
    latency = {}
    for r in rows:
        latency.setdefault((r["engine"], r["threads"], r["batch"]), {})[r["model"]] = r
    machine = prof.get("machine") or {}
    return {
        "run_dir": entry.get("run_dir"), "parameters": entry.get("parameters"),
        "mb": {k: entry[f"{k}_bytes"] / 2**20 for k in ("safetensors", "onnx", "int8") if entry.get(f"{k}_bytes")},
        "ram_mb": {e: m.get("model_mb") for e, m in (entry.get("memory") or {}).items()},
        "f1": {e: entry.get(f"f1_{e}") for e in ("torch", "onnx", "int8")}, "eval_examples": entry.get("eval_examples"),
        "latency": [{"engine": e, "threads": t, "batch": b, "median_ms": m[student]["median_ms"],
                     "p90_ms": m[student]["p90_ms"], "examples_per_s": m[student]["examples_per_s"],
                     "teacher_torch_ms": (latency.get(("torch", t, b), {}).get("teacher") or {}).get("median_ms")}
                    for (e, t, b), m in sorted(latency.items()) if student in m],
        "machine": {k: machine.get(k) for k in ("cpu", "cores", "usable_cores", "memory_gb", "platform", "torch",
                                                "onnxruntime", "time", "load_average")},
        "profile": str(folder / rundir.PROFILE),
    }


# ----------------------------------------------------------------------------------------------------------------
# The model card

def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}"


def model_card(info: dict) -> str:
    """MODEL_CARD.md of an export, from its export.json."""
    spec = data.get_spec(info["model"]["dataset"])
    recipe, params, parity = info["recipe"], info["params"], info["parity"]
    labels = ", ".join(f"`{label}`" for label in spec.labels)
    added = (recipe.get("transfer_examples") or 0) - (recipe.get("train_examples") or 0)  # the transfer set holds both
    extra = f", plus {added} transfer examples labelled by the teacher" if added > 0 else ""
    aspects = f" for each of the aspects {', '.join(spec.aspects)}" if spec.aspects else ""
    loss = ("labels only (no KD)" if not recipe.get("kd") else
            f"{recipe['loss']} on the teacher's logits" + (f" at T={recipe['temperature']:g}" if recipe["loss"] == "kl"
                                                             else "") + (f", α={recipe['alpha']:g} of CE on labels"
                                                                         if recipe.get("alpha") else ""))
    lines = [
        f"# {spec.name} · {info['student']} ({info['variant']}, seed {info['seed']}) — a kd-exam student",
        "",
        f"**Task.** {spec.name} (IndoNLU), task shape `{spec.shape}`: {predict.SHAPE_INPUTS[spec.shape]} in; "
        f"{'a tag per token and the spans they make' if spec.is_tagging else 'a label'}{aspects} out. "
        f"Labels (id order): {labels}.",
        "",
        "## Use",
        "",
        "```bash",
        f"kdexam predict {info['out_dir']} inputs.txt --format table   # one input per line; - reads stdin",
        "```",
        "",
        "```python",
        "from kdlib.predict import Predictor  # onnxruntime, tokenizers and numpy; no torch, no transformers",
        f"Predictor({info['out_dir']!r}).predict([...])  # int8=True runs model.int8.onnx",
        "```",
        "",
        "## How it was trained",
        "",
        "| | |",
        "|---|---|",
        f"| student | {info['student']}, {recipe.get('parameters') or 0:,} parameters, options "
        f"`{params.get('student_options') or {}}` |",
        f"| distillation | {loss} (stage `{recipe.get('stage')}`, variant `{info['variant']}`) |",
        f"| teacher | `{info['teacher']['base_model']}` fine-tuned on {spec.name} (pooling "
        f"{info['teacher'].get('pooling')}), test F1 {_pct(info['teacher']['test_f1'] or info['teacher_f1'])} |",
        f"| training data | {recipe.get('train_examples')} of {recipe.get('train_split_examples')} train examples"
        f"{extra}; transfer set `{params.get('transfer', 'train')}`, embeddings "
        f"`{params.get('embedding', 'random')}` |",
        f"| schedule | AdamW lr {recipe.get('lr')}, {info['epochs_run']} epoch(s) run of {params.get('epochs')}, best "
        f"epoch {recipe.get('best_epoch')} on validation F1 ({_pct(info['valid_f1'])}), batch "
        f"{params.get('batch_size')}, seed {info['seed']} |",
        f"| run | `{info['run_dir']}` |",
        "",
        f"## Quality (test split, IndoNLU's {info['metric']}, %)",
        "",
        "| model | test F1 | against the trained model |",
        "|---|---|---|",
        f"| trained (PyTorch), from its run | {_pct(info['test_f1'])} | |",
        f"| trained (PyTorch), on the {parity['test_examples']} examples checked | {_pct(parity['f1_trained'])} | |",
        *(f"| this export, `{name}` | {_pct(parity[e]['f1'])} | {100 * parity[e]['agreement']:.2f}% of "
          f"{parity[e]['units']} units ({parity[e]['units_same']}); logits within "
          f"{parity[e]['max_abs_logit_diff']:.2g} |"
          for e, name in (("onnx", "model.onnx"), ("int8", "model.int8.onnx"))),
        "",
        f"int8 changes test F1 by **{100 * parity['int8_f1_change']:+.2f}** points against the fp32 export. "
        f"A unit is {'a word' if spec.is_tagging else 'an aspect of an example' if spec.aspects else 'an example'}.",
        "",
        *_cost_lines(info),
        "## Reproduce",
        "",
        "```bash",
        info["command"],
        "```",
        "",
    ]
    if info.get("asked_as") and info["asked_as"] != info["command"]:
        lines[-1:-1] = [f"Asked for as `{info['asked_as']}`" + (f"; `kdexam recommend` chose it: {info['picked_by']}"
                                                                if info.get("picked_by") else "."), ""]
    lines.append(f"Exported {info['exported']} with kd-exam {info['kdexam']}. Files: "
                 + ", ".join(f"`{name}` ({size / 2**20:.2f} MB)" for name, size in info["files"].items()) + ".")
    return "\n".join(lines) + "\n"


def _cost_lines(info: dict) -> list[str]:
    cost = info.get("profile")
    if not cost:
        return ["## Cost", "", "This study has no profile of this student yet: `kdexam profile --study STUDY -d "
                f"{info['model']['dataset']}` measures latency, size and RAM; export again to add them here.", ""]
    m = cost["machine"]
    lines = ["## Cost (the study's profile)", "",
             f"Measured on {m.get('cpu')} ({m.get('usable_cores')} usable cores, {m.get('memory_gb')} GB, "
             f"{m.get('platform')}), onnxruntime {m.get('onnxruntime')}, torch {m.get('torch')}, {m.get('time')}; "
             f"load average then {_load(m.get('load_average'))}. The profile measures one run per architecture "
             f"(`{cost['run_dir']}`); costs depend on the architecture and its options, not on the seed or loss.", "",
             "| engine | threads | batch | median ms | p90 ms | examples/s | teacher (PyTorch) median ms |",
             "|---|---|---|---|---|---|---|"]
    for r in cost["latency"]:
        teacher = f"{r['teacher_torch_ms']:.2f}" if r.get("teacher_torch_ms") else ""
        lines.append(f"| {r['engine']} | {r['threads']} | {r['batch']} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} | "
                     f"{r['examples_per_s']:.0f} | {teacher} |")
    sizes = ", ".join(f"{k} {v:.2f} MB" for k, v in cost["mb"].items())
    ram = ", ".join(f"{k} {v:.1f} MB" for k, v in cost["ram_mb"].items() if v is not None) or "not measured"
    return [*lines, "", f"Size on disk: {sizes}. RAM the model adds to a process (peak RSS, one batch): {ram}.", ""]


def _load(value) -> str:
    return " / ".join(f"{x:.1f}" for x in value) if value else "not recorded"
