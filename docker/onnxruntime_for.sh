#!/bin/sh
# Keep the onnxruntime build a job image is for (run in docker/jobs.Dockerfile's build stages).
#   onnxruntime_for.sh cpu VENV   onnxruntime, as pyproject.toml installs it
#   onnxruntime_for.sh gpu VENV   onnxruntime-gpu with CUDA and cuDNN from their PyPI wheels
# Both distributions install the same `onnxruntime` module, so the CPU one is removed
# first; the check at the end fails the build if the module does not import.
set -eu
device="$1"
venv="$2"
case "$device" in
  cpu) ;;
  gpu)
    "$venv/bin/python" -m pip uninstall --yes --quiet onnxruntime
    "$venv/bin/python" -m pip install --no-cache-dir --quiet "onnxruntime-gpu[cuda,cudnn]"
    ;;
  *) echo "DEVICE must be cpu or gpu, not '$device' (docker build --build-arg DEVICE=cpu|gpu)" >&2; exit 2 ;;
esac
"$venv/bin/python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
