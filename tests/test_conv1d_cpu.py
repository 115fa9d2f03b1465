"""The C++ direct 1-D convolution (smpconv_models/ops/conv1d_cpu.py), the long convolution's `cpp` backend, against
float64 definitions."""

import pytest
import torch
import torch.nn.functional as F

from smpconv_models import causal_conv1d, conv2d_same
from smpconv_models.layers.ckconv import CausalConv1d
from smpconv_models.ops import choices, conv1d_cpu, use_backend


@pytest.fixture(scope='module')
def built() -> None:
    if not conv1d_cpu.available(torch.zeros(1, 1, 1)):
        pytest.skip('the C++ extension did not build on this machine (see the warning): the long convolution '
                    'convolves directly with PyTorch')


pytestmark = pytest.mark.usefixtures('fresh_choices')


def reference(x: torch.Tensor, weight: torch.Tensor, pad: int) -> torch.Tensor:
    """y[b, o, t] = sum_c sum_j w[o, c, j] x[b, c, t - pad + j], in float64."""
    return F.conv1d(F.pad(x.double(), (pad, weight.shape[-1] - 1 - pad)), weight.double())


# B, C, O, T, K: whole and partial blocks of 6 output channels (and of 2 for the weight gradient), of 16 steps (8
# in float64) and of 5 taps; a single step; kernels longer than x; the sequence models' small kernels; several chunks
# of steps ([1, 30, 7, 2500]: 128 KB of 30 rows is 1,088 float32 steps, of the weight gradient's 37 rows 880)
SHAPES = [(2, 3, 7, 21, 5), (1, 1, 1, 1, 1), (3, 5, 13, 9, 40), (2, 30, 30, 100, 5), (1, 1, 30, 50, 274),
          (2, 4, 12, 33, 7), (1, 30, 7, 2500, 9)]


