# syntax=docker/dockerfile:1.7
# The offline job runner (`mmsearch job <stage>`), run by the operator's Jobs.
#   target `jobs`:        prepare, encode, push-milvus, push-mongo, publish;
#                         onnxruntime-gpu (CUDA and cuDNN from their PyPI wheels), no torch.
#   target `jobs-export`: the same plus the `export` extra (torch, transformers) for
#                         `mmsearch job export`, the only stage that needs torch.
# Pinned by docker/constraints.txt. Build from the repository root: `make images`.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/src/docker/constraints.txt \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/mmsearch
COPY docker/constraints.txt docker/constraints.txt
COPY pyproject.toml README.md ./
COPY mmsearch mmsearch
COPY services services
COPY jobs jobs
COPY operator operator
# onnxruntime and onnxruntime-gpu install the same module: keep only the GPU build
# (it falls back to the CPU provider where no GPU is visible).
RUN /opt/mmsearch/bin/pip install --no-cache-dir ".[jobs]" \
 && /opt/mmsearch/bin/pip uninstall --yes onnxruntime \
 && /opt/mmsearch/bin/pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]"

FROM build AS build-export
# Optional: an extra index with CPU-only torch wheels (PyPI's Linux torch is the CUDA
# build, which export does not need). pip reads it from the environment.
ARG PIP_EXTRA_INDEX_URL=""
RUN /opt/mmsearch/bin/pip install --no-cache-dir ".[export]" \
 && /opt/mmsearch/bin/pip uninstall --yes onnxruntime \
 && /opt/mmsearch/bin/pip install --no-cache-dir --force-reinstall --no-deps onnxruntime-gpu

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/mmsearch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MMSEARCH_CACHE_DIR=/var/cache/mmsearch
RUN groupadd --system --gid 10001 mmsearch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mmsearch
USER 10001:10001
ENTRYPOINT ["mmsearch", "job"]
CMD ["--help"]

FROM runtime AS jobs
LABEL org.opencontainers.image.title="mmsearch-jobs" \
      org.opencontainers.image.description="mmsearch offline indexing stages (onnxruntime-gpu, no torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/mmsearch /opt/mmsearch

FROM runtime AS jobs-export
LABEL org.opencontainers.image.title="mmsearch-jobs-export" \
      org.opencontainers.image.description="mmsearch offline indexing stages with the ONNX export (torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build-export /opt/mmsearch /opt/mmsearch
