"""The Triton kernels against the float64 definition of each pass: on a GPU, or by Triton's interpreter on
the CPU (tests/test_ops.py runs this suite so, with TRITON_INTERPRET=1; benchmarks/gpu_suite.sh on a GPU)."""
import pytest
import torch
import torch.nn.functional as F

from smpconv_models.ops import depthwise_conv2d, use_backend
from smpconv_models.ops import triton_kernels

if triton_kernels.triton is None or not (triton_kernels.INTERPRETED or torch.cuda.is_available()):
    pytest.skip('needs Triton and a GPU, or TRITON_INTERPRET=1', allow_module_level=True)
DEVICE = 'cpu' if triton_kernels.INTERPRETED else 'cuda'

# fp32 in IEEE precision (TF32 off, the `ieee` fixture): float32 rounding of sums of <= 31 * 40 products
# (~1e-6 relative). fp16 inputs are exact in fp32 and accumulate there: only the output's rounding to fp16
# (~5e-4) remains; bf16 likewise (~4e-3).
TOLERANCES = {torch.float32: 2e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
# TF32 keeps 10 of fp32's 23 mantissa bits of each input: ~5e-4 relative per product, partly cancelling
TF32_TOLERANCE = 3e-3
# (batch, channels, height, width, kernel): several tiles of rows and columns, kernels wider than the image,
# a kernel of one row, batch 1, channel counts of 1, 2 and 3
SHAPES = [(2, 3, 9, 11, (7, 5)), (1, 2, 5, 40, (31, 31)), (3, 1, 70, 33, (3, 3)), (1, 2, 4, 6, (1, 9))]


def inputs(batch, channels, height, width, kernel, dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(channels, *kernel, generator=generator) / kernel[0]
    return x.to(DEVICE, dtype), weight.to(DEVICE, dtype)


def assert_close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, tolerance: float = None) -> None:
    """Relative to the largest value: the sums cancel, so some outputs are near zero."""
    tolerance = (tolerance or TOLERANCES[dtype]) * expected.abs().max().item()
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=tolerance)


@pytest.fixture(autouse=True)
def ieee(monkeypatch):
    """fp32 in full precision, as PyTorch's convolutions compute it with TF32 off."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('shape', SHAPES)
def test_forward(shape, dtype):
    x, weight = inputs(*shape, dtype)
    y = triton_kernels.forward(x, weight)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, triton_kernels.reference_forward(x.double(), weight.double()), dtype)


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('shape', SHAPES)
def test_grad_weight(shape, dtype):
    x, weight = inputs(*shape, dtype)
    grad_y = torch.randn_like(x)
    grad_w = triton_kernels.grad_weight(grad_y, x, weight.shape[-2:])
    assert grad_w.dtype == dtype and grad_w.shape == weight.shape
    assert_close(grad_w, triton_kernels.reference_grad_weight(grad_y.double(), x.double(), weight.shape[-2:]), dtype)


def laid_out(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """`tensor` in channels_last, or every other column of a tensor twice as wide: strides the kernels must read."""
    if layout == 'channels_last':
        return tensor.contiguous(memory_format=torch.channels_last)
    wide = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1], device=tensor.device, dtype=tensor.dtype)
    wide[..., ::2] = tensor
    return wide[..., ::2]


@pytest.mark.parametrize('layout', ['channels_last', 'sliced'])
def test_any_input_layout(layout):
    x, weight = inputs(2, 3, 9, 12, (5, 7), torch.float32)
    grad_y = torch.randn_like(x)
    expected_y = triton_kernels.reference_forward(x.double(), weight.double())
    expected_grad_w = triton_kernels.reference_grad_weight(grad_y.double(), x.double(), weight.shape[-2:])
    x, grad_y = laid_out(x, layout), laid_out(grad_y, layout)
    assert x.stride() != x.contiguous().stride()
    y = triton_kernels.forward(x, weight)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == 'channels_last')
    assert_close(y, expected_y, torch.float32)
    assert_close(triton_kernels.grad_weight(grad_y, x, weight.shape[-2:]), expected_grad_w, torch.float32)


def zero_taps(pattern: str, weight: torch.Tensor) -> torch.Tensor:
    """`weight` [3, kh, kw] with taps zeroed as SMP kernels have them: a disc about a point off the centre (the
    three channels sharing it, as SMP layers share their points), a different support per channel, a single tap,
    or no tap at all."""
    channels, kh, kw = weight.shape
    rows, cols = torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing='ij')
    if pattern == 'disc':
        keep = ((rows - kh / 3) ** 2 + (cols - kw / 4) ** 2 <= (min(kh, kw) / 3) ** 2).expand(channels, kh, kw)
    elif pattern == 'per channel':
        keep = torch.stack([cols >= kw // 2, rows < kh // 3, (rows + cols) % 5 == 0])
    elif pattern == 'one tap':
        keep = (rows == kh - 1) & (cols == 0)
    else:
        keep = torch.zeros(kh, kw, dtype=torch.bool)
    return weight * keep.to(weight.device)


@pytest.mark.parametrize('dtype', list(TOLERANCES))
@pytest.mark.parametrize('pattern', ['disc', 'per channel', 'one tap', 'none'])
def test_forward_of_kernels_with_zero_taps(pattern, dtype):
    """Each channel's rows visit only the input columns their nonzero taps reach: the same sums."""
    x, weight = inputs(2, 3, 37, 70, (31, 31), dtype)
    weight = zero_taps(pattern, weight)
    assert_close(triton_kernels.forward(x, weight),
                 triton_kernels.reference_forward(x.double(), weight.double()), dtype,
                 None if pattern != 'none' else 0.)  # no taps: zeros exactly


