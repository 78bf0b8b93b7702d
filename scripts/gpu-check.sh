#!/usr/bin/env bash
# The GPU checks of the README: on a machine with a GPU, runs the workshop on wgpu (and on
# auto, which must pick the GPU), parity cpu vs wgpu, and the throughput sweep, and copies the
# reports into $OUT. Usage: OUT=gpu_out TRAINER=target/release/trainer scripts/gpu-check.sh
set -u
OUT=${OUT:-gpu_out}
BIN=${TRAINER:-target/release/trainer}
work=$(mktemp -d)
mkdir -p "$OUT"
step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }
timed() {
  if [ -x /usr/bin/time ]; then /usr/bin/time -f "wall %e s, peak RSS %M KiB" "$@"; else time "$@"; fi
}
{
  step devices
  "$BIN" devices
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  step "workshop, --backend auto"
  timed "$BIN" --out "$work/auto" --quiet
  grep -E '"backend"|device_name|graphics_api|total_wall' "$work/auto/outputs/run_info.json"
  step "workshop, --backend wgpu"
  timed "$BIN" --backend wgpu --out "$work/wgpu"
  cat "$work/wgpu/outputs/epoch_timing.csv"
  step "workshop, --backend cpu"
  timed "$BIN" --backend cpu --out "$work/cpu" --quiet
  step "parity cpu,wgpu"
  timed "$BIN" parity --backends cpu,wgpu --out "$work/parity" --quiet
  step "bench wgpu,cpu, both models, 16x16"
  timed "$BIN" bench --backend wgpu,cpu --model both --out "$work/bench" --quiet
  cat "$work/bench/bench/throughput.csv"
  step "bench wgpu,cpu, cnn, 64x64, large batches"
  timed timeout 150 "$BIN" bench --backend wgpu,cpu --model cnn --image-size 64 \
    --batch-sizes 64,256,1024,4096 --steps 20 --out "$work/bench64" --quiet
  cat "$work/bench64/bench/throughput.csv"
} 2>&1 | tee "$OUT/log.txt"
cp "$work/wgpu/outputs/run_info.json" "$OUT/workshop_run_info.json" 2>/dev/null
cp "$work/parity/parity/parity_report.md" "$OUT/parity_report.md" 2>/dev/null
cp "$work/parity/parity/parity_report.json" "$OUT/parity_report.json" 2>/dev/null
cp "$work/bench/bench/README.md" "$OUT/bench_README.md" 2>/dev/null
cp "$work/bench/bench/throughput_vs_batch.png" "$OUT/throughput_vs_batch.png" 2>/dev/null
cp "$work/bench64/bench/throughput.csv" "$OUT/throughput64.csv" 2>/dev/null
cp "$work/bench/bench/throughput.csv" "$OUT/throughput.csv" 2>/dev/null
