#!/bin/sh
# Swap opencv-python for opencv-python-headless in VENV (run in docker/jobs.Dockerfile's build stages,
# after the `media` extra is installed). rapidocr-onnxruntime requires opencv-python, whose `cv2` links
# Qt and needs libGL and GLib at import, which the images do not carry; the headless wheel installs the
# same `cv2` module, at the same version (docker/constraints.txt pins both), without them. Its wheel
# comes from the wheelhouse /wheels when there is one (put there first if it lacks it), as in
# docker/pip_install.sh. The check at the end fails the build if OCR's imports fail.
#   opencv_headless.sh VENV
set -eu
venv="$1"
house=/wheels
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@"; }
pip uninstall --yes --quiet opencv-python
if [ ! -d "$house" ]; then
  pip install --no-cache-dir --no-deps opencv-python-headless
elif ! pip install --no-cache-dir --no-deps --no-index --find-links "$house" opencv-python-headless >/dev/null 2>&1; then
  pip wheel --no-cache-dir --quiet --no-deps --wheel-dir "$house" opencv-python-headless
  pip install --no-cache-dir --no-deps --no-index --find-links "$house" opencv-python-headless
fi
"$venv/bin/python" -c "import cv2, rapidocr_onnxruntime, av; print('opencv', cv2.__version__, 'av', av.__version__)"
