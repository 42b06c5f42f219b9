#!/usr/bin/env bash
# Fuzzing (node/fuzz/README.md): replays the committed corpus through every target's checks
# and checks its generated seeds are current (`cargo test` in node/fuzz), then runs each
# cargo-fuzz target (the ISO/IEC 19794-2 parser and matcher, the identity id parser, log entry
# payload decoding and apply, snapshot files) for FUZZ_SECONDS (60 by default) from the committed corpus.
# Fails on any crash or broken property, keeping the input under
# $QUORUMID_FUZZ_TARGET/crashes/. New inputs go to a temporary directory and are discarded; with
# FUZZ_MERGE=1 node/fuzz/corpus is re-minimised over the old and new inputs instead (how a
# developer grows the corpus). FUZZ_TARGETS picks targets. Stable Rust: coverage
# instrumentation without a sanitizer (--sanitizer none) needs no nightly flag. Installs
# cargo-fuzz into a cached root if missing; builds in its own target directory, without RocksDB.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

seconds="${FUZZ_SECONDS:-60}"
merge="${FUZZ_MERGE:-0}"
read -r -a targets <<<"${FUZZ_TARGETS:-iso19794 identity_id command snapshot}"
tools="${QUORUMID_TOOLS:-$HOME/.cache/quorumid-tools}"
export CARGO_TARGET_DIR="${QUORUMID_FUZZ_TARGET:-$HOME/.cache/quorumid-fuzz-target}"
# Real fingerprint records (../shared/data/README.md): read-only extra seeds for iso19794 in
# CI runs, never merged into the corpus (the data must not be copied into the project).
fvc="$root/../shared/data/fvc2002"

if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz into $tools" >&2
  cargo install --quiet --locked cargo-fuzz --root "$tools"
fi
export PATH="$tools/bin:$PATH"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd node/fuzz
cargo test --locked >"$work/test.log" 2>&1 || { cat "$work/test.log"; exit 1; }
cargo fuzz build --sanitizer none >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
bin="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"
final_stat() { sed -n "s/^stat::$2: *//p" "$work/$1/log"; }

for target in "${targets[@]}"; do
  [ -x "$bin/$target" ] || { echo "fuzz: no target $target (built: $bin)" >&2; exit 1; }
  mkdir -p "$work/$target/new" "$work/$target/crash"
  seeds=("corpus/$target")
  if [ "$target" = iso19794 ] && [ "$merge" != 1 ] && [ -d "$fvc" ]; then
    seeds+=("$fvc"/DB*_B)
  fi
  # New inputs are written to the first directory only: the temporary one.
  if ! "$bin/$target" -max_total_time="$seconds" -timeout=20 -print_final_stats=1 \
    -artifact_prefix="$work/$target/crash/" "$work/$target/new" "${seeds[@]}" \
    >"$work/$target/log" 2>&1; then
    tail -n 40 "$work/$target/log"
    mkdir -p "$CARGO_TARGET_DIR/crashes/$target"
    cp "$work/$target/crash/"* "$CARGO_TARGET_DIR/crashes/$target/" 2>/dev/null || true
    echo "fuzz: $target FAILED; the input is kept in $CARGO_TARGET_DIR/crashes/$target/" >&2
    echo "  replay: cd node/fuzz && cargo fuzz run --sanitizer none $target <that file>" >&2
    exit 1
  fi
  summary="$(final_stat "$target" number_of_executed_units) runs"
  summary+=", $(final_stat "$target" average_exec_per_sec)/s"
  summary+=", $(final_stat "$target" new_units_added) new inputs"
  if [ "$merge" = 1 ]; then
    # The corpus becomes the smallest set of the old and new inputs that reaches every edge
    # reached (hit counts ignored, to keep it small), the seeds always kept.
    mkdir "$work/$target/merged"
    cp "corpus/$target"/seed-* "$work/$target/merged/"
    "$bin/$target" -merge=1 -use_counters=0 "$work/$target/merged" "corpus/$target" \
      "$work/$target/new" >"$work/$target/merge.log" 2>&1 \
      || { cat "$work/$target/merge.log"; exit 1; }
    before=$(find "corpus/$target" -type f | wc -l)
    rm -f "corpus/$target"/*
    cp "$work/$target/merged"/* "corpus/$target/"
    summary+=", corpus/$target: $before -> $(find "corpus/$target" -type f | wc -l) inputs"
  fi
  echo "fuzz: $target: $seconds s, $summary"
done
echo "fuzz: corpus $(du -sb corpus | cut -f1) bytes in $(find corpus -type f | wc -l) files"
