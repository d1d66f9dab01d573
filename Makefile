# stackmesh: `make run` starts the whole mesh, `make test` runs the whole suite.
# Both install what is missing first; every install step lives here.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.stamp-install
# llama.cpp is compiled from source once (~11 min on 2 cores) into .wheels/ and reused.
# GGML_NATIVE=OFF: a portable AVX2 build. A -march=native build uses AMX/AVX-512 paths that this
# kind of VM advertises but kills with SIGILL.
LLAMA_VERSION := 0.3.36
LLAMA_WHEEL_DIR := .wheels

.PHONY: install protos run test test-unit bench deploy-test deploy-check tools clean help

help:
	@echo "make run    - install what is missing, then start registry + services + gateway"
	@echo "make test   - install what is missing, then run the whole test suite"
	@echo "make bench  - run the benchmarks in bench/"
	@echo "make deploy-test  - a real docker compose run: engine, images, up, chat, embed, scale, down"
	@echo "make deploy-check - validate the compose file and the Kubernetes manifests (no Docker)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(LLAMA_WHEEL_DIR)/.built: | $(VENV)/bin/python
	mkdir -p $(LLAMA_WHEEL_DIR)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
		-w $(LLAMA_WHEEL_DIR) "llama-cpp-python==$(LLAMA_VERSION)"
	touch $@

# torch first and pinned: an unpinned torch (pulled by sentence-transformers) is a multi-GB CUDA build.
$(STAMP): pyproject.toml $(LLAMA_WHEEL_DIR)/.built | $(VENV)/bin/python
	$(PIP) install "torch==2.13.0"
	$(PIP) install --find-links $(LLAMA_WHEEL_DIR) -e ".[build,inference,vector_io,tool_runtime,datasetio,post_training,test]"
	# CodeShield runs semgrep's standalone binary; its Python deps would downgrade protobuf (see pyproject).
	$(PIP) install --no-deps "semgrep==1.100.0" "codeshield==1.0.1"
	touch $@

install: $(STAMP) protos tools

# Generated code lands in stackmesh/<api>/v1/ (package == proto package); always regenerated: cheap.
protos: $(STAMP)
	$(PY) scripts/gen_protos.py

tools:
	@sh scripts/ensure_tools.sh

run: install
	$(VENV)/bin/stackmesh run $(CONFIG)

test: install
	$(PY) -m pytest -q -rA tests

test-unit: install
	$(PY) -m pytest -q tests/unit

bench: install
	$(PY) bench/run_all.py

deploy-test: install
	bash scripts/deploy_test.sh

deploy-check: install
	$(PY) -m pytest -q tests/integration/test_deploy_files.py

clean:
	rm -rf $(VENV) $(LLAMA_WHEEL_DIR) build *.egg-info
	find stackmesh -path '*/v1' -type d -prune -exec rm -rf {} +
