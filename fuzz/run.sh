#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 10) each, from the seeds in
# fuzz/corpus/<target> (copied: the committed corpus stays the seeds).
# Needs the nightly toolchain and cargo-fuzz (installed here if missing).
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the run:
# turn it into a regression test, then fix.
#
#   bash fuzz/run.sh            # CI: seconds per target
#   SECONDS_PER_TARGET=600 bash fuzz/run.sh   # the long run of RELIABILITY.md
set -euo pipefail
cd "$(dirname "$0")"
per_target=${SECONDS_PER_TARGET:-10}
if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$work/$target"
    cp corpus/"$target"/* "$work/$target/" 2>/dev/null || true
    echo "== fuzz $target for ${per_target}s"
    cargo +nightly fuzz run "$target" "$work/$target" -- \
        -max_total_time="$per_target" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
        grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)|ERROR|panicked|SUMMARY' || true
    if compgen -G "artifacts/$target/*" >/dev/null; then
        echo "fuzz: $target found a crash: $(ls artifacts/"$target")" >&2
        exit 1
    fi
done
