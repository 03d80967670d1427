#!/usr/bin/env bash
# Times tremble's classifier against ONNX Runtime (and, with --torch, PyTorch) on the same model,
# the same inputs and the same thread count, in one run: scores must agree first, then latency
# (batch 1 x 64 and 1 x 128 tokens) and throughput (batch 32 x 128) are measured back to back.
# The report goes to stdout; its last two lines are the throughput ratios tremble/onnxruntime.
#
#   scripts/compare-peers.sh [--quick] [--threads N] [--repeats N] [--torch] [--paths fp32,...]
#
# Makes its own Python environment in .cache/peers-venv (onnxruntime, onnx, numpy, safetensors
# from PyPI; torch only with --torch, a download of several GB), builds
# examples/peer_harness.rs, and runs scripts/compare_peers.py (its options follow in --help).
# Needs the models scripts/setup.sh fetches.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

torch=0
model_given=0
for arg in "$@"; do
  case "$arg" in
    --torch) torch=1 ;;
    --model|--model=*) model_given=1 ;;
    -h|--help)
      sed -n '2,11p' scripts/compare-peers.sh | sed 's/^# \{0,1\}//'
      echo
      python3 scripts/compare_peers.py --help
      exit 0 ;;
  esac
done

for tool in cargo python3; do
  command -v "$tool" >/dev/null || { echo "compare-peers: error: $tool is required but not on PATH" >&2; exit 1; }
done
# Before any download: the default model's files (compare_peers.py checks any --model DIR).
if [ "$model_given" = 0 ] && { [ ! -f models/tremble-minilm-v1/tremble.json ] ||
    [ ! -f models/all-MiniLM-L6-v2/model.safetensors ]; }; then
  echo "compare-peers: error: models not fetched: run scripts/setup.sh" >&2
  exit 1
fi

venv=.cache/peers-venv
py="$venv/bin/python"
if [ ! -x "$py" ]; then
  echo "compare-peers: creating $venv" >&2
  python3 -m venv "$venv" || { echo "compare-peers: error: python3 -m venv failed (install python3-venv)" >&2; exit 1; }
fi
# Everything but the report goes to stderr, so stdout ends with the two ratio lines.
if ! "$py" -c "import onnxruntime, onnx, numpy, safetensors" 2>/dev/null; then
  echo "compare-peers: installing onnxruntime, onnx, numpy, safetensors into $venv" >&2
  "$py" -m pip install -q --upgrade pip >&2
  "$py" -m pip install -q onnxruntime onnx numpy safetensors >&2
fi
if [ "$torch" = 1 ] && ! "$py" -c "import torch" 2>/dev/null; then
  echo "compare-peers: installing torch into $venv (several GB)" >&2
  "$py" -m pip install -q torch >&2
fi

cargo build --release --example peer_harness >&2
harness="${CARGO_TARGET_DIR:-target}/release/examples/peer_harness"
exec "$py" scripts/compare_peers.py --harness "$harness" "$@"
