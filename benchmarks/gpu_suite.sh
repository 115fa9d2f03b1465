#!/usr/bin/env bash
# Every GPU check and benchmark in one call, for a session lent a GPU (the device tool's `run`), well under
# 8 minutes on one H100. Results land in $OUT (or benchmarks/out): copy the figures into RESULTS.md with
# the device and the date.
#   run: pip install -q -e . && bash benchmarks/gpu_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"

# Deployment (issue 6): fused smpconv_t throughput against convnext_tiny, bf16, channels_last, compiled too.
python benchmarks/inference.py --device cuda --dtype bfloat16 --layouts channels_last --batch-sizes 1 256 \
    --compile --min-seconds 1 --output "$out/inference_cuda.json" 2>&1 | tee "$out/inference_cuda.md"
