"""What the Triton kernels compile to for the A100 and H100/H200, checked without a GPU (Triton's compiler and
ptxas run on the CPU): no autotune config spills registers, and every fp16, bf16 and TF32 product of the depthwise
convolution runs on tensor cores, for the 31 x 31 kernels of smpconv_t/_b and the 51 x 51 of smpconv_mobile51;
the resizing convolution's kernels (plain FMA over gathered taps) in every dtype."""
import importlib.util
import itertools
from pathlib import Path

import pytest

pytest.importorskip('triton')
spec = importlib.util.spec_from_file_location(
    'triton_codegen', Path(__file__).parents[1] / 'benchmarks' / 'triton_codegen.py')
triton_codegen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(triton_codegen)


@pytest.mark.parametrize('kernel_size', [31, 51])
def test_no_spills_and_tensor_cores(kernel_size):
    compiled = list(triton_codegen.depthwise_kernels(kernel_size))
    assert {(c.architecture, c.dtype, c.precision) for c in compiled} == {
        (architecture, *variant) for architecture in triton_codegen.ARCHITECTURES for variant in
        triton_codegen.VARIANTS}
    spilling = [c for c in compiled if c.spill_bytes]
    assert not spilling, f'register spills: {spilling}'
    off_tensor_cores = [c for c in compiled if c.tensor_cores != (c.precision == 'tf32')]
    assert not off_tensor_cores, f'tensor cores only and always for fp16/bf16/TF32 products: {off_tensor_cores}'


def test_resize_kernels_do_not_spill():
    compiled = list(triton_codegen.resize_kernels())
    kinds = ('resize_forward', 'resize_grad_input', 'resize_grad_bank')
    assert {(c.kernel, c.architecture, c.dtype) for c in compiled} == set(
        itertools.product(kinds, triton_codegen.ARCHITECTURES, triton_codegen.RESIZE_DTYPES))
    spilling = [c for c in compiled if c.spill_bytes]
    assert not spilling, f'register spills: {spilling}'
