#!/usr/bin/env bash
# One install path for the Makefile, CI and the Docker images.
#   scripts/install.sh [VENV] [EXTRAS]     e.g. scripts/install.sh .venv cpu,ingest,ray,postgres,test (gpu instead of cpu on CUDA 12)
# torch is pinned to 2.13.0 in pyproject.toml. On a machine whose pip cannot see a local CPU
# wheel, set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu for a small CPU build.
set -euo pipefail
venv="${1:-.venv}"
extras="${2:-cpu,ingest,ray,postgres,test}"
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[$extras]"
"$venv/bin/python" -c "import curator, index_builder; from curator.encoders import create_encoder" \
  || { echo "install check failed" >&2; exit 1; }
