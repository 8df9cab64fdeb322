"""`kdexam data download` against a loopback HTTP server, and the CLI's messages and exit codes."""
from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kdlib import cli, data
from kdlib.errors import KdExamError


@pytest.fixture
def http_root(tiny_data_dir):
    """Serve a tiny IndoNLU copy on 127.0.0.1 the way raw.githubusercontent.com serves the repository."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tiny_data_dir))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tiny_data_dir
    server.shutdown()


def test_download_fetches_every_split_and_keeps_existing(http_root, tmp_path):
    url, source = http_root
    target = tmp_path / "fetched"
    written = data.download(target, ["smsa", "facqa"], base_url=url)
    assert len(written) == 6
    for path in written:
        assert path.read_bytes() == (source / path.relative_to(target)).read_bytes()
    assert not list(target.rglob("*.part"))
    assert data.load_indonlu("facqa", target)["train"].num_rows == 40
    assert data.download(target, ["smsa"], base_url=url) == []  # already there: nothing refetched
    assert len(data.download(target, ["smsa"], base_url=url, overwrite=True)) == 3


def test_download_failure_leaves_no_partial_file(http_root, tmp_path):
    url, _ = http_root
    with pytest.raises(KdExamError, match=r"could not download .*/nowhere/.*404"):
        data.download(tmp_path / "d", ["smsa"], base_url=url + "/nowhere")
    assert not [p for p in (tmp_path / "d").rglob("*") if p.is_file()]


def test_download_refuses_network_when_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KdExamError, match="HF_HUB_OFFLINE=1"):
        data.download(tmp_path, ["smsa"])


def test_cli_download(http_root, tmp_path, capsys):
    url, _ = http_root
    assert cli.main(["data", "download", "--data-dir", str(tmp_path / "x"), "-d", "keps", "--base-url", url]) == 0
    assert "3 file(s) written" in capsys.readouterr().out


def test_cli_data_check_table(tiny_data_dir, capsys):
    assert cli.main(["data", "check", "--data-dir", str(tiny_data_dir)]) == 0
    out = capsys.readouterr().out
    for name in ("EmoT", "SmSA", "CASA", "HoASA", "WReTE", "POSP", "BaPOS", "TermA", "KEPS", "NERGrit", "NERP",
                 "FacQA"):
        assert name in out
    assert "mean_words" in out


def test_cli_data_check_json_one_dataset(tiny_data_dir, capsys):
    assert cli.main(["data", "check", "--data-dir", str(tiny_data_dir), "-d", "casa", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"key":"casa"' in out.replace(" ", "") and '"train":40' in out.replace(" ", "")


@pytest.mark.parametrize("breakage, message", [
    ("corrupt", r"train_preprocess\.txt:5: malformed line"),
    ("label", r"train_preprocess\.csv:3: label 'joy' is not in the label set of emot"),
    ("missing", r"test_preprocess\.tsv: file not found"),
])
def test_cli_bad_data_one_line_exit_1(breakage, message, tiny_data_dir, capsys):
    if breakage == "corrupt":
        path = data.get_spec("bapos").path(tiny_data_dir, "train")
        lines = path.read_text(encoding="utf-8").split("\n")
        lines[4] = "broken line"
        path.write_text("\n".join(lines), encoding="utf-8")
    elif breakage == "label":
        path = data.get_spec("emot").path(tiny_data_dir, "train")
        lines = path.read_text(encoding="utf-8").split("\n")
        lines[2] = "joy,senang sekali hari ini"
        path.write_text("\n".join(lines), encoding="utf-8")
    else:
        data.get_spec("smsa").path(tiny_data_dir, "test").unlink()
    assert cli.main(["data", "check", "--data-dir", str(tiny_data_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kdexam: error: ")
    assert __import__("re").search(message, err)


def test_cli_unknown_dataset_suggests(tiny_data_dir, capsys):
    assert cli.main(["data", "check", "--data-dir", str(tiny_data_dir), "-d", "nergit"]) == 1
    assert "Did you mean 'nergrit'" in capsys.readouterr().err


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "frobnicate"])
    assert e.value.code == 2


@pytest.mark.slow  # trains, converts, starts Dask or a subprocess
def test_console_script_help():
    exe = Path(sys.executable).with_name("kdexam")
    if not exe.exists():
        pytest.skip("kdexam console script is not installed in this environment (run `make venv`)")
    for args in ([], ["data"], ["data", "check"]):
        result = subprocess.run([str(exe), *args, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "usage: kdexam" in result.stdout
