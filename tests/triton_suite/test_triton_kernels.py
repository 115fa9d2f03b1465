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

# fp32 runs tl.dot in IEEE precision: float32 rounding of sums of <= 31 * 40 products (~1e-6 relative).
# fp16 inputs are exact in fp32 and accumulate there: only the output's rounding to fp16 (~5e-4) remains;
# bf16 likewise (~4e-3).
TOLERANCES = {torch.float32: 2e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
# (batch, channels, height, width, kernel): several tiles of rows and columns, kernels wider than the image,
# a kernel of one row, batch 1, channel counts of 1, 2 and 3
SHAPES = [(2, 3, 9, 11, (7, 5)), (1, 2, 5, 40, (31, 31)), (3, 1, 70, 33, (3, 3)), (1, 2, 4, 6, (1, 9))]


def inputs(batch, channels, height, width, kernel, dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(channels, *kernel, generator=generator) / kernel[0]
    return x.to(DEVICE, dtype), weight.to(DEVICE, dtype)


def assert_close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    """Relative to the largest value: the sums cancel, so some outputs are near zero."""
    tolerance = TOLERANCES[dtype] * expected.abs().max().item()
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=tolerance)


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


@pytest.mark.parametrize('layout', ['channels_last', 'sliced'])
def test_any_input_layout(layout):
    x, weight = inputs(2, 3, 9, 12, (5, 7), torch.float32)
    x = x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else x[..., ::2]
    assert_close(triton_kernels.forward(x, weight), triton_kernels.reference_forward(x.double(), weight.double()),
                 torch.float32)


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
