"""The Triton kernels of the depthwise resizing convolution (smpconv_models/ops/triton_resize.py) against the plain
computation of their contract (`reference_taps`, `reference_grads`) in float64: on a GPU, or on the CPU by
Triton's interpreter. TRITON_INTERPRET must be set before Triton loads, so without a GPU the kernel tests skip
here and `test_under_the_interpreter` runs this file again in a process of its own with TRITON_INTERPRET=1."""
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip('triton')

from smpconv_models.ops import triton_resize  # noqa: E402
from smpconv_models.ops.resize import reference_grads, reference_taps, resize_geometry  # noqa: E402

INTERPRETED = os.environ.get('TRITON_INTERPRET') == '1'
RUNS_HERE = INTERPRETED or torch.cuda.is_available()
DEVICE = 'cpu' if INTERPRETED else 'cuda'
needs_kernels = pytest.mark.skipif(not RUNS_HERE, reason='no GPU: test_under_the_interpreter runs these')

# Relative to the largest expected value (sums cancel, so some are near zero); the reference gets the very values
# the kernels get (inputs rounded to the dtype first), so only the kernels' own rounding is measured. float64
# accumulates in float64: sums of at most a few hundred products, ~1e-14. float32: float32 rounding of sums of
# at most ~100 products (a batch of 3 times the outputs sharing a phase, in grad_bank), <= 100 * 2^-24 ~ 6e-6.
# float16 and bfloat16 accumulate in float32 (~1e-6) and round the result once: 2^-11 ~ 4.9e-4 and 2^-8 ~ 3.9e-3
# of the largest value, twice that as the bound.
TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
# (input size, kernel size, scale or output size) of every scale kind: an arbitrary scale (a phase per output),
# different per axis (upscaling rows: several outputs share a start), rational ones (phases shared: their
# bank gradients add up), a 1 x 1 output, and a kernel wider than the image
SCALES = {
    '0.73': ((9, 11), (3, 5), dict(scale=0.73)),
    '(1.37, 0.6)': ((6, 11), (5, 3), dict(scale=(1.37, 0.6))),
    '0.5': ((8, 10), (3, 5), dict(scale=0.5)),
    '2.0': ((5, 6), (5, 3), dict(scale=2.)),
    '3.0': ((3, 4), (3, 5), dict(scale=3.)),
    '1x1': ((2, 3), (3, 3), dict(size=(1, 1))),
    'wide kernel': ((3, 4), (7, 5), dict(scale=1.25)),
}


def problem(in_size, kernel_size, resize, dtype, batch=3, channels=2):
    """x, a random bank for the geometry, and the geometry as index tensors, on DEVICE; x and bank exact in dtype."""
    rows, cols = resize_geometry(in_size, kernel_size, **resize)
    geometry = [torch.tensor(t, device=DEVICE) for t in (rows.start, rows.phase, cols.start, cols.phase)]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, *in_size, generator=generator, dtype=torch.float64)
    bank = torch.randn(channels, rows.phases, rows.taps, cols.phases, cols.taps, generator=generator,
                       dtype=torch.float64)
    return x.to(DEVICE, dtype), bank.to(DEVICE, dtype), geometry


def assert_close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert got.dtype == dtype and got.shape == expected.shape
    tolerance = TOLERANCES[dtype] * expected.abs().max().item()
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=tolerance)


def check_passes(x, bank, geometry, resize_config=None, bank_config=None):
    """The three passes (autotuned, or in the configs given) against the float64 reference of the values they
    get."""
    dtype = x.dtype
    x64, bank64 = x.double(), bank.double()
    y = reference_taps(x64, bank64, *geometry)
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(y.device)
    grad_y = grad_y.to(dtype)
    grad_x, grad_bank = reference_grads(grad_y.double(), x64, bank64, *geometry)
    assert_close(triton_resize.forward(x, bank, *geometry, config=resize_config), y, dtype)
    assert_close(triton_resize.grad_input(grad_y, bank, *geometry, *x.shape[2:], config=resize_config), grad_x, dtype)
    assert_close(triton_resize.grad_bank(grad_y, x, *geometry, bank.shape, config=bank_config), grad_bank, dtype)


@needs_kernels
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('case', list(SCALES))
def test_every_pass_at_every_scale(case, dtype):
    check_passes(*problem(*SCALES[case], dtype))


