# syntax=docker/dockerfile:1.7
# The offline job runner (`mmsearch job <stage>`), run by the operator's Jobs.
#   target `jobs`:        prepare, encode, push-milvus, push-mongo, publish; no torch. With the `media`
#                         extra: prepare's OCR (rapidocr, its models inside the wheel) and video frames
#                         (PyAV), opencv headless (docker/opencv_headless.sh: no libGL needed).
#                         DEVICE=gpu (default): onnxruntime-gpu, CUDA and cuDNN from their PyPI
#                         wheels (several GB); DEVICE=cpu: onnxruntime (the CPU job runner).
#   target `jobs-export`: the same plus the `export` extra (torch, transformers) for
#                         `mmsearch job export`, the only stage that needs torch.
# Pinned by docker/constraints.txt. Build from the repository root: `make images`
# (docker/images.py; PYTHON_IMAGE is the base: a Debian bookworm image with Python 3.11 and venv).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/src/docker/constraints.txt \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/mmsearch
COPY docker/constraints.txt docker/constraints.txt
COPY docker/pip_install.sh docker/slim_venv.sh docker/onnxruntime_for.sh docker/opencv_headless.sh docker/
COPY pyproject.toml README.md ./
COPY mmsearch mmsearch
COPY services services
COPY jobs jobs
COPY operator operator

# The wheels come from a wheelhouse in a build cache mount (docker/pip_install.sh): it
# never reaches an image (and only /opt/mmsearch leaves these stages). onnxruntime and onnxruntime-gpu install the same module:
# docker/onnxruntime_for.sh keeps the one DEVICE asks for.
FROM build AS build-jobs
ARG DEVICE=gpu
RUN --mount=type=cache,id=mmsearch-wheels,target=/wheels,sharing=locked \
    sh docker/pip_install.sh /opt/mmsearch jobs,media \
 && sh docker/opencv_headless.sh /opt/mmsearch \
 && sh docker/onnxruntime_for.sh "$DEVICE" /opt/mmsearch \
 && sh docker/slim_venv.sh /opt/mmsearch

FROM build AS build-export
ARG DEVICE=gpu
# Optional: an extra index with CPU-only torch wheels (PyPI's Linux torch is the CUDA
# build, which export does not need). pip reads it from the environment.
ARG PIP_EXTRA_INDEX_URL=""
RUN --mount=type=cache,id=mmsearch-wheels,target=/wheels,sharing=locked \
    sh docker/pip_install.sh /opt/mmsearch export,media \
 && sh docker/opencv_headless.sh /opt/mmsearch \
 && sh docker/onnxruntime_for.sh "$DEVICE" /opt/mmsearch \
 && sh docker/slim_venv.sh /opt/mmsearch

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/mmsearch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MMSEARCH_CACHE_DIR=/var/cache/mmsearch
RUN groupadd --system --gid 10001 mmsearch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mmsearch \
 && install -d -o 10001 -g 10001 -m 0750 /var/cache/mmsearch
USER 10001:10001
ENTRYPOINT ["mmsearch", "job"]
CMD ["--help"]

FROM runtime AS jobs
LABEL org.opencontainers.image.title="mmsearch-jobs" \
      org.opencontainers.image.description="mmsearch offline indexing stages (onnxruntime, no torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build-jobs /opt/mmsearch /opt/mmsearch

FROM runtime AS jobs-export
LABEL org.opencontainers.image.title="mmsearch-jobs-export" \
      org.opencontainers.image.description="mmsearch offline indexing stages with the ONNX export (torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build-export /opt/mmsearch /opt/mmsearch
