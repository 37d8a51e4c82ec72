# xbq: two commands matter. `make reproduce` runs the study, `make test` runs the tests.
# Both create .venv and install the project into it when it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.xbq-installed
# numba's on-disk JIT cache lives inside the checkout; xbq keys it by a hash of its own
# sources (xbq/_jit.py), so an edited kernel can never load stale machine code.
export NUMBA_CACHE_DIR := $(CURDIR)/.numba_cache
export PYTHONHASHSEED := 0

.PHONY: all venv reproduce test test-slow bench lint lab clean guest-sweep trust

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,notebooks,dev]'
	@touch $(STAMP)

venv: $(STAMP)

## The main job: the whole study, end to end, into out/.
reproduce: $(STAMP)
	$(BIN)/xbq reproduce --out out

## The default test run, with numba bounds checking on (an out-of-bounds index raises).
test: $(STAMP)
	NUMBA_BOUNDSCHECK=1 $(BIN)/python -m pytest -q

## The guest sweep of data/measured/README.md (both modes, ticket and pv locks, 16 and 2 vCPUs,
## jobs 1-64, 5 repetitions): about 6 min on 2 cores. `make guest-sweep HOST=16core` on a
## 16-core machine writes data/measured/guest-16core-*.csv.
HOST ?= 2core
guest-sweep: $(STAMP)
	set -e; for lock in ticket pv; do for v in 16 2; do \
	  $(BIN)/xbq measure --mode sq,mq --jobs 1,4,8,16,32,64 --queues $$v --vcpus $$v \
	    --iodepth 32 --lock $$lock --duration 1 --warmup 0.3 --reps 5 --seed 0 \
	    --out data/measured/guest-$(HOST)-$$lock-v$$v.csv; done; done

## The referee's checks of the twin (docs/trust.md): identifiability, the determined
## calibration, unseen seeds, AIC/BIC, forward and leave-one-out tests, mechanisms (about
## 40 min on 2 cores), then this machine's microbenchmarks and the twin's prediction of the
## native sweeps (data/measured/guest-$(HOST)-*.csv) from them.
trust: $(STAMP)
	$(BIN)/python -m xbq.study.trust
	$(BIN)/python -m xbq.study.hostcosts --out data/measured/host-costs-$(HOST).json
	$(BIN)/python -m xbq.study.twin_native --params data/measured/host-costs-$(HOST).json \
	  --measured data/measured/guest-$(HOST)-*.csv --out data/predictions/twin-native-$(HOST)

## Long statistical tests (bootstrap coverage, long simulations).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

## Speed benchmarks: measured and reported, never asserted.
bench: $(STAMP)
	$(BIN)/python -m pytest -q -m benchmark -s -p no:randomly

## JupyterLab on the chapters: each listed once (the paired .py files hidden), and as root
## too (JupyterLab refuses root without --allow-root); jupytext syncs each .ipynb with its .py first.
lab: $(STAMP)
	$(BIN)/jupytext --sync notebooks/*.py
	$(BIN)/jupyter lab notebooks/ \
	  --ContentsManager.hide_globs="['__pycache__', '*.pyc', '*.py', '.ipynb_checkpoints']" \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf .numba_cache .pytest_cache .hypothesis out
