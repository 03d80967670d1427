#!/usr/bin/env bash
# On a host with an NVIDIA GPU and the CUDA 13 libraries: builds with `--features cuda`, runs the
# tests that need a CUDA device (kernels vs their CPU ops), the benches on the GPU, and the
# ptxas report, and writes everything to reports/gpu-check/<date>/. Needs nvcc (CUDA_HOME or
# scripts/setup.sh --cuda) and the real libraries on the loader path, not the stubs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -f .cache/cuda/env.sh ]; then
  # shellcheck disable=SC1091
  source .cache/cuda/env.sh
fi
if [ -d .cache/cuda/nvidia/cu13/lib/stubs ]; then
  echo "gpu-check: error: .cache/cuda holds link-time stubs (made on a machine without CUDA" \
       "libraries); rerun scripts/setup.sh --cuda on this host" >&2
  exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
out="reports/gpu-check/$(date -u +%Y-%m-%d)"
mkdir -p "$out"
export CARGO_TARGET_DIR=target/cuda
{
  echo "# GPU check $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true
  echo "## ignored tests (requires a CUDA device)"
  cargo test --release --features cuda -- --ignored 2>&1
  echo "## ptxas"
  bash scripts/ptxas-report.sh 2>&1
  echo "## benches (device-prefixed names; the GPU groups arrive with the performance work)"
  cargo bench --features cuda 2>&1
} | tee "$out/report.txt"
echo "gpu-check: report in $out/report.txt"
