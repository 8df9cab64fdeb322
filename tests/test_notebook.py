"""kdlib.notebook: a run's messages go to run.log, its parameters show as what differs from the defaults."""
from __future__ import annotations

import logging
import warnings

import pytest

from kdlib import notebook, params


def test_params_table_shows_required_and_changed_settings_only():
    p = params.DistillParams(dataset="smsa", student="cnn", teacher_dir="/t", out_dir="/o", epochs=4,
                           transfer="tang", transfer_size=5.0)
    table = notebook.params_table(p)
    assert list(table.index) == ["dataset", "student", "epochs", "transfer", "transfer_size"]
    assert table.loc["epochs", "value"] == "4" and table.loc["epochs", "default"] == "10"
    assert table.loc["dataset", "default"] == "(required)"
    with pytest.raises(TypeError, match="takes a params dataclass"):
        notebook.params_table({"epochs": 4})


def test_quiet_sends_logs_and_warnings_to_the_run_log(tmp_path):
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        path = notebook.quiet(tmp_path / "run")
        logging.getLogger("kdlib.train").info("epoch 1: loss 0.5")
        warnings.warn("a library's warning", stacklevel=1)
        for handler in root.handlers:
            handler.flush()
        text = path.read_text()
        assert "epoch 1: loss 0.5" in text and "a library's warning" in text
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in before:
            root.addHandler(handler)
        logging.captureWarnings(False)


def test_history_table():
    table = notebook.history_table([{"epoch": 1, "train_loss": 0.51234, "valid_f1": 0.6, "lr": 1e-3, "seconds": 2.0,
                                     "examples_per_s": 10.0}])
    assert table.loc[1, "valid F1 (%)"] == 60.0 and "lr" not in table.columns


def test_progress_bars_only_for_a_person_in_jupyterlab(monkeypatch):
    monkeypatch.delenv("KDEXAM_RUN", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert not notebook.interactive()  # papermill: no Jupyter session
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/notebooks/02_distill.ipynb")
    assert notebook.interactive()  # JupyterLab started this kernel for a notebook
    monkeypatch.setenv("KDEXAM_RUN", "distill/smsa/bilstm-mse-s0")
    assert not notebook.interactive()  # a run of kdexam run, even from a terminal inside JupyterLab