@needs_kernels
@pytest.mark.parametrize('dtype', [torch.float64, torch.bfloat16])
def test_float64_and_bfloat16(dtype):
    check_passes(*problem(*SCALES['0.73'], dtype))


def test_cases_read_the_zero_padding():
    """Every case above reads before the first input of both axes (negative starts) and past the last input of
    one axis at least."""
    for in_size, kernel_size, resize in SCALES.values():
        axes = resize_geometry(in_size, kernel_size, **resize)
        assert all(min(axis.start) < 0 for axis in axes)
        assert any(max(axis.start) + axis.taps > size for axis, size in zip(axes, in_size))


@needs_kernels
@pytest.mark.parametrize('index', range(len(triton_resize.RESIZE_CONFIGS)))
def test_every_config(index):
    """Each autotune config (the interpreter otherwise runs only the first), a batch of 3 filling no block."""
    check_passes(*problem(*SCALES['(1.37, 0.6)'], torch.float32), triton_resize.RESIZE_CONFIGS[index],
                 triton_resize.GRAD_BANK_CONFIGS[index % len(triton_resize.GRAD_BANK_CONFIGS)])


@needs_kernels
def test_strided_inputs():
    """channels_last and sliced tensors are read through their strides; outputs keep the memory format."""
    x, bank, geometry = problem(*SCALES['0.73'], torch.float32)
    y = triton_resize.forward(x, bank, *geometry)
    x_last = x.contiguous(memory_format=torch.channels_last)
    y_last = triton_resize.forward(x_last, bank, *geometry)
    assert y_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_last, y, rtol=0, atol=0)
    wide = torch.cat([bank, bank], dim=-1)[..., :bank.shape[-1]]  # strides of a bigger bank
    torch.testing.assert_close(triton_resize.forward(x, wide, *geometry), y, rtol=0, atol=0)
    grad_y = torch.randn_like(y).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(triton_resize.grad_input(grad_y, wide, *geometry, *x.shape[2:]),
                               triton_resize.grad_input(grad_y.contiguous(), bank, *geometry, *x.shape[2:]))
    torch.testing.assert_close(triton_resize.grad_bank(grad_y, x_last, *geometry, bank.shape),
                               triton_resize.grad_bank(grad_y.contiguous(), x, *geometry, bank.shape))


@needs_kernels
def test_empty_batch():
    x, bank, geometry = problem(*SCALES['0.73'], torch.float32, batch=0)
    y = triton_resize.forward(x, bank, *geometry)
    assert y.shape == (0, 2, 6, 8)
    assert triton_resize.grad_input(y, bank, *geometry, *x.shape[2:]).shape == x.shape
    grad_bank = triton_resize.grad_bank(y, x, *geometry, bank.shape)
    assert grad_bank.shape == bank.shape and not grad_bank.any()


@needs_kernels
@pytest.mark.parametrize('scale', [0.73, (1.37, 2.)])
def test_the_layer_on_the_triton_backend(scale):
    """SMPContinuousConv2d through the operator with the 'triton' backend forced: its output and gradients (input,
    points) are the 'torch' backend's (float64: to rounding)."""
    import smpconv_models
    from smpconv_models.ops import use_backend
    layer = smpconv_models.SMPContinuousConv2d(3, 5, 6, device=DEVICE, dtype=torch.float64)
    x = torch.randn(2, 3, 9, 11, device=DEVICE, dtype=torch.float64, requires_grad=True)
    results = {}
    for backend in ('torch', 'triton'):
        with use_backend(backend):
            y = layer(x, scale=scale)
            results[backend] = (y, *torch.autograd.grad((y * y.cos()).sum(), (x, *layer.parameters())))
    for got, expected in zip(results['triton'], results['torch']):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_available():
    x = torch.zeros(1, 1, 2, 2)
    assert triton_resize.available(x) == INTERPRETED
    assert not triton_resize.available(x.long())


def test_under_the_interpreter():
    """This file in a process of its own with TRITON_INTERPRET=1, where no GPU runs it here."""
    if RUNS_HERE:
        pytest.skip('the kernels run in this process')
    result = subprocess.run([sys.executable, '-m', 'pytest', __file__, '-q', '-p', 'no:cacheprovider'],
                            env={**os.environ, 'TRITON_INTERPRET': '1'}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
