"""Your own datasets: declared in a params file next to the IndoNLU keys, read into the same task shapes.

```yaml
datasets:
  - smsa                              # an IndoNLU key (kdlib.data.DATASETS)
  - name: ulasan                      # names the run folders and the reports
    task: classification              # classification | pair | aspects | tagging
    train: data/ulasan/train.jsonl    # .csv, .tsv, .jsonl; tagging: .jsonl or CoNLL (token<TAB>tag, blank line)
    valid: data/ulasan/valid.jsonl    # paths are relative to the params file's folder
    test: data/ulasan/test.jsonl
    text: ulasan                      # the text column; pair: text and text_pair
    label: sentimen                   # the label column; aspects: a list of columns, one per aspect
    labels: [negatif, positif]        # optional: the label set (default: the labels of train, sorted)
  - name: entitas
    task: tagging
    hf: data/entitas-hf               # or a `datasets` save_to_disk folder / hub dataset id instead of files
    splits: {valid: validation}       # optional: its split names (default train, validation or valid, test)
    tokens: tokens                    # tagging columns of JSONL and HF sets (defaults tokens, tags)
    tags: ner_tags
    pos_lexicon: data/pos.conll       # optional: POS tags (posp, bapos or a CoNLL file) for the Tang rule
```

A definition is checked whole when the params file loads, so a bad line stops the study before any run: every
file must exist and parse, every label of valid and test must be in the label set (named by file, line and label),
no split may be empty. The runner passes the checked definition, with absolute paths and its label set, to every
run as the notebook parameter `dataset`; `kdlib.data.get_spec` turns it back into a DatasetSpec, so a run needs
nothing but its parameters. Reading follows kdlib.textio's rule (UTF-8, a BOM dropped, a bad byte named by line).
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdlib import data, textio
from kdlib.errors import ConfigError, DataError

# task -> (kdlib.data shape, kdlib.metrics metric)
TASKS = {"classification": ("single", "macro_f1"), "pair": ("pair", "macro_f1"),
         "aspects": ("aspect", "aspect_macro_f1"), "tagging": ("tagging", "chunk_f1_macro")}
FILE_KEYS = ("train", "valid", "test")
COLUMN_DEFAULTS = {"text": "text", "text_pair": "text_pair", "label": "label", "tokens": "tokens", "tags": "tags"}
KEYS = {"name", "task", *FILE_KEYS, "hf", "splits", *COLUMN_DEFAULTS, "labels", "pos_lexicon"}
FIX = "save it as UTF-8"


def is_definition(entry: Any) -> bool:
    return isinstance(entry, dict)


# ----------------------------------------------------------------------------------------------------------------
# A definition from a params file -> a checked, self-contained definition

def definition(raw: dict, base: Path, where: str) -> dict:
    """The checked definition of one `datasets:` entry: known keys, absolute paths, its label set; every split read
    and validated (the errors name file, line and fix)."""
    from kdlib.rundir import FOLDER_NAME, FOLDER_RULE

    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; a dataset has {', '.join(sorted(KEYS))}.")
    name = raw.get("name")
    if not isinstance(name, str) or not FOLDER_NAME.fullmatch(name):
        raise ConfigError(f"{where}: name must be a plain folder name ({FOLDER_RULE}), got {name!r}.")
    if name.lower() in data.DATASETS:
        raise ConfigError(f"{where}: name {name!r} is an IndoNLU dataset's key; give your dataset another name.")
    where = f"{where} ({name})"
    task = raw.get("task")
    if task not in TASKS:
        raise ConfigError(f"{where}: task {task!r} is not one of {', '.join(TASKS)}.")
    out: dict[str, Any] = {"name": name, "task": task}
    if "hf" in raw:
        if any(k in raw for k in FILE_KEYS):
            raise ConfigError(f"{where}: give either hf: (a datasets folder or hub id) or train/valid/test files.")
        out["hf"] = _hf_source(raw["hf"], base, where)
        splits = raw.get("splits") or {}
        if not isinstance(splits, dict) or set(splits) - set(FILE_KEYS):
            raise ConfigError(f"{where}: splits maps train/valid/test to the split names of {raw['hf']!r}.")
        out["splits"] = {k: str(v) for k, v in splits.items()}
    else:
        missing = [k for k in FILE_KEYS if not raw.get(k)]
        if missing:
            raise ConfigError(f"{where}: no {', '.join(missing)} file; a dataset needs train, valid and test "
                              "(or hf: a datasets folder).")
        out.update({k: _file(raw[k], base, f"{where}.{k}", task) for k in FILE_KEYS})
    for key, default in COLUMN_DEFAULTS.items():
        value = raw.get(key, default)
        if key == "label" and task == "aspects":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: label of an aspects task is a list of columns, one per aspect, got "
                                  f"{value!r}.")
            if len(set(value)) != len(value):
                raise ConfigError(f"{where}: label lists a column twice: {value!r}.")
        elif not isinstance(value, str):
            raise ConfigError(f"{where}: {key} is a column name, got {value!r}.")
        out[key] = value
    if "pos_lexicon" in raw:
        lexicon = raw["pos_lexicon"]
        if not isinstance(lexicon, str):
            raise ConfigError(f"{where}: pos_lexicon is posp, bapos or a CoNLL file of POS tags, got {lexicon!r}.")
        out["pos_lexicon"] = lexicon if lexicon in ("posp", "bapos") else _file(lexicon, base, f"{where}.pos_lexicon")
    labels = raw.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or not labels or len(set(map(str, labels))) != len(labels):
            raise ConfigError(f"{where}: labels is a non-empty list of distinct labels, got {labels!r}.")
        out["labels"], out["labels_from"] = [str(v) for v in labels], "labels"
    else:
        out["labels_from"] = "train"
        out["labels"] = sorted({label for _, record in raw_records(out, "train") for label in _labels_of(out, record)})
    if len(out["labels"]) < 2:
        raise DataError(f"{_source(out, 'train')}: only one label ({', '.join(out['labels'])}); a task needs two "
                        "or more.")
    spec = spec_of(out)
    for split in FILE_KEYS:  # every line now, before any run: an unseen label stops the study here
        read_records(spec, split)
    return out


def _hf_source(value: Any, base: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: hf is a datasets save_to_disk folder or a hub dataset id, got {value!r}.")
    folder = Path(value).expanduser()
    folder = folder if folder.is_absolute() else base / folder
    if folder.is_dir():
        return str(folder.resolve())
    if value.startswith((".", "/", "~")) or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(f"{where}: hf {value!r} is not a folder (looked for {folder})"
                          + (" and HF_HUB_OFFLINE=1 forbids the hub" if "/" in value else "") + ".")
    return value  # a hub dataset id


def _file(value: Any, base: Path, where: str, task: str = "tagging") -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: a file path, got {value!r}.")
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if not path.is_file():
        raise DataError(f"{path}: file not found ({where}); paths are relative to the params file's folder.")
    if task != "tagging" and _format(path) == "conll":
        raise ConfigError(f"{where}: {path.name}: a {task} set is a .csv, .tsv or .jsonl file (CoNLL is for "
                          "tagging).")
    return str(path)


def _format(path: Path) -> str:
    suffix = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
    return {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}.get(suffix.lower(), "conll")


def spec_of(definition: dict) -> data.DatasetSpec:
    """The DatasetSpec of a checked definition (no file is read)."""
    shape, metric = TASKS[definition["task"]]
    aspects = tuple(definition["label"]) if shape == "aspect" else ()
    return data.DatasetSpec(definition["name"], definition["name"], "", shape, "", (), tuple(definition["labels"]),
                            aspects=aspects, metric=metric, source=definition)


# ----------------------------------------------------------------------------------------------------------------
# Readers: (where, record with label names) per example; where is "file:line" (HF sets: "folder[split] row n")

def _source(d: dict, split: str) -> str:
    return d[split] if split in d else f"{d['hf']}[{_hf_split_name(d, split, None)}]"


def raw_records(d: dict, split: str) -> Iterator[tuple[str, dict]]:
    if "hf" in d:
        yield from _hf_records(d, split)
        return
    path = Path(d[split])
    fmt = _format(path)
    if fmt == "conll":
        yield from _conll_records(path)
    elif fmt == "jsonl":
        yield from _jsonl_records(path, d)
    else:
        yield from _delimited_records(path, d, "\t" if fmt == "tsv" else ",")


def _lines(path: Path) -> Iterator[str]:
    try:
        return textio.lines(path, newline="", hint=FIX)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check the path in the params file.") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}).") from None


def _conll_records(path: Path) -> Iterator[tuple[str, dict]]:
    for line_no, tokens, tags in data.conll_sentences(path, _lines(path)):  # a tag's error names its own line
        yield f"{path}:{line_no}", {"tokens": tokens, "tags": [t for _, t in tags],
                                    "where": [f"{path}:{n}" for n, _ in tags]}


def _jsonl_records(path: Path, d: dict) -> Iterator[tuple[str, dict]]:
    for line_no, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}:{line_no}: malformed line: not JSON ({e.msg} at column {e.colno}); one JSON "
                            "object per line.") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line_no}: malformed line: a JSON {type(record).__name__}, not an object.")
        yield f"{path}:{line_no}", _columns(record, d, f"{path}:{line_no}")


def _delimited_records(path: Path, d: dict, delimiter: str) -> Iterator[tuple[str, dict]]:
    reader = csv.reader(_lines(path), delimiter=delimiter)
    rows = data.csv_guard(path, reader, hint="fix its quoting")
    header = next(rows, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    for row in rows:
        if not row or row == [""]:
            continue
        where = f"{path}:{reader.line_num}"
        if len(row) != len(header):
            raise DataError(f"{where}: malformed line: {len(row)} fields where the header has {len(header)} "
                            f"({', '.join(header)}); fix the quoting.")
        yield where, _columns(dict(zip(header, row)), d, where, header=f"{path}:1")


def _columns(record: dict, d: dict, where: str, header: str = "") -> dict:
    """The task's columns of one record, by the definition's column names, as plain values."""
    def get(key: str, column: str):
        if column not in record:
            raise DataError(f"{header or where}: no column {column!r} (it has: {', '.join(map(str, record))}); set "
                            f"{key}: to the column that holds it.")
        return record[column]

    task = d["task"]
    if task == "tagging":
        tokens, tags = get("tokens", d["tokens"]), get("tags", d["tags"])
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise DataError(f"{where}: tokens and tags are lists (JSON arrays), got {type(tokens).__name__} and "
                            f"{type(tags).__name__}.")
        if len(tokens) != len(tags):
            raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; give one tag per token.")
        return {"tokens": [str(t) for t in tokens], "tags": [str(t) for t in tags]}
    out = {"text": _text(get("text", d["text"]), where)}
    if task == "pair":
        out["text_pair"] = _text(get("text_pair", d["text_pair"]), where)
    if task == "aspects":
        out["labels"] = [str(get("label", column)).strip() for column in d["label"]]
    else:
        out["label"] = str(get("label", d["label"])).strip()
    return out


def _text(value: Any, where: str) -> str:
    if value is None or isinstance(value, (list, dict)):
        raise DataError(f"{where}: a text column holds {type(value).__name__}, not text.")
    return str(value)


def _hf_split_name(d: dict, split: str, available) -> str:
    if split in d.get("splits", {}):
        return d["splits"][split]
    if split == "valid" and available is not None and "valid" not in available and "validation" in available:
        return "validation"
    return split


def _hf_records(d: dict, split: str) -> Iterator[tuple[str, dict]]:
    import datasets

    source = d["hf"]
    try:
        dd = datasets.load_from_disk(source) if Path(source).is_dir() else datasets.load_dataset(source)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the user needs the message
        raise DataError(f"{source}: not a Hugging Face datasets folder or hub id ({type(e).__name__}: {e}).") from None
    if not isinstance(dd, datasets.DatasetDict):
        raise DataError(f"{source}: one split, not a DatasetDict; save a DatasetDict with train, valid and test.")
    name = _hf_split_name(d, split, dd)
    if name not in dd:
        raise DataError(f"{source}: no split {name!r} (it has: {', '.join(dd)}); name it in splits: {{{split}: ...}}.")
    ds = dd[name]
    for i, row in enumerate(ds):
        where = f"{source}[{name}] row {i}"
        for column, feature in ds.features.items():  # class ids back to their names
            names = _class_names(feature)
            if names is not None and row.get(column) is not None:
                row[column] = [names[v] for v in row[column]] if isinstance(row[column], list) else names[row[column]]
        yield where, _columns(row, d, where)


def _class_names(feature) -> list[str] | None:
    import datasets

    inner = getattr(feature, "feature", feature)
    if isinstance(feature, list) and feature:
        inner = feature[0]
    return inner.names if isinstance(inner, datasets.ClassLabel) else None


def _labels_of(d: dict, record: dict) -> list[str]:
    if d["task"] == "tagging":
        return record["tags"]
    return record["labels"] if d["task"] == "aspects" else [record["label"]]


def read_records(spec: data.DatasetSpec, split: str) -> list[dict]:
    """The examples of one split as kdlib.data's shape records (label ids), every label checked."""
    d = spec.source
    index = {label: i for i, label in enumerate(spec.labels)}

    def ids(labels: list[str], where: str | list[str], what: str) -> list[int]:
        for i, label in enumerate(labels):
            if label not in index:
                place = where if isinstance(where, str) else where[i]
                raise DataError(f"{place}: {what} {label!r} is not in the label set of {spec.key} "
                                f"({', '.join(spec.labels)}: " + ("its labels:" if d.get("labels_from") == "labels" else
                                                                  "the labels of its train split") +
                                "); correct the line, or add the label to labels: in the params file.")
        return [index[label] for label in labels]

    records = []
    for where, r in raw_records(d, split):
        if spec.shape == "tagging":
            records.append({"tokens": r["tokens"], "tags": ids(r["tags"], r.get("where", where), "tag")})
        elif spec.shape == "pair":
            records.append({"text_a": r["text"], "text_b": r["text_pair"], "label": ids([r["label"]], where,
                                                                                        "label")[0]})
        elif spec.shape == "aspect":
            records.append({"text": r["text"], "labels": ids(r["labels"], where, "aspect label")})
        else:
            records.append({"text": r["text"], "label": ids([r["label"]], where, "label")[0]})
    if not records:
        raise DataError(f"{_source(d, split)}: the {split} split of {spec.key} is empty; give it examples.")
    return records
