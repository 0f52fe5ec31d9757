# Two commands on a fresh machine with only Python 3.11:
#   make run    set up .venv, install, reproduce the 1986 symmetry experiment (no download needed)
#   make test   set up .venv, install, run the test suite
#   make gpu-check   on a machine with a CUDA GPU: `python -m milestones check --device cuda` (report in runs/check/)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch 2.14.1 / torchvision 0.29.1 are the builds this project is tested with
TORCH  := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: run test gpu-check setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m milestones train 01_dnn

# pytest exits 5 when it collected no test: that is a failure here, not a pass
test: $(STAMP)
	$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$status

gpu-check: $(STAMP)
	$(BIN)/python -m milestones check --device cuda

clean:
	rm -rf $(VENV) runs .pytest_cache