@pytest.mark.parametrize('batch, channels, outs, steps, taps', SHAPES)
@pytest.mark.parametrize('where', ['causal', 'centred', 'anticausal'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_both_passes_are_the_definition(built, batch, channels, outs, steps, taps, where, dtype):
    pad = {'causal': taps - 1, 'centred': taps // 2, 'anticausal': 0}[where]
    generator = torch.Generator().manual_seed(batch * 1000 + channels * 100 + taps)
    x = torch.randn(batch, channels, steps, generator=generator, dtype=dtype)
    weight = torch.randn(outs, channels, taps, generator=generator, dtype=dtype)
    grad_y = torch.randn(batch, outs, steps, generator=generator, dtype=dtype)
    y = conv1d_cpu.forward(x, weight, [pad])
    grad_w = conv1d_cpu.grad_weight(grad_y, x, [taps], [pad])
    x64, weight64 = x.double().requires_grad_(), weight.double().requires_grad_()
    expected = reference(x64, weight64, pad)
    (expected_grad_w,) = torch.autograd.grad(expected, weight64, grad_y.double())
    assert y.dtype == grad_w.dtype == dtype and y.shape == expected.shape and grad_w.shape == weight.shape
    # sums of at most C K (forward) or B T (weight gradient) products of O(1) numbers, of size ~sqrt of that: float32
    # rounds each to ~1e-7 of the terms' scale times their count, float64 to ~1e-16
    epsilon = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(y.double(), expected.detach(), rtol=0, atol=epsilon * channels * taps)
    torch.testing.assert_close(grad_w.double(), expected_grad_w, rtol=0, atol=epsilon * batch * steps)


def test_results_do_not_depend_on_the_number_of_threads(built):
    generator = torch.Generator().manual_seed(1)
    x, weight = torch.randn(4, 30, 700, generator=generator), torch.randn(30, 30, 5, generator=generator)
    grad_y = torch.randn(4, 30, 700, generator=generator)
    threads = torch.get_num_threads()
    outputs = []
    try:
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            outputs.append((conv1d_cpu.forward(x, weight, [4]), conv1d_cpu.grad_weight(grad_y, x, [5], [4])))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*outputs):
        assert torch.equal(one, many)


def test_half_precisions_are_computed_in_float32(built):
    generator = torch.Generator().manual_seed(2)
    x, weight = torch.randn(2, 3, 40, generator=generator), torch.randn(4, 3, 5, generator=generator)
    y = conv1d_cpu.forward(x.bfloat16(), weight.bfloat16(), [4])
    assert y.dtype == torch.bfloat16
    # the bfloat16 inputs' products summed in float32, then rounded to bfloat16 (2^-8 relative)
    torch.testing.assert_close(y.double(), reference(x.bfloat16(), weight.bfloat16(), 4), rtol=2 ** -8, atol=1e-6)


def test_the_dispatcher_times_it_against_pytorch_and_the_fft(built):
    """The sequence models' small kernels: a training step chooses among all three backends, each pass too."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(8, 6, 100, generator=generator, requires_grad=True)
    weight = torch.randn(6, 6, 5, generator=generator, requires_grad=True)
    causal_conv1d(x, weight).sum().backward()
    made = choices()
    assert {key[0] for key in made} >= {'conv.step'}
    assert set(made.values()) <= {'torch', 'cpp', 'fft'}
    assert conv1d_cpu.available(x) and not conv1d_cpu.available(torch.zeros(1, 1, 3, 3))
    assert not conv1d_cpu.available(torch.zeros(1, 1, 3, dtype=torch.int64))
    with use_backend('cpp'), pytest.raises(RuntimeError, match=r"'cpp' does not run .* shape \(1, 1, 3, 3\)"):
        conv2d_same(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3))


def test_bad_inputs_are_named(built):
    correlate, grad_weight = conv1d_cpu.EXTENSION.module().correlate, conv1d_cpu.EXTENSION.module().grad_weight
    x, weight = torch.zeros(2, 3, 10), torch.zeros(4, 3, 5)
    with pytest.raises(RuntimeError, match='float32 or float64 tensors alike'):
        correlate(x, weight.double(), 4)
    with pytest.raises(RuntimeError, match='contiguous x'):
        correlate(x.transpose(1, 2), weight, 4)
    with pytest.raises(RuntimeError, match='0 <= pad < K'):
        correlate(x, weight, 5)
    with pytest.raises(RuntimeError, match=r'correlate takes x \[B, C, T\], w \[O, C, K\]'):
        correlate(x, torch.zeros(4, 2, 5), 4)
    with pytest.raises(RuntimeError, match=r'grad_weight takes dy \[B, O, T\], x \[B, C, T\]'):
        grad_weight(torch.zeros(2, 4, 9), x, 5, 4)
    assert correlate(x[:0], weight, 4).shape == (0, 4, 10)
    assert torch.equal(grad_weight(torch.zeros(0, 4, 10), x[:0], 5, 4), torch.zeros(4, 3, 5))


def test_the_small_kernels_layer_is_the_padded_convolution(built):
    """`CausalConv1d` (the pairs' small kernels) computes through the operator; its backend, forced or chosen."""
    layer = CausalConv1d(3, 4, 5, bias=True).double()
    x = torch.randn(2, 3, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    expected = F.conv1d(F.pad(x, (4, 0)), layer.weight, layer.bias)
    for backend in ('cpp', None):
        with use_backend(backend):
            torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)  # float64 sums of 15 products


def test_a_failed_build_warns_once_and_the_convolution_runs_on_the_others(without_compiler, twice_with_warnings):
    without_compiler(conv1d_cpu)
    generator = torch.Generator().manual_seed(5)
    x, weight = torch.randn(2, 3, 50, generator=generator), torch.randn(4, 3, 5, generator=generator)
    y, messages = twice_with_warnings(lambda: causal_conv1d(x, weight))
    assert messages == [
        'the C++ direct 1-D convolution did not build (no C++ compiler found): it computes with PyTorch']
    assert 'cpp' not in [name for key, name in choices().items() if key[0].startswith('conv.')]
    # float32 sums of 15 products of O(1) numbers
    torch.testing.assert_close(y.double(), reference(x, weight, 4), rtol=0, atol=1e-5)
