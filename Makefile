# mmsearch — every target creates/uses its own virtual environment in .venv.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# make test runs the suite on this many pytest-xdist processes: much of it waits on servers it starts
TEST_WORKERS ?= 2

.PHONY: demo docs test test-images venv venv-demo system-deps lint-imports proto bench base-image images push-images lint-chart clean

## demo: build the demo index (first run) and start preprocess, serving and web on localhost
demo: venv-demo
	$(VENV)/bin/mmsearch demo

## test: install everything (apt packages included), check the import contract, run the whole test suite
## (the image tests included: here they must run, MMSEARCH_IMAGE_TESTS=required turns their skips into failures)
test: venv system-deps lint-imports
	@set +e; MMSEARCH_IMAGE_TESTS=required $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

## test-images: only the image tests (tests/images: build the images, run them as the chart does)
test-images: venv system-deps
	MMSEARCH_IMAGE_TESTS=required $(PY) -m pytest tests/images $(PYTEST_ARGS)

# pip -qq: errors only (a fresh install prints nothing but what went wrong).
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -qq --upgrade pip

# -c docker/constraints.txt: the versions the images pin (docker/freeze_constraints.py reproduces them).
$(VENV)/.demo-installed: pyproject.toml docker/constraints.txt | $(VENV)/bin/python
	$(PIP) install -qq -c docker/constraints.txt -e '.[dev]'
	touch $@

$(VENV)/.test-installed: pyproject.toml docker/constraints.txt | $(VENV)/bin/python
	$(PIP) install -qq -c docker/constraints.txt -e '.[test]'
	touch $@ $(VENV)/.demo-installed

## lint-imports: the import contract of pyproject.toml (core imports nothing above it; services, jobs and
## the operator never import each other; product code never imports tests; no torch online)
lint-imports: venv
	$(VENV)/bin/lint-imports --no-cache

venv-demo: $(VENV)/.demo-installed
venv: $(VENV)/.test-installed

## system-deps: Debian packages the tests need (headless Chromium and its driver; buildah, podman and
## debootstrap to build and run the images without a Docker engine; tesseract, the OCR engine measured
## beside rapidocr; photographs with captions and fonts for the image set, installed, never committed)
SYSTEM_COMMANDS := chromium chromedriver buildah podman debootstrap tesseract
SYSTEM_FILES := /usr/share/tuxpaint/stamps /usr/share/tesseract-ocr/5/tessdata/eng.traineddata \
  /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf
SYSTEM_PACKAGES := chromium chromium-driver buildah podman debootstrap tesseract-ocr tesseract-ocr-eng \
  tuxpaint-stamps-default fonts-dejavu-core fonts-liberation
system-deps:
	@missing=; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || missing=1; done; \
	for f in $(SYSTEM_FILES); do [ -e $$f ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi

## proto: regenerate the gRPC stubs in mmsearch/v1 from proto/
proto: venv
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/mmsearch/v1/*.proto

## bench: run the benchmarks (figures and ratios, not tests)
bench: venv
	for b in bench/*.py; do $(PY) $$b || exit 1; done

## base-image: the local Debian bookworm base (debootstrap + podman import), reused while it exists
## images: build every image (docker/images.py) with docker, podman or buildah (CONTAINER_ENGINE to choose):
##   services, operator, jobs-cpu, and the large ones (jobs: onnxruntime-gpu + CUDA, jobs-export: torch)
## push-images: push them to IMAGE_REPO
IMAGE_REPO ?= ghcr.io/mmsearch
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGES ?=
export IMAGE_REPO IMAGE_TAG CONTAINER_ENGINE PYTHON_IMAGE STORAGE_DRIVER DEBIAN_MIRROR
base-image:
	$(PYTHON) docker/images.py base
images:
	$(PYTHON) docker/images.py build $(IMAGES)
push-images:
	$(PYTHON) docker/images.py push $(IMAGES)

clean:
	rm -rf $(VENV) .pytest_cache data

## docs: regenerate docs/configuration.md (every MMSEARCH_* variable) from the settings classes and job options, and docs/openapi.json
docs: venv
	$(PY) -m mmsearch.dev.configuration_doc
	$(PY) -m mmsearch.dev.openapi_doc
