#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 60: the CI smoke run; use 1800 for
# the documented long run), starting from the committed seeds. Installs cargo-fuzz from
# crates.io when it is missing. Targets build without a sanitizer, so this runs on the stable
# toolchain; a crash leaves its input under fuzz/artifacts/<target>/ and fails the script.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(normalize window records manifest)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build --sanitizer none
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    echo "fuzz: $t for ${seconds}s"
    # -timeout: one input taking over 10 s is a finding (time per record must stay bounded);
    # -rss_limit_mb: so is a blow-up of memory.
    log="$(mktemp)"
    if ! cargo fuzz run --sanitizer none "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz: $t failed; the failing input is under fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" | sed "s/^/fuzz: $t /"
    rm -f "$log"
done
