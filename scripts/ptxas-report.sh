#!/usr/bin/env bash
# Resource usage of every kernel in kernels/*.cu as ptxas reports it (registers, shared memory,
# spills) for sm_80 and sm_90. Exit status 1 when any kernel spills. Needs nvcc and ptxas on
# PATH (scripts/setup.sh --cuda, then source .cache/cuda/env.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
spills=0
for cu in kernels/*.cu; do
  stem="$(basename "$cu" .cu)"
  nvcc --ptx -O3 -std=c++17 -Ikernels -arch=compute_80 "$cu" -o "$tmp/$stem.ptx"
  for sm in 80 90; do
    ptxas -v -arch="sm_$sm" "$tmp/$stem.ptx" -o /dev/null 2>"$tmp/$stem.$sm.log"
    # One line per kernel: name, registers, shared memory, spill stores and loads.
    awk -v sm="$sm" '
      /Compiling entry function/ { match($0, /\047[^\047]+\047/); name = substr($0, RSTART + 1, RLENGTH - 2) }
      /spill stores/ { split($0, a, ","); st = a[2]; ld = a[3]; gsub(/^ +| spill (stores|loads)/, "", st); gsub(/^ +| spill (stores|loads)/, "", ld) }
      /Used [0-9]+ registers/ {
        match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART + 5, RLENGTH - 15)
        smem = "0 bytes"; if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 5)
        printf "sm_%s  %-20s registers %3s  smem %-12s spill stores %-9s loads %s\n", sm, name, regs, smem, st, ld
      }' "$tmp/$stem.$sm.log"
    if grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$tmp/$stem.$sm.log" >/dev/null; then
      echo "ptxas: $stem spills registers on sm_$sm" >&2
      spills=1
    fi
  done
done
exit "$spills"
