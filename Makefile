# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
EDGE   := .venv-edge
PIP    := $(VENV)/bin/python -m pip
EPIP   := $(EDGE)/bin/python -m pip
CONFIG ?= configs/mnist5k_vgg.yaml
RUN    ?= runs/demo

.PHONY: demo test test-host test-edge bench edge-fixtures clean

# Host environment: TensorFlow, tf_keras, tfmot, keras-tuner (pinned by constraints.txt).
$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

# Device-shaped environment: tflite-runtime + numpy<2, no TensorFlow (a Raspberry Pi install).
$(EDGE)/.installed: requirements-edge.txt constraints-edge.txt setup.cfg
	test -d $(EDGE) || $(PYTHON) -m venv $(EDGE)
	$(EPIP) install -q --upgrade pip
	$(EPIP) install -q -c constraints-edge.txt -r requirements-edge.txt pytest
	$(EPIP) install -q --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/shifter-tf run --config $(CONFIG) --out $(RUN)

test: test-host test-edge

test-host: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q tests --ignore=tests/edge

test-edge: $(EDGE)/.installed
	$(EDGE)/bin/python -m pytest -q tests/edge

# Regenerate the small .tflite fixtures the edge tests use (needs the host environment).
edge-fixtures: $(VENV)/.installed
	$(VENV)/bin/python tools/make_edge_fixtures.py

bench: $(VENV)/.installed $(EDGE)/.installed
	$(VENV)/bin/python tools/bench_all.py --out bench --run $(RUN)

clean:
	rm -rf $(VENV) $(EDGE) *.egg-info .pytest_cache
