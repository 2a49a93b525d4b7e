#!/usr/bin/env bash
# The accelerator checks as one script (float32 accuracy, NTK Gram speed, block eigensolver).
# Needs python3 with JAX for the device, Flax, Optax, SciPy (no Ray, no neural-tangents).
#
#   bash benchmarks/gpu_suite.sh            # paper-scale cases, ~8 minutes on one H200
#   SMALL=1 bash benchmarks/gpu_suite.sh    # tiny sizes: a dry run on a CPU
#
# Results are printed and written to $OUT (default ./gpu_results).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
if [ "${SMALL:-0}" = 1 ]; then
    acc_n=16; cases="lenet:64 resnet18:8"; eig="--n 2000 --k 50 --rank 300"; budget=2048
else
    acc_n=256; cases="lenet:10000 resnet18:2000"; eig="--n 60000 --k 1000 --rank 3000"
    budget=40000
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
timeout 100 python3 benchmarks/gpu_accuracy.py --n "$acc_n" 2>&1 | tee "$OUT/accuracy.txt"
# shellcheck disable=SC2086
timeout 280 python3 benchmarks/bench_ntk.py --skip-nt --cases $cases --methods auto contraction \
    --budget-mb "$budget" --repeats 1 --timeout 200 --json "$OUT/bench_ntk.json" 2>&1 \
    | tee "$OUT/bench_ntk.txt"
# shellcheck disable=SC2086
timeout 170 python3 benchmarks/gpu_eigen.py $eig 2>&1 | tee "$OUT/eigen.txt"
