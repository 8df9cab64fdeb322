"""kdlib.params: one source per notebook parameter, read from the `parameters` cell in one call; the bottom of the
import graph; the closed name sets agree with the modules that implement them."""
from __future__ import annotations

import ast
import json
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from kdlib import augment, embeddings, losses, params, runner
from kdlib.errors import ConfigError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CLASSES = {runner.NOTEBOOKS[stage]: cls for stage, cls in params.STAGE_PARAMS.items()}


def code_cells(name: str) -> list[dict]:
    return [c for c in json.loads((NOTEBOOKS / name).read_text())["cells"] if c["cell_type"] == "code"]


def cell_names(cell: dict) -> dict[str, object]:
    """The names the cell assigns (a, b = 1, 2 included), with their literal values."""
    out = {}
    for node in ast.parse("".join(cell["source"])).body:
        assert isinstance(node, ast.Assign), f"a parameters cell holds assignments only, not {ast.dump(node)[:60]}"
        targets = node.targets[0].elts if isinstance(node.targets[0], ast.Tuple) else node.targets
        values = node.value.elts if isinstance(node.targets[0], ast.Tuple) else [node.value]
        for target, value in zip(targets, values, strict=True):
            out[target.id] = ast.literal_eval(value)
    return out


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_parameters_cell_matches_its_class_both_ways(name):
    cls = CLASSES[name]
    (cell,) = [c for c in code_cells(name) if "parameters" in c["metadata"].get("tags", [])]
    names = cell_names(cell)
    known = {f.name for f in fields(cls)}
    assert set(names) <= known, f"{name}: {sorted(set(names) - known)} are no fields of {cls.__name__}"
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    assert required <= set(names), f"{name}: the cell lacks required {sorted(required - set(names))}"
    built = params.params_from_cell(cls, names)  # the cell alone builds the class: every other field defaults
    assert {k: getattr(built, k) for k in names} == names


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_no_notebook_code_cell_is_longer_than_eight_lines(name):
    lengths = [len("".join(c["source"]).strip().splitlines()) for c in code_cells(name)]
    assert max(lengths) <= 8, f"{name}: code cells of {lengths} lines"


def test_params_from_cell_takes_defaults_and_injected_values_and_refuses_strays():
    import os

    namespace = {"dataset": "smsa", "out_dir": "/o", "epochs": 4, "os": os, "Path": Path, "_private": 1,
                 "get_ipython": print, "In": ["cell"]}
    p = params.params_from_cell(params.TeacherParams, namespace)
    assert (p.epochs, p.lr, p.max_length) == (4, 5e-5, 128)  # 4 from the cell, the rest the class's defaults
    with pytest.raises(ConfigError, match="unknown TeacherParams parameter 'epoch'. Did you mean 'epochs'"):
        params.params_from_cell(params.TeacherParams, {**namespace, "epoch": 3})
    with pytest.raises(ConfigError, match="lacks out_dir of TeacherParams"):
        params.params_from_cell(params.TeacherParams, {"dataset": "smsa"})


def test_closed_name_sets_agree_with_their_implementations():
    assert set(params.LOSSES) == set(losses.LOSSES)
    assert params.TRANSFER_KINDS == augment.KINDS and params.POS_DATASETS == augment.POS_DATASETS
    assert params.EMBEDDINGS == embeddings.SOURCES


def test_variant_names():
    assert [params.variant_name(*v) for v in [("ce",), ("mse",), ("kl", 2.0), ("kl", 2.0, 0.5), ("mse", 1.0, 0.5)]] \
        == ["no-kd", "mse", "kl-T2", "kl-T2-a0.5", "mse-a0.5"]


def kdlib_imports(module: str) -> set[str]:
    """The kdlib modules a kdlib module imports anywhere in its source (top level or inside a function)."""
    tree = ast.parse((Path(__file__).resolve().parents[1] / "kdlib" / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "kdlib":
            out |= {a.name for a in node.names if a.name != "__version__"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kdlib."):
            out.add(node.module.split(".")[1])
    return out


def test_config_sits_at_the_bottom_of_the_import_graph():
    seen, todo = set(), ["config"]
    while todo:
        module = todo.pop()
        seen.add(module)
        todo += sorted(kdlib_imports(module) - seen)
    assert seen == {"config", "data", "errors", "limits", "owndata", "params", "rundir", "textio"}


def test_relative_paths_in_a_params_file_are_relative_to_its_folder(tmp_path):
    from kdlib import config

    folder = tmp_path / "studies"
    (folder / "mymodel").mkdir(parents=True)
    path = folder / "s.yaml"
    path.write_text("study: s\ndatasets: [smsa]\noutput_dir: out\ndata_dir: ../indonlu\n"
                    "teacher: {base_model: mymodel, models_dir: ./models}\n"
                    "per_dataset: {smsa: {teacher: {base_model: indobenchmark/indobert-base-p1}}}\n")
    study = config.load_params(path)
    assert study.output_dir == str(folder / "out") and study.data_dir == str(tmp_path / "indonlu")
    assert study.teacher == {"base_model": str(folder / "mymodel"), "models_dir": str(folder / "models")}
    assert study.per_dataset["smsa"]["teacher"]["base_model"] == "indobenchmark/indobert-base-p1"  # a hub id
    assert config.load_params(folder.joinpath("t.yaml").write_text("study: t\ndatasets: [smsa]\n") and
                              folder / "t.yaml").output_dir == "outputs"  # not written: the working directory's
