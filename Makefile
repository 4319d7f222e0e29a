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

# The tests drive real services: Label Studio in a virtualenv of its own and a headless chromium. Their
# installs may fail (no registry, no apt-get); the tests that need them then skip and say why.
test: $(STAMP) data
	-bash scripts/ensure-label-studio.sh $(PYTHON) >/dev/null
	-bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -q

bench: $(STAMP) data
	$(BIN)/python benchmarks/round_time.py

clean:
	rm -rf $(VENV) results .pytest_cache
