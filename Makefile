# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
DEMO_OUT ?= results/demo

.PHONY: demo test data bench clean

# pyproject.toml states compatible ranges; constraints.txt fixes the exact versions installed here.
# Either file changing re-runs the installs.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $(STAMP)

data: $(STAMP)
	bash scripts/ensure-fashion-mnist.sh $(BIN)/python

demo: $(STAMP) data
	$(BIN)/activelab demo --out $(DEMO_OUT)

test: $(STAMP) data
	$(BIN)/python -m pytest -q

bench: $(STAMP) data
	$(BIN)/python benchmarks/round_time.py

clean:
	rm -rf $(VENV) results .pytest_cache
