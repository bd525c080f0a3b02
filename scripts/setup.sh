#!/usr/bin/env bash
# Set up the heartseg environment in ./.venv (idempotent). Usage: bash scripts/setup.sh [--browser]
#   --browser  also install Debian's chromium for the browser test (needs root / apt).
# torch is pinned first so the CPU build on this machine's disk is used and no CUDA wheels are pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ "${1:-}" == "--browser" ]] && ! [ -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q "torch==${HEARTSEG_TORCH:-2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
# setuptools prints a "BuildBackendWarning: Editable installation" block for every editable install: advice about
# same-named folders, not an error; it is dropped here so a first setup ends without a wall of warnings
.venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" \
  | sed '/BuildBackendWarning: Editable installation/,/with strategy, WheelFile/d' || true
.venv/bin/python -c "import torch, monai, heartseg_utils; print('heartseg ready: torch', torch.__version__, '| monai', monai.__version__)"
