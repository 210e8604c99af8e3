# Chores only: the stage order lives in dvc.yaml.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test lint bench bench-scale serve constraints clean-scratch deps check-lock

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

repro: $(STAMP)
	dvc repro

lint: $(STAMP)
	ruff check src stages flows tests benchmarks tools
	ruff format --check src stages flows tests benchmarks tools
	mypy && mypy flows && mypy tests

# Two workers (pytest-xdist); modules that share a costly fixture or a server stay on one
# (tests/conftest.py XDIST_GROUPS). Plain `pytest` runs the same tests serially.
PYTEST_WORKERS ?= 2

test: lint
	pytest -n $(PYTEST_WORKERS) --dist loadgroup

# Issue 16's ratios, each measured interleaved in one run with the load average beside it
# (benchmarks/README.md): sweep vs bare loop and the Optuna peer (and the default table's sweep
# with tracking off, and each Optuna storage alone), hpo stage CPU vs bare script, 1 vs 2 workers,
# the CV pool; then benchmarks/results/summary.md. About 27 min on 2 idle cores.
# QUICK=1: smoke budgets (minutes; not figures to keep). BENCH_OUT=DIR: write there instead.
# REPRO=1: also a fresh clone's `dvc repro` against commit ca38033 (adds ~5 min).
BENCH_OUT ?= benchmarks/results
BENCH_FLAGS = $(if $(QUICK),--quick) --out-dir $(BENCH_OUT)

bench: $(STAMP)
	python benchmarks/overhead.py $(BENCH_FLAGS)
	python benchmarks/overhead.py --workloads default --no-peer --profile never --tracking off \
		$(if $(QUICK),--quick) --out-dir $(BENCH_OUT)/tracking-off
	python benchmarks/storage_floor.py $(if $(QUICK),--rounds 1) --out-dir $(BENCH_OUT)/storage
	python benchmarks/stage_cpu.py $(BENCH_FLAGS)
	python benchmarks/workers.py $(BENCH_FLAGS)
	python benchmarks/cv_pool.py $(BENCH_FLAGS)
	python benchmarks/cv_pool.py --rows 20000 $(BENCH_FLAGS)
	$(if $(REPRO),python benchmarks/repro_compare.py $(BENCH_FLAGS))
	python benchmarks/summary.py --out-dir $(BENCH_OUT)

# Search strategies, and storage cost per trial (the latter needs PostgreSQL at 127.0.0.1:5432).
bench-scale: $(STAMP)
	python benchmarks/strategies.py
	python benchmarks/storage_overhead.py

# Needs a Prefect server and PREFECT_API_URL (see README): registers retrain/nightly and runs it here.
serve: $(STAMP)
	hpopipe serve

# Re-pin every install to what is in the venv now (run after changing pyproject.toml).
constraints: $(STAMP)
	@{ sed -n '1,2p' constraints.txt; pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' | sort; } > constraints.tmp
	@mv constraints.tmp constraints.txt

# Fail when dvc.lock does not match the committed code, data and params (CI runs it first).
check-lock: $(STAMP)
	python tools/check_lock.py

# Recompute each stage's library deps in dvc.yaml from its imports (the contract test checks them).
deps: $(STAMP)
	python tools/regen_deps.py

clean-scratch:
	rm -rf .hpopipe
