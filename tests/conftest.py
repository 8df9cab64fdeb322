"""Shared fixtures: the real IndoNLU copy, and tiny slices of it that tests may corrupt."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from kdlib.data import DATASETS, SPLITS

ROOT = Path(__file__).resolve().parents[1]
TINY_EXAMPLES = 40


def _real_data_dir() -> Path:
    env = os.environ.get("KDEXAM_DATA_DIR")
    path = Path(env) if env else ROOT.parent / "shared" / "data" / "indonlu"
    if not (path / "smsa_doc-sentiment-prosa").is_dir():
        pytest.exit(f"IndoNLU data not found at {path}: set KDEXAM_DATA_DIR to a copy of IndoNLU's dataset/ "
                    "(or run `kdexam data download`).", returncode=4)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The full IndoNLU copy (read-only: never write into it)."""
    return _real_data_dir()


def _slice_file(src: Path, dst: Path, n: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".txt":  # n sentences of token<TAB>tag lines
        out, sentences = [], 0
        for line in src.read_text(encoding="utf-8").splitlines(keepends=True):
            out.append(line)
            if not line.strip():
                sentences += 1
                if sentences == n:
                    break
        dst.write_text("".join(out), encoding="utf-8")
        return
    delimiter = "\t" if src.suffix == ".tsv" else ","
    with src.open(encoding="utf-8", newline="") as f:
        rows = [row for _, row in zip(range(n + (src.suffix == ".csv")), csv.reader(f, delimiter=delimiter))]
    with dst.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter=delimiter, lineterminator="\n").writerows(rows)


@pytest.fixture(scope="session")
def _tiny_master(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("indonlu-tiny")
    for spec in DATASETS.values():
        for split in SPLITS:
            _slice_file(spec.path(data_dir, split), spec.path(root, split), TINY_EXAMPLES)
    return root


@pytest.fixture
def tiny_data_dir(tmp_path, _tiny_master) -> Path:
    """A writable copy of the first TINY_EXAMPLES examples of every split of every dataset."""
    dst = tmp_path / "indonlu"
    shutil.copytree(_tiny_master, dst)
    return dst
