# kd-exam: every target works on a fresh clone; the first one that needs it builds .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned on its own: an unpinned torch pulls GBs of CUDA wheels. Users on Linux without a
# local CPU wheel can add the CPU index: make test TORCH_INDEX=--extra-index-url=https://download.pytorch.org/whl/cpu
TORCH_PIN ?= torch==2.13.0
TORCH_INDEX ?=
KERNEL ?= kd-exam
DATA_DIR ?= $(if $(KDEXAM_DATA_DIR),$(KDEXAM_DATA_DIR),$(if $(wildcard ../shared/data/indonlu),../shared/data/indonlu,data/indonlu))
PYTEST_ARGS ?=
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 2 ] && echo 2 || echo $$n)

.PHONY: help venv lint test test-fast quickstart quickstart-profile lab data-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-19s %s\n", $$1, $$2}'

$(BIN)/kdexam: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH_PIN)" -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (kd-exam)" >/dev/null
	touch $(BIN)/kdexam

venv: $(BIN)/kdexam  ## create .venv with the pinned dependencies and kdlib (editable)

lint: venv  ## ruff check of kdlib, tests and benchmarks (rules: [tool.ruff] in pyproject.toml)
	$(BIN)/ruff check kdlib tests benchmarks

test: venv lint  ## lint, then the test suite (unit tests + papermill runs of every notebook)
	KDEXAM_DATA_DIR=$(abspath $(DATA_DIR)) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv  ## the fast tier: tests not marked slow (about a minute: no real training, papermill, Dask or subprocess)
	KDEXAM_DATA_DIR=$(abspath $(DATA_DIR)) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

quickstart: venv  ## offline: import the offline teacher, train teachers and students of params/quickstart.yaml, print the F1 table
	test -d $(DATA_DIR)/smsa_doc-sentiment-prosa || $(BIN)/kdexam data download --data-dir $(DATA_DIR) -d smsa -d nergrit
	$(BIN)/kdexam teacher import-offline --out outputs/models/multilingual-e5-small
	HF_HUB_OFFLINE=1 $(BIN)/kdexam run params/quickstart.yaml --data-dir $(DATA_DIR) --jobs $(JOBS) --stage teacher --stage distill
	$(BIN)/kdexam report --study outputs/quickstart

quickstart-profile: quickstart  ## then profile its models (CPU latency, RAM, size, ONNX/int8), analysis + report.html
	HF_HUB_OFFLINE=1 $(BIN)/kdexam run params/quickstart.yaml --data-dir $(DATA_DIR) --jobs $(JOBS)
	$(BIN)/kdexam recommend --study outputs/quickstart --max-latency-ms 5

data-check: venv  ## table of the 12 datasets
	$(BIN)/kdexam data check --data-dir $(DATA_DIR)

lab: venv  ## JupyterLab in the project environment (kernel "Python (kd-exam)")
	KDEXAM_DATA_DIR=$(abspath $(DATA_DIR)) $(BIN)/jupyter lab notebooks/

clean:  ## remove .venv and caches (outputs/ is kept)
	rm -rf $(VENV) .pytest_cache kd_exam.egg-info
