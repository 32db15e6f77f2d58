#!/bin/sh
# Install ".[EXTRA]" of the project in the current folder into VENV (run in the build stages of
# docker/*Dockerfile), with wheels from the wheelhouse /wheels: a build cache mount shared by every
# image build (buildah/podman keep it in .cache/images/tmp of the checkout); it never reaches an image.
#   pip_install.sh VENV EXTRA      (EXTRA may name several: jobs,media)
# Resolving against the package index costs about 45 s per image here even when every file is
# cached (pip's own HTTP cache stays empty behind our registry proxy), so when the wheelhouse holds
# every wheel the install runs with --no-index, in seconds. Otherwise the wheels of EXTRA and of
# every CPU role (services, operator, jobs and its media: one resolution for all the images) are put there first.
# PIP_CONSTRAINT (docker/constraints.txt) pins every version either way.
set -eu
venv="$1"
extra="$2"
house=/wheels
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@"; }
if [ ! -d "$house" ]; then
  pip install --no-cache-dir ".[$extra]"   # built without the cache mount
  exit 0
fi
if pip install --no-cache-dir --no-index --find-links "$house" ".[$extra]" >/tmp/pip-wheelhouse.log 2>&1; then
  echo "pip_install.sh: .[$extra] installed from the wheelhouse"
  exit 0
fi
echo "pip_install.sh: the wheelhouse lacks wheels for .[$extra]: filling it"
pip wheel --no-cache-dir --quiet --wheel-dir "$house" ".[$extra,services,operator,jobs,media]" "setuptools>=77,<81" wheel \
  opencv-python-headless   # the job images' cv2 (docker/opencv_headless.sh)
rm -f "$house"/mmsearch-*.whl   # the project itself is always built from the sources
pip install --no-cache-dir --no-index --find-links "$house" ".[$extra]"
