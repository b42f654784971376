#!/usr/bin/env bash
# Media engine benchmarks: CPU per transcoded call (transcode_bench) for each codec pair,
# player streams per core (player_bench: endpoints playing a looping prompt) and
# conference participants mixed per core (mixer_bench). Keep the
# machine otherwise idle: the figures are CPU time of this process, but caches and
# frequency suffer from neighbours. Goals (issue "media engine"): <= 0.3 % of one core
# per Opus<->PCMU call (RustPBX claims 0.42 %), >= 500 G.711 participants per core.
#   bench/media/run.sh                  # 100 calls x 12 s per pair
#   CALLS=200 SECS=24 bench/media/run.sh
#   STREAMS=400 bench/media/run.sh      # player streams per codec (default 200)
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS=${CALLS:-100}
SECS=${SECS:-12}
STREAMS=${STREAMS:-200}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
examples=(transcode_bench)
grep -q 'name = "mixer_bench"' Cargo.toml && examples+=(mixer_bench)
grep -q 'name = "player_bench"' Cargo.toml && examples+=(player_bench)
for e in "${examples[@]}"; do
  cargo build --release --example "$e" >&2
done
OUT=bench/media/results
mkdir -p "$OUT"
REPORT="$OUT/media_$(date +%Y%m%d_%H%M%S).txt"
{
  echo "# media bench calls=$CALLS secs=$SECS date=$(date -Is) host=$(nproc)cores load=$(cut -d' ' -f1-3 /proc/loadavg)"
  for pair in opus-pcmu g722-pcmu pcmu-pcma; do
    "$CARGO_TARGET_DIR/release/examples/transcode_bench" "$CALLS" "$SECS" "$pair"
  done
  for c in 10 5 3 1; do
    echo -n "opus complexity $c: "
    OPUS_COMPLEXITY=$c "$CARGO_TARGET_DIR/release/examples/transcode_bench" "$CALLS" "$SECS" opus-pcmu
  done
  if [ -x "$CARGO_TARGET_DIR/release/examples/player_bench" ]; then
    "$CARGO_TARGET_DIR/release/examples/player_bench" "$STREAMS" "$SECS"
  fi
  if [ -x "$CARGO_TARGET_DIR/release/examples/mixer_bench" ]; then
    "$CARGO_TARGET_DIR/release/examples/mixer_bench"
  fi
} | tee "$REPORT"
echo "results in $REPORT" >&2