def test_tap_reach():
    """Per channel and kernel row, the column offsets of the first and last nonzero taps; an empty range for rows of
    zeros; NaN taps count."""
    weight = torch.zeros(2, 3, 7)
    weight[0, 0, 1] = weight[0, 0, 4] = 1.
    weight[0, 2, 6] = float('nan')
    empty = [2 ** 30, -2 ** 30]
    assert triton_kernels.tap_reach(weight).tolist() == [[[-2, 1], empty, [3, 3]], [empty] * 3]


def test_tiles_of_zero_taps_are_not_read():
    """The input rows and the tiles of input columns that only zero taps reach are never loaded: NaNs there stay
    out of the outputs (multiplied by a zero tap, as a pass over the whole kernel would, they give NaN)."""
    config = triton_kernels.FORWARD_CONFIGS[0]
    assert config.kwargs['BLOCK_N'] == config.kwargs['BLOCK_K'] == 32  # the geometry below
    x, weight = inputs(1, 2, 40, 64, (31, 31), torch.float32)
    # channel 0: output (i, j) reads x's rows i - 2, i - 1 and columns j - 2 .. j; channel 1 reads nothing
    weight[0, :13] = weight[0, 15:] = weight[0, :, :13] = weight[0, :, 16:] = 0
    weight[1] = 0
    clean = x.clone()
    x[:, :, 39] = x[:, :, :, 40] = float('nan')  # row 39 meets taps of rows 0..29, column 40 outputs 25..55
    y = triton_kernels.forward(x, weight, config)
    expected = triton_kernels.reference_forward(clean.double(), weight.double())
    # outputs 0..31 of each row are one block of columns: its nonzero taps reach input columns 0..31, exactly
    # one tile (one column more would take in the next)
    assert_close(y[:, :1, :, :32], expected[:, :1, :, :32], torch.float32)
    assert torch.equal(y[:, 1], torch.zeros_like(y[:, 1]))


# every autotune config, on a map of several tiles of rows and columns each way
@pytest.mark.parametrize('config', triton_kernels.FORWARD_CONFIGS, ids=str)
def test_every_forward_config(config):
    x, weight = inputs(2, 1, 40, 70, (3, 35), torch.float16)
    assert_close(triton_kernels.forward(x, weight, config),
                 triton_kernels.reference_forward(x.double(), weight.double()), torch.float16)


