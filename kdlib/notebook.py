"""What a notebook needs to read as a report: its run's progress and library messages in a log file beside it, not
in its cells, and its parameters shown as the few that differ from the defaults.

Progress goes to the terminal through `progress.json` (kdlib.progress, polled by the runner) and, with every
library's INFO lines and warnings, to `<out_dir>/run.log`. In JupyterLab (a kernel its server started: it sets
$JPY_SESSION_NAME) tqdm's bars stay on and show as ipywidgets; an executed notebook (papermill, `kdexam run`) keeps
none of them. An executed notebook becomes one standalone HTML file with `export_html` (07_analysis's report.html:
`export_html_report`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kdlib import rundir

LOG = "run.log"


def quiet(out_dir: str | os.PathLike) -> Path:
    """Send logging (kdlib's, gensim's, transformers'), Python warnings and progress bars to out_dir/run.log."""
    path = Path(out_dir) / LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    bars = interactive()
    if not bars:
        os.environ["TQDM_DISABLE"] = "1"  # tqdm reads it for every bar made from now on (kdlib's, datasets')
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # warnings become log records of "py.warnings", in the file
    try:
        import transformers

        transformers.utils.logging.disable_default_handler()  # its records reach the root logger, hence the file
        transformers.utils.logging.enable_propagation()
        if not bars:
            transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import datasets

        if not bars:
            datasets.disable_progress_bars()
    except ImportError:
        pass
    return path


def interactive() -> bool:
    """A person is watching: a kernel a Jupyter server started for a notebook, not a papermill execution."""
    return bool(os.environ.get("JPY_SESSION_NAME")) and not os.environ.get("KDEXAM_RUN")


PATHS = ("out_dir", "teacher_dir", "study_dir", "data_dir", "models_dir", "embedding_dir", "cache_dir")


def params_table(params: Any) -> pd.DataFrame:
    """The run's settings that are required or differ from its dataclass's defaults, one per row; where things live
    (folders) is left out: it is in params.json."""
    if not is_dataclass(params):
        raise TypeError(f"params_table takes a params dataclass, got {type(params).__name__}.")
    rows = []
    for f in fields(params):
        value = getattr(params, f.name)
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        if f.name not in PATHS and (default is MISSING or value != default):
            rows.append({"setting": f.name, "value": _short(value),
                         "default": "(required)" if default is MISSING else _short(default)})
    return pd.DataFrame(rows, columns=["setting", "value", "default"]).set_index("setting")


def _short(value: Any) -> str:
    text = value.get("name", str(value)) if isinstance(value, dict) and "name" in value else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def history_table(history: list[dict]) -> pd.DataFrame:
    """One row per epoch: training loss, validation F1 (%), seconds and examples/s."""
    df = pd.DataFrame(history)
    if df.empty:
        return df
    df["valid_f1"] = 100 * df["valid_f1"]
    keep = [c for c in ("epoch", "train_loss", "valid_f1", "seconds", "examples_per_s") if c in df]
    return df[keep].rename(columns={"valid_f1": "valid F1 (%)", "examples_per_s": "examples/s"}).set_index(
        "epoch").round(3)


def export_html(notebook: str | os.PathLike, html: str | os.PathLike, *, with_code: bool = False) -> Path:
    """An executed notebook as one standalone HTML file (figures embedded); code cells hidden unless `with_code`."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=not with_code, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    html = Path(html)
    with rundir.atomic_path(html) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return html


def export_html_report(executed_notebook: str | os.PathLike, out_dir: str | os.PathLike) -> Path | None:
    """From the last cell of 07_analysis: its executed notebook, as papermill has saved it after every cell so far,
    as out_dir/report.html. "" (a notebook run by hand) writes nothing; export it with `jupyter nbconvert`."""
    if not executed_notebook:
        logging.getLogger(__name__).info("no executed notebook given: no report.html (the runner passes one)")
        return None
    return export_html(executed_notebook, Path(out_dir) / "report.html")
