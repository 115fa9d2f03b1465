#!/usr/bin/env bash
# Every GPU check and benchmark in one call, for a session lent a GPU (the device tool's `run`), well under
# 8 minutes on one H100. Results land in $OUT (or benchmarks/out): copy the figures into RESULTS.md with
# the device and the date.
#   run: pip install -q -e . && bash benchmarks/gpu_suite.sh
set -uo pipefail  # a failing step must not cost the figures of the others
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"

# Deployment (issue 6): fused smpconv_t throughput against convnext_tiny, bf16, channels_last, compiled too.
python benchmarks/inference.py --device cuda --dtype bfloat16 --layouts channels_last --batch-sizes 1 256 \
    --compile --min-seconds 1 --output "$out/inference_cuda.json" 2>&1 | tee "$out/inference_cuda.md"

# Depthwise convolution (issue 3): the Triton kernels against float64 on the GPU, then every backend on the
# large-kernel layers of smpconv_t, smpconv_b and smpconv_mobile51, bf16, batch 64, both layouts.
python -m pytest tests/triton_suite -q -p no:cacheprovider 2>&1 | tee "$out/triton_suite.txt"
python benchmarks/dwconv.py --device cuda --dtype bfloat16 --batch-size 64 --layouts nchw channels_last \
    --min-seconds 0.1 --output "$out/dwconv_cuda.json" 2>&1 | tee "$out/dwconv_cuda.md"
# Zero taps (issue 21): each backend on smpconv_t's SMP kernels as created against the same kernels without zeros
# (the Triton forward visits only the columns each kernel row's nonzero taps reach).
python benchmarks/dwconv.py --device cuda --dtype bfloat16 --batch-size 64 --zero-taps --min-seconds 0.1 \
    --output "$out/zero_taps_cuda.json" 2>&1 | tee "$out/zero_taps_cuda.md"

# Continuous resizing (issue 18): the Triton kernels against float64 on the GPU, then the layer at s = 1/2 and
# 0.73 against PyTorch's dense stride-2 convolution on smpconv_t's downsampling layers (the dispatcher times
# the 'torch' and 'triton' backends and keeps the faster).
python -m pytest tests/test_resize_triton.py -q -p no:cacheprovider 2>&1 | tee "$out/resize_triton.txt"
python benchmarks/resize.py --device cuda --batch-size 64 --min-seconds 0.2 --output "$out/resize_cuda.json" \
    2>&1 | tee "$out/resize_cuda.md"

# Long convolutions (issue 21): the paper's table 1 (the CIFAR-10 model's training throughput against the 3x3
# network: 0.97x on an RTX 3090) and the sequence models' steps against whole kernels and the authors' FFT
# convolution, on the GPU.
python benchmarks/ckconv.py --device cuda --steps 10 --authors-steps 3 --output "$out/ckconv_cuda.json" 2>&1 \
    | tee "$out/ckconv_cuda.md"

# Training step (issues 13 and 21): smpconv_t against convnext_tiny, bf16 autocast, channels_last, and smpconv_t
# without its large-kernel pairs (the floor no depthwise convolution takes its step under).
python benchmarks/training.py --device cuda --autocast bfloat16 --batch-sizes 32 128 --layouts channels_last \
    --steps 5 --without-large-kernels --output "$out/training_cuda.json" 2>&1 | tee "$out/training_cuda.md"