@pytest.mark.parametrize('config', triton_kernels.GRAD_WEIGHT_CONFIGS, ids=str)
def test_every_grad_weight_config(config):
    x, weight = inputs(2, 1, 40, 70, (3, 35), torch.float16)
    grad_y = torch.randn_like(x)
    assert_close(triton_kernels.grad_weight(grad_y, x, weight.shape[-2:], config),
                 triton_kernels.reference_grad_weight(grad_y.double(), x.double(), weight.shape[-2:]), torch.float16)


def test_grad_weight_of_a_kernel_wider_than_two_tiles():
    """Half the kernel's width beyond one tile of G: two bands of tiles either side of the diagonal."""
    x, weight = inputs(1, 1, 4, 70, (1, 67), torch.float32)
    grad_y = torch.randn_like(x)
    assert weight.shape[-1] // 2 > triton_kernels.GRAD_WEIGHT_BLOCK_N
    assert_close(triton_kernels.grad_weight(grad_y, x, weight.shape[-2:]),
                 triton_kernels.reference_grad_weight(grad_y.double(), x.double(), weight.shape[-2:]), torch.float32)


@pytest.mark.parametrize('allow_tf32', [False, True])
def test_fp32_follows_allow_tf32(monkeypatch, allow_tf32):
    """TF32 tensor cores for fp32 exactly when PyTorch's own convolutions would use them."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', allow_tf32)
    x, weight = inputs(2, 3, 20, 24, (31, 31), torch.float32)
    assert triton_kernels._precision(x) == ('tf32' if allow_tf32 else 'ieee')
    assert triton_kernels._precision(x.half()) == 'tf32'  # the name of fp16/bf16 tensor-core products
    assert_close(triton_kernels.forward(x, weight), triton_kernels.reference_forward(x.double(), weight.double()),
                 torch.float32, TF32_TOLERANCE if allow_tf32 else None)


@pytest.mark.skipif(triton_kernels.INTERPRETED, reason='4 GiB tensors: too large for the interpreter')
def test_offsets_beyond_two_to_the_31():
    """The last rows of a tensor of more than 2**31 elements: 64-bit offsets."""
    x = torch.randn(1, 2, 32768, 32769, device=DEVICE, dtype=torch.float16)
    weight = torch.randn(2, 31, 31, device=DEVICE, dtype=torch.float16) / 31
    assert x.numel() > 2 ** 31
    y = triton_kernels.forward(x, weight)[:, 1, -8:]
    # the last 8 output rows need the last 8 + 15 input rows only
    expected = triton_kernels.reference_forward(x[:, 1:, -23:].double(), weight[1:].double())[:, 0, -8:]
    assert_close(y, expected, torch.float16)


@pytest.mark.parametrize('dtype', list(TOLERANCES))
def test_operator_on_triton_with_both_gradients(dtype):
    """Output, input gradient (the forward kernel on the rotated filter) and weight gradient, with a kernel
    the operator crops to the 15 x 19 taps that meet an 8 x 10 map."""
    x, weight = inputs(2, 3, 8, 10, (31, 31), dtype)
    bias = torch.randn(3).to(DEVICE, dtype)
    grad_y = torch.randn_like(x)
    x64, weight64, bias64 = (t.double().requires_grad_() for t in (x, weight, bias))
    x, weight, bias = (t.requires_grad_() for t in (x, weight, bias))
    with use_backend('triton'):
        y = depthwise_conv2d(x, weight, bias)
        y.backward(grad_y)
    expected = F.conv2d(x64, weight64.unsqueeze(1), bias64, padding=15, groups=3)
    expected.backward(grad_y.double())
    for got, want in ((y, expected), (x.grad, x64.grad), (weight.grad, weight64.grad), (bias.grad, bias64.grad)):
        assert got.dtype == dtype
        assert_close(got.detach(), want.detach(), dtype)
