#!/bin/sh
# Slim an installed virtual environment before it is copied into an image (run in the build
# stages of docker/*Dockerfile): the test suites that packages ship inside themselves
# (pandas/tests alone is 40 MB) and pip itself go; nothing the code imports.
set -eu
venv="$1"
site=$(echo "$venv"/lib/python3*/site-packages)
[ -d "$site" ] || { echo "slim_venv.sh: no site-packages under $venv" >&2; exit 2; }
# Only folders inside a package (depth >= 2): a top-level distribution is never removed here.
find "$site" -mindepth 2 -type d -name tests -prune -exec rm -rf {} +
find "$site" -type d -name __pycache__ -prune -exec rm -rf {} +
"$venv/bin/python" -m pip uninstall --yes --quiet pip
