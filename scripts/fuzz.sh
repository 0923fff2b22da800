#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each,
# starting from its committed corpus (fuzz/corpus/<target>/). What a run
# finds new is merged, minimised, into that corpus (commit it: ctcore's
# `fuzz_corpus` test replays every corpus file on stable Rust, in CI). A crash
# stops the script: its input is in fuzz/artifacts/<target>/.
#
# Needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz
# (installed here from crates.io if missing).
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]     (default 60 s, every target)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/rust-env.sh

say() { echo "fuzz: $*"; }
die() { echo "fuzz: error: $*" >&2; exit 1; }

SECS=${1:-60}
[ $# -gt 0 ] && shift
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a whole number, got $SECS"
rustup toolchain list | grep -q '^nightly' || die "needs a nightly toolchain: rustup toolchain install nightly"
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^ctcore-fuzz$')
fi
cd fuzz
say "building ${#targets[@]} target(s) (nightly, sanitizers)"
cargo +nightly fuzz build >/dev/null

summary=()
for t in "${targets[@]}"; do
    [ -d "corpus/$t" ] || die "no corpus/$t (every target starts from one)"
    new=$(mktemp -d "/tmp/ctgate-fuzz-$t.XXXXXX")
    log="$new.log"
    say "$t: ${SECS} s from corpus/$t ($(ls "corpus/$t" | wc -l) inputs)"
    if ! cargo +nightly fuzz run "$t" "$new" "corpus/$t" -- \
        -max_total_time="$SECS" -max_len=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        die "$t crashed: the input is in fuzz/artifacts/$t/ (log $log)"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    before=$(ls "corpus/$t" | wc -l)
    # Keep what covers something new, minimised, in the committed corpus.
    cargo +nightly fuzz run "$t" "corpus/$t" "$new" -- -merge=1 -max_len=2048 >"$log.merge" 2>&1 \
        || { tail -20 "$log.merge" >&2; die "$t: merging the new inputs failed"; }
    after=$(ls "corpus/$t" | wc -l)
    summary+=("$t: ${runs:-?} runs in ${SECS} s, no crash; corpus $before -> $after")
    say "${summary[-1]}"
    rm -rf "$new" "$log" "$log.merge"
done
say "done"
printf '  %s\n' "${summary[@]}"
