#!/usr/bin/env bash
# The WGSL kernels on a GPU machine: the evidence of a wgpu run with and without them, their
# timing, parity cpu vs wgpu with them, and the data-feeding throughput of `cargo bench`.
# Usage: OUT=gpu_out TRAINER=target/release/trainer BENCH=target/release/deps/training_step-* \
#        scripts/gpu-kernels-check.sh
set -u
OUT=${OUT:-gpu_out}
BIN=${TRAINER:-target/release/trainer}
work=$(mktemp -d)
mkdir -p "$OUT"
step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }
{
  step devices
  "$BIN" devices
  for round in cold warm; do
    step "workshop on wgpu with the kernels ($round)"
    /usr/bin/time -f "wall %e s" "$BIN" --backend wgpu --out "$work/with" --quiet
    step "workshop on wgpu without the kernels ($round)"
    /usr/bin/time -f "wall %e s" "$BIN" --backend wgpu --no-gpu-kernels --out "$work/without" --quiet
  done
  step "evidence with vs without the kernels"
  for f in training_log.csv model_comparison.csv confusion_matrix.csv error_samples.csv metrics_summary.json; do
    cmp "$work/with/outputs/$f" "$work/without/outputs/$f" && echo "same: $f"
  done
  grep gpu_kernels "$work/with/outputs/run_info.json" "$work/without/outputs/run_info.json"
  cat "$work/with/outputs/epoch_timing.csv"
  step "parity cpu,wgpu with the kernels"
  "$BIN" parity --backends cpu,wgpu --out "$work/parity" --quiet
  step "cargo bench binary (training step per backend, data feeding on wgpu)"
  [ -n "${BENCH:-}" ] && timeout 200 "$BENCH" --bench
} 2>&1 | tee "$OUT/kernels_log.txt"
cp "$work/parity/parity/parity_report.md" "$OUT/kernels_parity_report.md" 2>/dev/null
