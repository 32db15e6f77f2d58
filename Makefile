# mmsearch — every target creates/uses its own virtual environment in .venv.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test venv venv-demo system-deps lint-imports proto bench images lint-chart clean

## demo: build the demo index (first run) and start preprocess, serving and web on localhost
demo: venv-demo
	$(VENV)/bin/mmsearch demo

## test: install everything (apt packages included), check the import contract, run the whole test suite
test: venv system-deps lint-imports
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# pip -qq: errors only (a fresh install prints nothing but what went wrong).
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -qq --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -qq -e '.[dev]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -qq -e '.[test]'
	touch $@ $(VENV)/.demo-installed

## lint-imports: the import contract of pyproject.toml (core imports nothing above it; services, jobs and
## the operator never import each other; product code never imports tests; no torch online)
lint-imports: venv
	$(VENV)/bin/lint-imports --no-cache

venv-demo: $(VENV)/.demo-installed
venv: $(VENV)/.test-installed

## system-deps: Debian packages the tests need (headless Chromium and its driver)
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

## proto: regenerate the gRPC stubs in mmsearch/v1 from proto/
proto: venv
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/mmsearch/v1/*.proto

## bench: run the benchmarks (figures and ratios, not tests)
bench: venv
	for b in bench/*.py; do $(PY) $$b || exit 1; done

## images: build the container images (docker/): services (preprocess, serving, web, operator) and the job runners
IMAGE_REPO ?= ghcr.io/mmsearch
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
CONTAINER_ENGINE ?= docker
images:
	$(CONTAINER_ENGINE) build -f docker/Dockerfile --target services -t $(IMAGE_REPO)/mmsearch:$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build -f docker/Dockerfile --target operator -t $(IMAGE_REPO)/mmsearch-operator:$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build -f docker/jobs.Dockerfile --target jobs -t $(IMAGE_REPO)/mmsearch-jobs:$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build -f docker/jobs.Dockerfile --target jobs-export -t $(IMAGE_REPO)/mmsearch-jobs-export:$(IMAGE_TAG) .

clean:
	rm -rf $(VENV) .pytest_cache data
