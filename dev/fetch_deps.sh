#!/usr/bin/env bash
# dev/fetch_deps.sh: on a machine with PyPI, fetch what a GPU session without network needs, into ignored folders that
# travel with the tree (the device's `carry`):
#   dev/deps/cudnn_frontend/include   cudnn-frontend's C++ headers (PyPI nvidia-cudnn-frontend: the wheel ships them
#                                     under include/), for cuDNN's attention; dev/gpu_check.sh points
#                                     CUDNN_FRONTEND_PATH at it (~3 MB)
#   dev/wheels/                       diffusers (no dependencies: the device image has torch, transformers,
#                                     safetensors and their dependencies) for tier 2's forward comparison (~4 MB)
# cudnn-frontend is a dependency, not part of the repository: nothing here is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps -d "$tmp" nvidia-cudnn-frontend
whl=$(ls "$tmp"/nvidia_cudnn_frontend-*.whl | head -1)
rm -rf dev/deps/cudnn_frontend; mkdir -p dev/deps/cudnn_frontend
python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if n.startswith('include/')]" "$whl" dev/deps/cudnn_frontend
test -f dev/deps/cudnn_frontend/include/cudnn_frontend.h || { echo "error: $whl has no include/cudnn_frontend.h" >&2; exit 1; }
echo "dev/deps/cudnn_frontend/include: cudnn-frontend $(basename "$whl" | cut -d- -f2) headers ($(du -sh dev/deps/cudnn_frontend | cut -f1))"
mkdir -p dev/wheels
python3 -m pip download -q --no-deps -d dev/wheels diffusers
echo "dev/wheels: $(ls dev/wheels | tr '\n' ' ')"
echo "carry to the device: dev/deps dev/wheels"
