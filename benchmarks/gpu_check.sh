#!/usr/bin/env bash
# The GPU check (issue 22), from the repository root on a CUDA machine with torch, transformers
# and tokenizers preinstalled: installs clozeformer without dependencies, then prints one
# markdown table (benchmarks/gpu_check.py; `--dry-run` runs the same code on CPU with tiny shapes).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --no-deps -e . >/dev/null
exec python benchmarks/gpu_check.py "$@"
