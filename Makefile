# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
EDGE   := .venv-edge
PIP    := $(VENV)/bin/python -m pip
EPIP   := $(EDGE)/bin/python -m pip
EDGEL  := .venv-edge-litert
MCT    := .venv-mct
TASKLIB := .venv-tasklib
TASKLIB_PYTHON ?= $(PYTHON)
CONFIG ?= configs/mnist5k_vgg.yaml
RUN    ?= runs/demo

.PHONY: demo test test-host test-edge test-devices test-tasklib bench edge-fixtures clean

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

# The same with ai-edge-litert, tflite-runtime's successor (numpy 2; the only interpreter wheel
# for Python >= 3.12): tests/edge runs against both.
$(EDGEL)/.installed: requirements-edge-litert.txt constraints-edge-litert.txt setup.cfg
	test -d $(EDGEL) || $(PYTHON) -m venv $(EDGEL)
	$(EDGEL)/bin/python -m pip install -q --upgrade pip
	$(EDGEL)/bin/python -m pip install -q -c constraints-edge-litert.txt \
		-r requirements-edge-litert.txt pytest
	$(EDGEL)/bin/python -m pip install -q --no-deps -e .
	touch $@

# Benchmark-only environment for Sony's model-compression-toolkit (tools.bench.mct): MCT 2.6.1
# needs TensorFlow 2.15 / Keras 2 / numpy 1 (constraints-mct.txt). Never used by demo or test.
$(MCT)/.installed: constraints-mct.txt
	test -d $(MCT) || $(PYTHON) -m venv $(MCT)
	$(MCT)/bin/python -m pip install -q --upgrade pip
	$(MCT)/bin/python -m pip install -q -c constraints-mct.txt tensorflow keras numpy \
		mct-quantizers model-compression-toolkit
	touch $@

# Test-only environment for Android's Task Library (tests/test_task_library.py): tflite-support
# 0.4.4 (its last release: Python <= 3.11) cannot share an environment with TensorFlow 2.21
# (protobuf < 4 vs >= 6.31), and its native code needs libusb-1.0 (apt-get installs it as root).
$(TASKLIB)/.installed: constraints-tasklib.txt
	@$(TASKLIB_PYTHON) -c 'import sys; sys.exit(sys.version_info >= (3, 12))' || { echo \
	  "tflite-support 0.4.4 needs Python <= 3.11: make TASKLIB_PYTHON=python3.11"; exit 1; }
	@$(TASKLIB_PYTHON) -c 'import ctypes.util as u, sys; sys.exit(not u.find_library("usb-1.0"))' \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	       { apt-get install -y -q libusb-1.0-0 || { apt-get update -q && \
	         apt-get install -y -q libusb-1.0-0; }; }; } \
	  || { echo "tflite-support needs libusb-1.0: sudo apt-get install libusb-1.0-0"; exit 1; }
	test -d $(TASKLIB) || $(TASKLIB_PYTHON) -m venv $(TASKLIB)
	$(TASKLIB)/bin/python -m pip install -q --upgrade pip
	$(TASKLIB)/bin/python -m pip install -q -c constraints-tasklib.txt tflite-support numpy
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/shifter-tf run --config $(CONFIG) --out $(RUN)

test: test-host test-edge

# The host suite includes tests/test_task_library.py, which needs $(TASKLIB) (created here).
test-host: $(VENV)/.installed $(TASKLIB)/.installed
	SHIFTER_TF_REQUIRE_TASKLIB=1 $(VENV)/bin/python -m pytest -q tests --ignore=tests/edge

# Only the Task Library test: exported files opened by tflite-support's ImageClassifier.
test-tasklib: $(VENV)/.installed $(TASKLIB)/.installed
	SHIFTER_TF_REQUIRE_TASKLIB=1 $(VENV)/bin/python -m pytest -q tests/test_task_library.py

# tests/edge against each TFLite runtime, TensorFlow-free (EDGE_RUNTIME_BACKEND: no silent fallback).
test-edge: $(EDGE)/.installed $(EDGEL)/.installed
	EDGE_RUNTIME_BACKEND=tflite_runtime $(EDGE)/bin/python -m pytest -q tests/edge
	EDGE_RUNTIME_BACKEND=ai_edge_litert $(EDGEL)/bin/python -m pytest -q tests/edge

# tests/edge on aarch64 (tflite-runtime, ai-edge-litert) and armv7l (tflite-runtime) userlands
# under qemu user-mode emulation (Debian bookworm + PyPI wheels; needs root; the root
# filesystems, wheels and venvs are cached in $${SHIFTER_DEVICES_CACHE:-/var/cache/shifter-tf-devices}).
# Targets: make test-devices DEVICES="aarch64-tflite armv7l-tflite".
test-devices:
	tools/devices/test-devices.sh $(DEVICES)

# Regenerate the small .tflite fixtures the edge tests use (needs the host environment).
edge-fixtures: $(VENV)/.installed
	$(VENV)/bin/python -m tools.edge_fixtures

# The benchmark suite (tools/bench/): bench/results.json, RESULTS.md, PARETO.md, plots.
bench: $(VENV)/.installed $(EDGE)/.installed $(MCT)/.installed fashion-mnist
	$(VENV)/bin/python -m tools.bench.all --out bench --run $(RUN)

# Fashion-MNIST for the per-architecture benchmark (tools.bench.archs): Debian's package, which
# puts the four original .gz files in /usr/share/datasets/fashion-mnist/; installed where we are
# root, else one line on how to get it (the Fashion-MNIST rows are then left out).
FASHION := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
.PHONY: fashion-mnist
fashion-mnist:
	@if [ -e $(FASHION) ]; then :; \
	elif [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	else echo "bench: no Fashion-MNIST: 'sudo apt-get install dataset-fashion-mnist' (Debian," \
		"Ubuntu), or its 4 .gz files in DIR/datasets/fashion-mnist/ with data.path: DIR;" \
		"its rows of ARCHS.md are left out"; fi

# The MCT peer alone: export RUN's dense model and the data split, prune/fine-tune/convert
# (resumable; minutes per target) into bench/mct/.
.PHONY: bench-mct
bench-mct: $(VENV)/.installed $(MCT)/.installed
	$(VENV)/bin/python -m tools.bench.export_data --run $(RUN) --config $(CONFIG) \
		--out bench/mct_data.npz
	$(MCT)/bin/python -m tools.bench.mct --data bench/mct_data.npz --out bench

# On-demand study, not part of `make bench`: does rounding kept channels up to multiples of 4 or 8
# buy XNNPACK latency? Writes bench/raw/simd.json, then re-renders PARETO.md (and RESULTS.md).
.PHONY: bench-simd
bench-simd: $(VENV)/.installed
	$(VENV)/bin/python -m tools.studies.simd --run $(RUN) --out bench
	$(VENV)/bin/python -m tools.bench.report --out bench --render-only

clean:
	rm -rf $(VENV) $(EDGE) $(EDGEL) $(MCT) $(TASKLIB) *.egg-info .pytest_cache
