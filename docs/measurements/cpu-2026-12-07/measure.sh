#!/bin/bash
# The quiet sitting of 2026-12-07 (README, "Batch norm"): run from the repository root after
# `cargo build --release`, MNIST written by scripts/make-mnist-folder.py; logs go to $OUT.
set -u
M=${OUT:-runs/measure}; mkdir -p $M
T=target/release/trainer; P=".venv-interop/bin/python ../shared/peers/torch_throughput.py"
HEAD="--head flatten --hidden 128 --dropout 0.25"
for r in 1 2 3; do
  for bn in "" "--batch-norm"; do
    tag=flat${bn:+-bn}-r$r
    { date -u +%T; uptime; } > $M/$tag.trainer.log
    $T bench --backend cpu --cnn-widths 32,64 --image-size 28 $HEAD --classes 10 --batch-sizes 64,128,256 $bn --out $M/b-$tag >> $M/$tag.trainer.log 2>&1
    { date -u +%T; uptime; } > $M/$tag.torch.log
    $P --widths 32,64 --image-size 28 --in-channels 1 --classes 10 $HEAD --batch-sizes 64,128,256 $bn >> $M/$tag.torch.log 2>&1
  done
done
for r in 1 2; do
  { date -u +%T; uptime; } > $M/tiny-r$r.trainer.log
  $T bench --backend cpu --batch-sizes 32,64,128,256 --out $M/b-tiny-r$r >> $M/tiny-r$r.trainer.log 2>&1
  { date -u +%T; uptime; } > $M/tiny-r$r.torch.log
  $P --batch-sizes 32,64,128,256 >> $M/tiny-r$r.torch.log 2>&1
done
# A real run's training loop against bench's rate at batch 128 (item 6).
{ date -u +%T; uptime; } > $M/mnist.log
/usr/bin/time -v $T --backend cpu --data ${MNIST:-mnist} --image-size 28 --models cnn --cnn-widths 32,64 $HEAD --epochs-cnn 5 --lr-cnn 0.001 --batch-size 128 --out $M/mnist-flat >> $M/mnist.log 2>&1
{ date -u +%T; uptime; } >> $M/mnist.log
$T bench --backend cpu --cnn-widths 32,64 --image-size 28 $HEAD --classes 10 --batch-sizes 128 --out $M/b-after-mnist > $M/bench-after-mnist.log 2>&1
echo done > $M/DONE
