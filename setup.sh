#!/usr/bin/env bash
# Create .venv with the pinned stack and this repository's packages installed editable (config,
# data, model, demo importable from anywhere); idempotent: a finished install is not repeated.
set -euo pipefail
cd "$(dirname "$0")"
stamp=.venv/.installed-$(cat requirements*.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt -r requirements-dev.txt
.venv/bin/pip install -q --no-deps -r requirements-nodeps.txt
# the venv's own setuptools builds it (no download); edits to the source need no reinstall
.venv/bin/pip install -q --no-deps --no-build-isolation -e .
rm -f .venv/.installed-*
touch "$stamp"
