#!/usr/bin/env bash
# The device check for the day a GPU is lent (DESIGN §4, issue "the GPU path"): about 10 minutes.
#
#   scripts/gpu-check.sh [cuda|vulkan]     (default: vulkan)
#
# 1. builds the CLI with the backend's feature (skipped, with a note, when the backend's driver is
#    absent: no `nvidia-smi` for cuda, no `vulkaninfo` GPU for vulkan — a CPU driver such as
#    lavapipe does not count); the backend build goes to target/BACKEND, beside the flex build;
# 2. runs the lossless checks on the device: greedy TokenSwift == greedy AR (300 tokens, default
#    model, `--compare-ar` prints "outputs identical"), and the flex burn-path tests
#    (`--kernels burn` is the code the device runs);
# 3. writes a synthetic Llama-3.1-8B-shaped bf16 checkpoint (random weights, no download; 16 GB)
#    and runs `tokenswift bench` on it, q = 1…64 at ctx 4K and 32K;
# 4. TokenSwift vs AR on it for 2K tokens (n-gram drafts only: a random model has no trained heads;
#    the default model's tokenizer stands in for the text).
#
# Environment: OUT (results folder, default target/gpu-check), SHAPE (llama3.1-8b, or 1b for a
# quick run), SMOKE=1 (tiny contexts and lengths: checks that the script itself works, on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND="${1:-vulkan}"
OUT="${OUT:-target/gpu-check}"
SHAPE="${SHAPE:-llama3.1-8b}"
mkdir -p "$OUT"
log() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"; }

case "$BACKEND" in
  cuda) have_device() { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; } ;;
  # A GPU, not a CPU driver: Mesa's lavapipe (PHYSICAL_DEVICE_TYPE_CPU) crashes compiling burn's
  # kernels (README, Backends), and this script is the check for the day a GPU is lent.
  vulkan) have_device() { command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>/dev/null | grep deviceType | grep -qv PHYSICAL_DEVICE_TYPE_CPU; } ;;
  *) echo "gpu-check: the backend must be cuda or vulkan, not '$BACKEND'" >&2; exit 2 ;;
esac

if [ "${SMOKE:-0}" = 1 ]; then
  CONTEXTS=64; QS=1,2; GEN=300; TS_GEN=8; REPS=1; SHAPE=1b
else
  CONTEXTS=4096,32768; QS=1,2,4,8,16,32,64; GEN=300; TS_GEN=2048; REPS=5
fi

if have_device; then
  FEATURES=(--features "tokenswift-cli/$BACKEND")
  DEVICE="$BACKEND"
  log "building with $BACKEND"
  BIN_DIR="target/$BACKEND"
  CARGO_TARGET_DIR="$BIN_DIR" cargo build --release -p tokenswift-cli "${FEATURES[@]}" 2>&1 | tail -3
else
  echo "gpu-check: no $BACKEND device found; skipping the $BACKEND build and running the same checks on flex with --kernels burn" | tee -a "$OUT/log.txt"
  FEATURES=()
  DEVICE=flex
  BIN_DIR=target
  cargo build --release --workspace 2>&1 | tail -3
fi
TS="$BIN_DIR/release/tokenswift"
KERNELS=()
[ "$DEVICE" = flex ] && KERNELS=(--kernels burn)

log "lossless: greedy TokenSwift vs AR, default model, $GEN tokens, device $DEVICE"
"$TS" generate --device "$DEVICE" "${KERNELS[@]}" --prompt-file datasets/prompts/pride-and-prejudice.txt \
  --max-new-tokens "$GEN" --temperature 0 --compare-ar --quiet 2>&1 | tail -6 | tee "$OUT/lossless.txt" >> "$OUT/log.txt"
cat "$OUT/lossless.txt"
grep -q "outputs identical" "$OUT/lossless.txt" || { echo "gpu-check: TokenSwift's output differs from AR's" >&2; exit 1; }

if [ "${SMOKE:-0}" != 1 ]; then
  log "burn-path tests (flex)"
  cargo test --release --workspace --test tokenswift -- device_partial_cache sampling_distribution_on_the_burn_path \
    greedy_tokenswift_equals_greedy_ar_on_tiny_models 2>&1 | grep -E "^test |test result" | tee -a "$OUT/log.txt"
fi

SYN="$OUT/synthetic-$SHAPE"
if [ ! -f "$SYN/model.safetensors" ]; then
  log "writing the synthetic $SHAPE checkpoint to $SYN"
  cargo build --release --workspace --examples 2>&1 | tail -1
  target/release/examples/synthetic_checkpoint "$SHAPE" "$SYN" | tee -a "$OUT/log.txt"
fi
cp "$HOME/.cache/tokenswift/models/smollm2-135m/tokenizer.json" "$SYN/" 2>/dev/null || true

log "bench on $SHAPE: q = $QS at ctx $CONTEXTS"
"$TS" bench --model "$SYN" --device "$DEVICE" "${KERNELS[@]}" --contexts "$CONTEXTS" --q "$QS" --reps "$REPS" --quiet \
  2>&1 | tee "$OUT/bench-$SHAPE.md" | tee -a "$OUT/log.txt"

log "TokenSwift vs AR on $SHAPE, $TS_GEN tokens (n-gram drafts only), device $DEVICE"
# (The 1B shape's vocabulary is smaller than the stand-in tokenizer's: a short prompt of common
# words keeps its ids in range.)
PROMPT=(--prompt-file datasets/prompts/pride-and-prejudice.txt)
[ "$SHAPE" = 1b ] && PROMPT=(--prompt "It was a bright cold day in April, and the clocks were striking thirteen.")
"$TS" generate --model "$SYN" --device "$DEVICE" "${KERNELS[@]}" "${PROMPT[@]}" \
  --max-new-tokens "$TS_GEN" --temperature 0 --draft none --compare-ar --quiet 2>&1 | tail -6 | tee -a "$OUT/log.txt"
log "done: $OUT/log.txt"
