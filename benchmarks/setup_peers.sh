#!/usr/bin/env bash
# Separate venvs for the peers we compare against, with the pins that make them run on
# this stack (shared/research/peers-measured.md): clip-retrieval needs setuptools<81 and the
# torchvision shim as sitecustomize; autofaiss needs numpy<2 and pyarrow 19.
set -euo pipefail
dest="${1:-bench-out}"
mkdir -p "$dest"
shim="$(cd "$(dirname "$0")/.." && pwd)/curator/_torchvision_shim.py"
if [ ! -x "$dest/venv-clip-retrieval/bin/clip-retrieval" ]; then
  python3 -m venv "$dest/venv-clip-retrieval"
  "$dest/venv-clip-retrieval/bin/pip" install -q "clip-retrieval==2.45.0" "torch==2.13.0" "setuptools<81"
  site=$("$dest/venv-clip-retrieval/bin/python" -c "import site; print(site.getsitepackages()[0])")
  { cat "$shim"; echo; echo "import_torchvision()"; } > "$site/sitecustomize.py"
fi
if [ ! -x "$dest/venv-autofaiss/bin/python" ]; then
  python3 -m venv "$dest/venv-autofaiss"
  "$dest/venv-autofaiss/bin/pip" install -q "autofaiss==2.18.0" "pyarrow==19.0.1" "faiss-cpu==1.15.1"
fi
echo "peers ready in $dest"
