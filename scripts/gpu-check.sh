#!/usr/bin/env bash
# The GPU measurements of the README, side by side with PyTorch on the same GPU: the workshop
# on wgpu cold (empty kernel cache) and warm, with the training kernels and with burn's layers
# (--no-gpu-kernels), on auto (which must pick the GPU) and on cpu; parity cpu vs wgpu;
# `trainer bench --backend wgpu` at batch 32, 256, 1024 and 4096 (with launches per step),
# kernels and layers; the same for a 3-channel 16-32-64 CNN at 32x32 (the CNN family) and for
# the head (32-64 at 28x28, flatten, hidden 128, dropout 0.25), also with
# --batch-norm; and the PyTorch peer
# on CUDA, eager and with torch.compile, at the same batch sizes and shapes.
# Usage: OUT=gpu_out TRAINER=target/release/trainer PEER=../shared/peers/torch_throughput.py \
#        scripts/gpu-check.sh
set -u
OUT=${OUT:-gpu_out}
BIN=${TRAINER:-target/release/trainer}
PEER=${PEER:-../shared/peers/torch_throughput.py}
BATCHES=${BATCHES:-32,256,1024,4096}
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
  step "workshop, --backend wgpu, cold (kernel caches removed)"
  export TRAINER_KERNEL_CACHE="$work/kernel-cache"
  rm -rf target/environment "$HOME/.cache/cubecl" "$TRAINER_KERNEL_CACHE"
  timed "$BIN" --backend wgpu --out "$work/cold" --quiet
  grep -A3 kernel_cache "$work/cold/outputs/run_info.json"
  step "workshop, --backend wgpu, warm"
  timed "$BIN" --backend wgpu --out "$work/warm" --quiet
  timed "$BIN" --backend wgpu --out "$work/warm" --quiet
  cat "$work/warm/outputs/epoch_timing.csv"
  step "workshop, --backend wgpu --no-gpu-kernels (burn's layers), cold then warm"
  rm -rf "$TRAINER_KERNEL_CACHE"
  timed "$BIN" --backend wgpu --no-gpu-kernels --out "$work/layers" --quiet
  timed "$BIN" --backend wgpu --no-gpu-kernels --out "$work/layers" --quiet
  for f in training_log.csv model_comparison.csv confusion_matrix.csv; do
    cmp -s "$work/warm/outputs/$f" "$work/layers/outputs/$f" && echo "$f: same with and without the kernels" || echo "$f: DIFFERS"
  done
  step "workshop, --backend auto"
  timed "$BIN" --out "$work/auto" --quiet
  grep -E '"backend"|device_name|graphics_api' "$work/auto/outputs/run_info.json"
  step "workshop, --backend cpu"
  timed "$BIN" --backend cpu --out "$work/cpu" --quiet
  step "parity cpu,wgpu"
  timed "$BIN" parity --backends cpu,wgpu --out "$work/parity" --quiet
  step "parity cpu,wgpu, a 3-channel 3-block CNN on the hue folder (scripts/hue-check.py)"
  python3 scripts/hue-check.py make "$work/hues" 20
  timed "$BIN" parity --backends cpu,wgpu --data "$work/hues" --image-size 24 --cnn-widths 8,12,16 --out "$work/parity-family" --quiet
  step "trainer bench --backend wgpu, Tiny CNN, 16x16, batch $BATCHES"
  timed "$BIN" bench --backend wgpu --model cnn --batch-sizes "$BATCHES" --steps 50 --out "$work/bench" --quiet
  cat "$work/bench/bench/throughput.csv"
  step "trainer bench --backend wgpu --no-gpu-kernels (burn's layers), batch $BATCHES"
  timed "$BIN" bench --backend wgpu --no-gpu-kernels --model cnn --batch-sizes "$BATCHES" --steps 50 --out "$work/bench-layers" --quiet
  cat "$work/bench-layers/bench/throughput.csv"
  step "trainer bench --backend wgpu, Flatten baseline, batch $BATCHES"
  timed "$BIN" bench --backend wgpu --model baseline --batch-sizes "$BATCHES" --steps 50 --out "$work/bench-baseline" --quiet
  cat "$work/bench-baseline/bench/throughput.csv"
  step "the CNN family: 3 channels, 16-32-64, 32x32, kernels then layers, batch $BATCHES"
  FAMILY=(--color rgb --cnn-widths 16,32,64 --image-size 32 --batch-sizes "$BATCHES" --steps 20)
  timed "$BIN" bench --backend wgpu "${FAMILY[@]}" --out "$work/bench-family" --quiet
  cat "$work/bench-family/bench/throughput.csv"
  timed "$BIN" bench --backend wgpu --no-gpu-kernels "${FAMILY[@]}" --out "$work/bench-family-layers" --quiet
  cat "$work/bench-family-layers/bench/throughput.csv"
  step "the issue's head: 1 channel, 32-64, 28x28, flatten, hidden 128, dropout 0.25, kernels then layers, batch $BATCHES"
  HEAD=(--cnn-widths 32,64 --image-size 28 --head flatten --hidden 128 --dropout 0.25 --batch-sizes "$BATCHES" --steps 20)
  timed "$BIN" bench --backend wgpu --model cnn "${HEAD[@]}" --out "$work/bench-head" --quiet
  cat "$work/bench-head/bench/throughput.csv"
  timed "$BIN" bench --backend wgpu --no-gpu-kernels --model cnn "${HEAD[@]}" --out "$work/bench-head-layers" --quiet
  cat "$work/bench-head-layers/bench/throughput.csv"
  step "the same head with --batch-norm (one workgroup runs the step's whole batch), kernels then layers, batch $BATCHES"
  timed "$BIN" bench --backend wgpu --model cnn "${HEAD[@]}" --batch-norm --out "$work/bench-head-bn" --quiet
  cat "$work/bench-head-bn/bench/throughput.csv"
  timed "$BIN" bench --backend wgpu --no-gpu-kernels --model cnn "${HEAD[@]}" --batch-norm --out "$work/bench-head-bn-layers" --quiet
  cat "$work/bench-head-bn-layers/bench/throughput.csv"
  step "PyTorch CUDA eager, the same head, batch $BATCHES"
  timed python3 "$PEER" --device cuda --widths 32,64 --image-size 28 --head flatten --hidden 128 --dropout 0.25 --batch-sizes "$BATCHES" --steps 20 | tee "$OUT/torch_cuda_head_eager.csv"
  timed python3 "$PEER" --device cuda --widths 32,64 --image-size 28 --head flatten --hidden 128 --dropout 0.25 --batch-norm --batch-sizes "$BATCHES" --steps 20 | tee "$OUT/torch_cuda_head_bn_eager.csv"
  step "PyTorch CUDA eager and compiled, the same family CNN, batch $BATCHES"
  timed python3 "$PEER" --device cuda --in-channels 3 --widths 16,32,64 --image-size 32 --batch-sizes "$BATCHES" --steps 20 | tee "$OUT/torch_cuda_family_eager.csv"
  timed timeout 300 python3 "$PEER" --device cuda --compile --in-channels 3 --widths 16,32,64 --image-size 32 --batch-sizes "$BATCHES" --steps 20 | tee "$OUT/torch_cuda_family_compile.csv"
  step "PyTorch CUDA eager, Tiny CNN, 16x16, batch $BATCHES"
  timed python3 "$PEER" --device cuda --batch-sizes "$BATCHES" --steps 50 | tee "$OUT/torch_cuda_eager.csv"
  step "PyTorch CUDA torch.compile, Tiny CNN, 16x16, batch $BATCHES"
  timed timeout 300 python3 "$PEER" --device cuda --compile --batch-sizes "$BATCHES" --steps 50 | tee "$OUT/torch_cuda_compile.csv"
} 2>&1 | tee "$OUT/log.txt"
cp "$work/warm/outputs/run_info.json" "$OUT/workshop_run_info.json" 2>/dev/null
cp "$work/parity/parity/parity_report.md" "$OUT/parity_report.md" 2>/dev/null
cp "$work/parity-family/parity/parity_report.md" "$OUT/parity_family_report.md" 2>/dev/null
cp "$work/bench/bench/throughput.csv" "$OUT/throughput.csv" 2>/dev/null
cp "$work/bench/bench/README.md" "$OUT/bench_README.md" 2>/dev/null
cp "$work/bench-layers/bench/throughput.csv" "$OUT/throughput_layers.csv" 2>/dev/null
cp "$work/bench-baseline/bench/throughput.csv" "$OUT/throughput_baseline.csv" 2>/dev/null
cp "$work/bench-family/bench/throughput.csv" "$OUT/throughput_family.csv" 2>/dev/null
cp "$work/bench-family-layers/bench/throughput.csv" "$OUT/throughput_family_layers.csv" 2>/dev/null
cp "$work/bench-head/bench/throughput.csv" "$OUT/throughput_head.csv" 2>/dev/null
cp "$work/bench-head-layers/bench/throughput.csv" "$OUT/throughput_head_layers.csv" 2>/dev/null
