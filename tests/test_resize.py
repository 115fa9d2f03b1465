"""Continuous SMP convolutions that resize feature maps (issue 18): the depthwise 2D layer against the formula.

The formula's direct float64 evaluation is in resize_reference.py; the first test checks it against today's
SMPConv2d, every other test checks `smpconv_models.SMPContinuousConv2d` against it or against a convolution
the formula reduces to.
"""
import itertools
import math
from typing import Sequence, Tuple
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend

import smpconv_models
from smpconv_models.smp import RADIUS_MAX, RADIUS_MIN, smp_kernel

from resize_reference import reference_resize_conv2d

F32_UNIT = 2. ** -24  # unit roundoff of float32 (24 significant bits)
BF16_UNIT = 2. ** -8  # unit roundoff of bfloat16 (8 significant bits)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomise(points: torch.nn.Module, seed: int) -> None:
    """Points anywhere in the square with wide radii, so the kernel is non-zero up to its edges (an edge tap
    kept or dropped by rounding shows) and every point moves the output (its gradient is checked)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param, values in ((points.positions, torch.rand(points.positions.shape, generator=generator) * 2 - 1),
                              (points.radii, 0.4 + 0.5 * torch.rand(points.radii.shape, generator=generator)),
                              (points.weights, torch.randn(points.weights.shape, generator=generator))):
            param.copy_(values)


def _layer(channels: int, kernel_size: int, num_points: int, dtype: torch.dtype = torch.float64):
    layer = smpconv_models.SMPContinuousConv2d(channels, kernel_size, num_points, dtype=dtype)
    _randomise(layer.points, seed=0)
    return layer


def _reference(layer, x: torch.Tensor, out_size: Sequence[int], scale: Tuple[float, float]) -> torch.Tensor:
    points = layer.points
    return reference_resize_conv2d(x, points.positions.detach(), points.radii.detach(), points.weights.detach(),
                                   points.kernel_size, out_size, scale)


def _magnitudes(layer, x: torch.Tensor, out_size: Sequence[int], scale: Tuple[float, float]) -> torch.Tensor:
    """g * sum |w_p| hat_p |x| per output: at least the sum of the |terms| of each output, what the rounding
    error of a floating-point sum is a fraction of (Higham's bound)."""
    points = layer.points
    return reference_resize_conv2d(x.abs(), points.positions.detach(), points.radii.detach(),
                                   points.weights.detach().abs(), points.kernel_size, out_size, scale)


def _terms(kernel_size: int, num_points: int, scale: Tuple[float, float]) -> int:
    """The products an output sums: the taps within the kernel's footprint, (k - 1) / min(s, 1) + 1 per axis,
    and per tap a kernel value summed over the points (plus a few operations per point's distance)."""
    taps = [math.floor((kernel_size - 1) / min(s, 1.)) + 1 for s in scale]
    return taps[0] * taps[1] + num_points + 8


def _interpolated_size(x: torch.Tensor, scale: Tuple[float, float]) -> Tuple[int, int]:
    return tuple(F.interpolate(x, scale_factor=scale).shape[-2:])


# ---- the reference -------------------------------------------------------------------------------------

def test_reference_at_scale_one_is_smpconv2d():
    """At s = 1 the formula is today's layer: the kernel sampled on its k x k linspace grid, 'same' padding.
    This pins the orientation: rows run down from y = +1, columns right from x = -1."""
    conv = smpconv_models.SMPConv2d(3, 7, 9, dtype=torch.float64)
    _randomise(conv.points, seed=1)
    with torch.no_grad():
        conv.points.radii[0] = 1.5  # outside the range: both clamp it to 1
        conv.points.positions[1] = torch.tensor([-0.9, 0.8])  # top left, near the edge
    x = torch.randn(2, 3, 11, 12, dtype=torch.float64)
    expected = F.conv2d(x, conv.kernel()[:, None], padding=7 // 2, groups=3)
    torch.testing.assert_close(_reference(conv, x, (11, 12), (1., 1.)), expected, rtol=1e-12, atol=1e-12)


# ---- 1. s = 1 is today's layer ---------------------------------------------------------------------------

@torch.no_grad()
def test_scale_one_is_smpconv2d_in_float32():
    kernel_size, num_points = 7, 10
    base = smpconv_models.SMPConv2d(3, kernel_size, num_points)
    _randomise(base.points, seed=2)
    layer = smpconv_models.SMPContinuousConv2d(3, kernel_size, num_points)
    layer.load_state_dict(base.state_dict())  # the same keys: points.positions, points.radii, points.weights
    x = torch.randn(2, 3, 12, 13, generator=torch.Generator().manual_seed(0))
    expected = base(x)
    # Both sum the same k^2 products (with kernel values summed over the points), perhaps in other orders:
    # each is within n u of the exact sum, as a fraction of the sum of the terms' magnitudes.
    bound = _terms(kernel_size, num_points, (1., 1.)) * 2 * F32_UNIT * _magnitudes(base, x, (12, 13), (1., 1.))
    for out in (layer(x), layer(x, scale=1.), layer(x, scale=(1., 1.)), layer(x, size=(12, 13))):
        assert out.shape == expected.shape and out.dtype == torch.float32
        assert ((out - expected).abs() <= bound.float()).all()


# ---- 2. s = 1/2 is a strided convolution, s = 2 a transposed one -------------------------------------

def _sampled(layer, x_nodes: torch.Tensor, y_nodes: torch.Tensor, gain: float) -> torch.Tensor:
    """gain * K_f at the nodes (x along columns, y along rows), [C, len(y), len(x)], by the package's sampler."""
    grid = torch.stack(torch.broadcast_tensors(x_nodes[None, :], y_nodes[:, None]))
    points = layer.points
    radii = points.radii.clamp(RADIUS_MIN, RADIUS_MAX)
    return gain * smp_kernel(points.positions, radii, points.weights, list(grid.shape[1:]), grid=grid)


@pytest.mark.parametrize('kernel_size', [3, 5])
@torch.no_grad()
def test_half_scale_is_a_stride_2_convolution(kernel_size):
    """s = 1/2: output pixel j is centred at c = 2j + 1/2 and a = 1 / (k - 1). F.conv2d(stride=2, padding=p)
    meets input v = 2j + m - p with tap m, at X = (v - c) / (k - 1) = (m - p - 1/2) / (k - 1); |X| <= 1 keeps
    m - p in [-(k - 2), k - 1]: 2k - 2 taps, the first at m = 0, so p = k - 2, and an even H gives
    (H + 2p - (2k - 2)) / 2 + 1 = H / 2 outputs. Rows alike with Y = -(m - p - 1/2) / (k - 1); g = 1/4."""
    layer = _layer(2, kernel_size, 4)
    x = torch.randn(2, 2, 8, 10, dtype=torch.float64)
    padding = kernel_size - 2
    nodes = (torch.arange(2 * kernel_size - 2, dtype=torch.float64) - padding - 0.5) / (kernel_size - 1)
    kernel = _sampled(layer, nodes, -nodes, gain=1 / 4)
    expected = F.conv2d(x, kernel[:, None], stride=2, padding=padding, groups=2)
    assert expected.shape[-2:] == (4, 5)
    torch.testing.assert_close(layer(x, scale=0.5), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer(x, size=(4, 5)), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('kernel_size', [3, 5])
@torch.no_grad()
def test_double_scale_is_a_stride_2_transposed_convolution(kernel_size):
    """s = 2: output pixel j is centred at c = j / 2 - 1/4 and a = 2 / (k - 1). F.conv_transpose2d(stride=2,
    padding=p) sends input v to output j = 2v + n - p through tap n, at X = 2 (v - c) / (k - 1)
    = (p - n + 1/2) / (k - 1); |X| <= 1 keeps n - p in [-(k - 2), k - 1]: 2k - 2 taps, p = k - 2 again, and
    2(H - 1) - 2p + 2k - 2 = 2H outputs. Rows: Y = -2 (u - c) / (k - 1) = (m - p - 1/2) / (k - 1); g = 1.
    (The taps of s = 1/2 rotated by 180 degrees: s = 2 is 4x the adjoint of s = 1/2.)"""
    layer = _layer(2, kernel_size, 4)
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64)
    padding = kernel_size - 2
    nodes = (padding + 0.5 - torch.arange(2 * kernel_size - 2, dtype=torch.float64)) / (kernel_size - 1)
    kernel = _sampled(layer, nodes, -nodes, gain=1.)
    expected = F.conv_transpose2d(x, kernel[:, None], stride=2, padding=padding, groups=2)
    assert expected.shape[-2:] == (8, 10)
    torch.testing.assert_close(layer(x, scale=2.), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer(x, size=(8, 10)), expected, rtol=1e-10, atol=1e-12)


# ---- 3. any scale, gradients, empty batches, errors -----------------------------------------------------

@pytest.mark.parametrize('in_size, scale', [
    ((9, 8), 0.37), ((9, 8), 0.73), ((7, 6), 1.37), ((5, 7), 2.5), ((9, 7), (0.73, 1.37)),
])
@pytest.mark.parametrize('kernel_size', [3, 5])
@torch.no_grad()
def test_any_scale_matches_the_formula(in_size, scale, kernel_size):
    layer = _layer(2, kernel_size, 5)
    x = torch.randn(2, 2, *in_size, dtype=torch.float64)
    pair = scale if isinstance(scale, tuple) else (scale, scale)
    out = layer(x, scale=scale)
    expected = _reference(layer, x, _interpolated_size(x, pair), pair)  # floor(H s_y) x floor(W s_x)
    # the 1e-5 relative: room for an implementation that rounds offsets or accumulates in float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize('in_size, out_size', [
    ((7, 9), (1, 1)), ((7, 9), (31, 40)), ((9, 5), (3, 20)), ((6, 6), (6, 6)),
])
@torch.no_grad()
def test_any_output_size_matches_the_formula(in_size, out_size):
    """A size sets the scale s = H' / H, W' / W: 1 x 1, more than 4x larger, down along one axis and up along
    the other."""
    layer = _layer(2, 5, 5)
    x = torch.randn(2, 2, *in_size, dtype=torch.float64)
    out = layer(x, size=out_size)
    scale = (out_size[0] / in_size[0], out_size[1] / in_size[1])
    expected = _reference(layer, x, out_size, scale)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@torch.no_grad()
def test_an_int_size_is_square():
    layer = _layer(2, 3, 3)
    x = torch.randn(1, 2, 6, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x, size=4), layer(x, size=(4, 4)), rtol=0, atol=0)


@pytest.mark.parametrize('resize', [{'scale': 0.73}, {'scale': (1.37, 2.5)}, {'size': (4, 11)}])
def test_gradients(resize):
    """Input, positions, radii and values: radii within the clamp's range, so the clamp passes gradients."""
    layer = _layer(2, 3, 3)
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    names = ['points.positions', 'points.radii', 'points.weights']
    params = tuple(dict(layer.named_parameters())[name].detach().clone().requires_grad_() for name in names)

    def resized(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,), resize)

    assert torch.autograd.gradcheck(resized, (x, *params))


@pytest.mark.parametrize('resize, out_size', [({'scale': 0.73}, (5, 6)), ({'size': (4, 20)}, (4, 20))])
def test_an_empty_batch_gives_an_empty_output(resize, out_size):
    layer = _layer(3, 5, 4)
    out = layer(torch.zeros(0, 3, 8, 9, dtype=torch.float64), **resize)
    assert out.shape == (0, 3, *out_size)


@pytest.mark.parametrize('resize, named', [
    ({'scale': 0.}, 'scale'), ({'scale': -1.}, 'scale'), ({'scale': math.nan}, 'scale'),
    ({'scale': (1., 0.)}, 'scale'), ({'scale': (math.nan, 1.)}, 'scale'),
    ({'scale': 0.1}, 'scale'),  # floor(8 * 0.1) = 0 rows
    ({'size': 0}, 'size'), ({'size': (4, 0)}, 'size'),
    ({'scale': 0.5, 'size': 4}, 'scale'), ({'scale': 0.5, 'size': 4}, 'size'),
])
def test_bad_resizes_are_one_line_errors_naming_the_argument(resize, named):
    layer = _layer(2, 3, 3)
    with pytest.raises(ValueError, match=rf'\b{named}\b') as error:
        layer(torch.zeros(1, 2, 8, 9, dtype=torch.float64), **resize)
    assert '\n' not in str(error.value)


# ---- 4. alignment ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('scale', [0.5, 0.73, 1., 1.37, 2., 3.])
@torch.no_grad()
def test_a_bright_pixel_lands_where_interpolation_puts_it(scale):
    """Input pixel p maps to output coordinate s (p + 1/2) - 1/2, as in F.interpolate(align_corners=False).

    The kernel is one point at the centre with radius 1, symmetric about both axes, so the continuous response
    is centred there exactly; the centroid of its samples errs by the sampling of the response, which shrinks
    as the kernel widens: 0.021 px at worst over these scales for k = 7 in the formula (0.050 for k = 5)."""
    layer = smpconv_models.SMPContinuousConv2d(1, 7, 1, dtype=torch.float64)
    layer.points.positions.zero_()
    layer.points.radii.fill_(1.)
    layer.points.weights.fill_(1.)
    bright = (8, 11)  # different per axis, at least (k - 1) / 2 / s = 6 pixels from every border at s = 1/2
    x = torch.zeros(1, 1, 19, 21, dtype=torch.float64)
    x[0, 0, bright[0], bright[1]] = 1.
    response = layer(x, scale=scale)[0, 0]
    assert (response >= -1e-12).all()  # non-negative, but for the rounding of an FFT backend at scale 1 (1e-17)
    for axis, p in enumerate(bright):
        profile = response.sum(1 - axis)
        centroid = (torch.arange(len(profile), dtype=torch.float64) * profile).sum() / profile.sum()
        assert abs(centroid.item() - (scale * (p + 0.5) - 0.5)) < 0.05


# ---- 5. memory layouts and autocast -----------------------------------------------------------------------

@torch.no_grad()
def test_channels_last():
    kernel_size, num_points, scale = 5, 6, (0.73, 1.37)
    layer = _layer(3, kernel_size, num_points, dtype=torch.float32)
    x = torch.randn(2, 3, 10, 11)
    expected = layer(x, scale=scale)
    out = layer(x.contiguous(memory_format=torch.channels_last), scale=scale)
    assert out.is_contiguous(memory_format=torch.channels_last)  # as depthwise_conv2d keeps the layout
    # the same sums, perhaps in another order: each within n u of exact, of the sum of the terms' magnitudes
    bound = (_terms(kernel_size, num_points, scale) * 2 * F32_UNIT
             * _magnitudes(layer, x, expected.shape[-2:], scale))
    assert ((out - expected).abs() <= bound.float()).all()


@torch.no_grad()
def test_autocast_bfloat16():
    kernel_size, num_points, scale = 5, 6, (0.73, 1.37)
    layer = _layer(3, kernel_size, num_points, dtype=torch.float32)
    x = torch.randn(2, 3, 10, 11)
    expected = layer(x, scale=scale)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(x, scale=scale)
    assert out.dtype == torch.bfloat16  # F.conv2d's dtype under autocast, as depthwise_conv2d's
    assert torch.isfinite(out).all()
    # Rounded to bfloat16: the input (u), the point values and hats the kernel multiplies (2u), the kernel
    # (u) and the output (u), with float32 accumulation adding next to nothing: 5u of the terms' magnitudes,
    # 8u leaves room.
    bound = 8 * BF16_UNIT * _magnitudes(layer, x, expected.shape[-2:], scale)
    assert ((out.float() - expected).abs() <= bound.float()).all()


@pytest.mark.parametrize('scale', [0.5, 2., 1.5, 0.75, (1 / 3, 3.)])
@torch.no_grad()
def test_the_polyphase_and_banded_paths_agree(scale):
    """Rational scales run as strided convolutions per pair of phases, others as banded matrix products: on a
    rational scale both apply, and must compute the same (float64: to rounding)."""
    from smpconv_models.ops import resize
    layer = _layer(3, 5, 6)
    x = torch.randn(2, 3, 12, 14, dtype=torch.float64)
    rows, cols = resize.resize_geometry(x.shape[-2:], layer.kernel_size, scale)
    plan = resize._polyphase_plan(rows, cols)
    assert plan is not None
    bank = layer.bank(rows, cols)
    polyphase = resize._polyphase(x, bank, rows, cols, plan)
    torch.testing.assert_close(resize._banded(x, bank, rows, cols), polyphase, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('scale', [0.73, 0.5, 2., (1.37, 0.6)])
@torch.no_grad()
def test_the_fast_kernels_reference_is_the_layer(scale):
    """`reference_taps`, the plain computation the fast kernels are tested against (a depthwise bank, the
    geometry as index tensors), is the layer's convolution (float64: to rounding)."""
    from smpconv_models.ops import resize
    layer = _layer(3, 5, 6)
    x = torch.randn(2, 3, 13, 11, dtype=torch.float64)
    rows, cols = resize.resize_geometry(x.shape[-2:], layer.kernel_size, scale)
    bank = layer.bank(rows, cols)
    geometry = [torch.tensor(v) for v in (rows.start, rows.phase, cols.start, cols.phase)]
    torch.testing.assert_close(resize.reference_taps(x, bank[:, 0], *geometry), layer(x, scale=scale),
                               rtol=1e-12, atol=1e-12)


def _operator_inputs(scale, depthwise: bool, size: Tuple[int, int] = (9, 10)):
    """x, a random bank (depthwise, or full with 3 filters of 2 channels) and the operator's geometry arguments."""
    from smpconv_models.ops import resize
    x = torch.randn(2, 2, *size, dtype=torch.float64)
    rows, cols = resize.resize_geometry(x.shape[-2:], (5, 3), scale)
    bank = torch.randn(2 if depthwise else 3, 1 if depthwise else 2, rows.phases, rows.taps, cols.phases, cols.taps,
                       dtype=torch.float64)
    return x, bank, rows, cols, resize._geometry_args(rows, cols)


@pytest.mark.parametrize('scale', [0.73, 0.5, (1.37, 2.)])
@pytest.mark.parametrize('depthwise', [True, False])
def test_the_operator_passes_pytorch_custom_op_checks(scale, depthwise):
    """Fake tensors (torch.compile, export), autograd registration, schema, and the same results inside a
    compiled graph, as PyTorch checks them, for the three passes."""
    x, bank, _, _, (out_size, *geometry) = _operator_inputs(scale, depthwise)
    grad_y = torch.randn(x.shape[0], bank.shape[0], *out_size, dtype=torch.float64)
    ops = torch.ops.smpconv
    torch.library.opcheck(ops.resize_conv2d, (x.requires_grad_(), bank.requires_grad_(), out_size, *geometry))
    torch.library.opcheck(ops.resize_conv2d_grad_input, (grad_y, bank, list(x.shape[1:]), *geometry))
    torch.library.opcheck(ops.resize_conv2d_grad_bank, (grad_y, x, list(bank.shape), *geometry))


@pytest.mark.parametrize('depthwise', [True, False])
def test_the_operator_has_exact_first_and_second_derivatives(depthwise):
    from smpconv_models.ops.resize import resize_conv2d
    x, bank, rows, cols, _ = _operator_inputs(0.73, depthwise, size=(5, 4))
    args = (x.requires_grad_(), bank.requires_grad_())
    resize = lambda x, bank: resize_conv2d(x, bank, rows, cols)
    assert torch.autograd.gradcheck(resize, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(resize, args, fast_mode=True)  # e.g. gradient penalties


def test_the_operator_counts_its_flops():
    """2 x multiply-adds per pass: every output meets its taps of each input channel of its group."""
    from smpconv_models.ops.resize import resize_conv2d
    x, bank, rows, cols, _ = _operator_inputs(0.73, depthwise=False)
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        resize_conv2d(x.requires_grad_(), bank.requires_grad_(), rows, cols).sum().backward()
    counts = {str(op): n for op, n in counter.get_flop_counts()['Global'].items()}
    expected = 2 * 2 * 3 * 2 * rows.out_size * cols.out_size * rows.taps * cols.taps
    assert counts == {f'smpconv.resize_conv2d{name}': expected for name in ('', '_grad_input', '_grad_bank')}


def test_the_backend_can_be_forced_and_its_choice_is_recorded(monkeypatch):
    from smpconv_models.ops import choices, clear_choices, resize
    x, bank, rows, cols, _ = _operator_inputs(0.73, depthwise=True)
    clear_choices()
    resize.resize_conv2d(x, bank, rows, cols)
    assert [key[0] for key in choices()] == ['resize.forward']
    monkeypatch.setenv(resize.ENV_VAR, 'no-such-backend')
    with pytest.raises(ValueError, match="unknown resizing convolution backend 'no-such-backend' in "
                                         "SMPCONV_RESIZE_BACKEND"):
        resize.resize_conv2d(x, bank, rows, cols)


def _points_inputs(scale, size: Tuple[int, int] = (9, 10)):
    """x, random points' values [C, P] and interpolation [P, Py, ky, Px, kx], and the operator's geometry."""
    from smpconv_models.ops import resize
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    rows, cols = resize.resize_geometry(x.shape[-2:], (5, 3), scale)
    weights = torch.randn(3, 4, dtype=torch.float64)
    interp = torch.rand(4, rows.phases, rows.taps, cols.phases, cols.taps, dtype=torch.float64)
    return x, weights, interp, rows, cols


@pytest.mark.parametrize('backend', ['torch', 'cpp'])
@pytest.mark.parametrize('scale', [0.73, 0.5, (1.37, 2.)])
def test_the_points_operator_is_the_bank_operator_on_its_bank(scale, backend):
    """resize_conv2d_points(x, weights, interp) = resize_conv2d(x, weights @ interp), gradients included, on each
    CPU backend (float64: to rounding; the bank operator on PyTorch's backend, a different computation)."""
    from smpconv_models.ops import resize, use_backend
    x, weights, interp, rows, cols = _points_inputs(scale)
    inputs = tuple(t.requires_grad_() for t in (x, weights, interp))
    grad_y = torch.randn(2, 3, rows.out_size, cols.out_size, dtype=torch.float64)
    with use_backend(backend):
        y = resize.resize_conv2d_points(*inputs, rows, cols)
        grads = torch.autograd.grad(y, inputs, grad_y)
    with use_backend('torch'):
        bank = (inputs[1] @ inputs[2].flatten(1)).view(3, 1, *interp.shape[1:])
        expected = resize.resize_conv2d(inputs[0], bank, rows, cols)
        expected_grads = torch.autograd.grad(expected, inputs, grad_y)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    for grad, want in zip(grads, expected_grads):
        torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('scale', [0.73, 0.5])
def test_the_points_operator_passes_pytorch_custom_op_checks(scale):
    """As the bank operator's; its gradient passes have no derivatives of their own (the operator's second
    derivatives go through the bank), so they are checked on tensors that need none."""
    x, weights, interp, rows, cols = _points_inputs(scale)
    from smpconv_models.ops import resize
    out_size, *geometry = resize._geometry_args(rows, cols)
    grad_y = torch.randn(2, 3, *out_size, dtype=torch.float64)
    ops = torch.ops.smpconv
    torch.library.opcheck(ops.resize_conv2d_points, (x.requires_grad_(), weights.requires_grad_(),
                                                     interp.requires_grad_(), out_size, *geometry))
    x, weights, interp = x.detach(), weights.detach(), interp.detach()
    torch.library.opcheck(ops.resize_conv2d_points_grad_input, (grad_y, weights, interp, list(x.shape[1:]),
                                                                *geometry))
    torch.library.opcheck(ops.resize_conv2d_points_grad_points, (grad_y, x, weights, interp, *geometry))


def test_the_points_operator_has_exact_first_and_second_derivatives():
    """Second derivatives (gradient penalties) go through the bank, whose passes have derivatives."""
    from smpconv_models.ops.resize import resize_conv2d_points
    x, weights, interp, rows, cols = _points_inputs(0.73, size=(5, 4))
    args = tuple(t.requires_grad_() for t in (x, weights, interp))
    resize = lambda *args: resize_conv2d_points(*args, rows, cols)
    assert torch.autograd.gradcheck(resize, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(resize, args, fast_mode=True)


def test_the_points_operator_counts_its_flops():
    """The bank operator's count, plus the bank's sampling: once in the forward and input-gradient passes, twice
    (both points' gradients) in the last."""
    from smpconv_models.ops.resize import resize_conv2d_points
    x, weights, interp, rows, cols = _points_inputs(0.73)
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        resize_conv2d_points(*(t.requires_grad_() for t in (x, weights, interp)), rows, cols).sum().backward()
    counts = {str(op): n for op, n in counter.get_flop_counts()['Global'].items()}
    convolution = 2 * 2 * 3 * rows.out_size * cols.out_size * rows.taps * cols.taps
    sampling = 2 * weights.numel() * interp[0].numel()
    assert counts == {'smpconv.resize_conv2d_points': convolution + sampling,
                      'smpconv.resize_conv2d_points_grad_input': convolution + sampling,
                      'smpconv.resize_conv2d_points_grad_points': convolution + 2 * sampling}


def test_depthwise_layers_resize_through_the_points_operator():
    """A depthwise layer's bank is sampled inside the convolution, a full one's made first."""
    x = torch.randn(1, 3, 9, 10, dtype=torch.float64)
    depthwise = _layer(3, 5, 4)
    full = smpconv_models.SMPContinuousConv2d(3, 5, 4, out_channels=2, dtype=torch.float64)
    for layer, op in ((depthwise, 'smpconv.resize_conv2d_points'), (full, 'smpconv.resize_conv2d')):
        with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
            layer(x, scale=0.73)
        assert op in {str(op) for op in counter.get_flop_counts()['Global']}


def test_bad_points_are_one_line_errors():
    from smpconv_models.ops.resize import resize_conv2d_points
    x, weights, interp, rows, cols = _points_inputs(0.73)
    for bad in ((x, weights[:2], interp), (x, weights, interp[:3]), (x, weights, interp[:, :1])):
        with pytest.raises(ValueError, match=r'resize_conv2d_points takes x \[B, C, 9, 10\], weights \[C, P\] and '
                                             r'interp \[P, 6, 6, 7, 3\] for its geometry, got') as error:
            resize_conv2d_points(*bad, rows, cols)
        assert '\n' not in str(error.value)


@torch.no_grad()
@pytest.mark.parametrize('form', ['depthwise 2D', 'depthwise 1D', 'full 2D (CKConv.resize)'])
def test_compiles_in_one_graph_per_input_size(form):
    """A layer that resizes by a fixed scale compiles without graph breaks, a graph per input size, as
    docs/resizing.md says: the geometry, plain Python over the sizes, specialises the graph on them even where
    torch.compile would take a size that changed between calls as a symbol. A scale that changes between calls of
    one compiled function becomes symbolic, which the geometry does not take yet."""
    if form == 'depthwise 2D':
        layer, shapes = _layer(4, 5, 6, dtype=torch.float32), [(2, 4, 12, 13), (2, 4, 16, 15), (2, 4, 9, 20)]
    elif form == 'depthwise 1D':
        layer, shapes = smpconv_models.SMPContinuousConv1d(3, 9, 6), [(2, 3, 40), (2, 3, 57), (2, 3, 33)]
    else:
        layer = smpconv_models.CKConv(3, 4, 5, 6, ndim=2, radius=0.5, position_std=0.4, bias=True).resize
        shapes = [(2, 3, 12, 13), (2, 3, 16, 15), (2, 3, 9, 20)]
    torch._dynamo.reset()  # the other forms' graphs of this lambda would count toward its recompile limit
    counter = CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(lambda t: layer(t, scale=0.73), backend=counter, fullgraph=True)
    # Dynamo warns once per process through warn_once, so its calls are what tell whether this test's tracing warned
    with mock.patch('torch._dynamo.utils.warn_once') as dynamo_warnings:
        for shape in shapes:
            x = torch.randn(shape)
            torch.testing.assert_close(compiled(x), layer(x, scale=0.73))
    assert counter.frame_count == len(shapes)  # one graph per size, none with symbolic sizes
    assert dynamo_warnings.call_args_list == []  # none of the cached geometry it traces through


def _direct_1d(layer, x: torch.Tensor, scale: float) -> torch.Tensor:
    """The causal 1D formula evaluated directly in float64: output j sees the inputs u with c - 2R <= u <= c, at
    kernel coordinate 1 + (u - c) / R (its newest end on the centre), R = (k - 1) / (2 min(s, 1)), gain min(s, 1)."""
    k, length = layer.points.kernel_size[0], x.shape[-1]
    radius, gain = (k - 1) / (2 * min(scale, 1.)), min(scale, 1.)
    positions, weights = layer.points.positions.double(), layer.points.weights.double()
    radii = layer.points.radii.double().clamp(RADIUS_MIN, RADIUS_MAX)
    inputs = torch.arange(length, dtype=torch.float64)
    out = []
    for j in range(math.floor(length * scale)):
        offset = inputs - ((j + 0.5) / scale - 0.5)
        coordinate = 1 + offset / radius
        kernel = weights @ torch.relu(1 - (coordinate[None] - positions[:, 0, None]).abs() / radii[:, None])
        out.append(gain * (kernel * ((offset <= 1e-9) & (offset >= -2 * radius - 1e-9)) * x.double()).sum(-1))
    return torch.stack(out, -1)


@torch.no_grad()
def test_1d_causal_layer():
    """Scale 1 is the causal depthwise convolution with the kernel sampled on its k taps (the newest on the
    current step); other scales match the formula (float64: to rounding)."""
    layer = smpconv_models.SMPContinuousConv1d(3, 9, 6, dtype=torch.float64)
    _randomise(layer.points, 3)
    x = torch.randn(2, 3, 40, dtype=torch.float64)
    kernel = layer.points()
    torch.testing.assert_close(layer(x), F.conv1d(F.pad(x, (8, 0)), kernel[:, None], groups=3), rtol=0, atol=1e-12)
    for scale in (0.5, 0.73, 1.37, 2.):
        torch.testing.assert_close(layer(x, scale=scale), _direct_1d(layer, x, scale), rtol=1e-10, atol=1e-10)
    assert layer(x, size=17).shape == (2, 3, 17)


@torch.no_grad()
def test_1d_layer_resamples_a_signal_as_its_decimated_copy():
    """Halving a smooth signal with the layer gives what the layer at scale 1 gives on the 2x-decimated signal:
    the same kernel span in time, output step j at the same instant (input 2j). Within 2%: the two sum the smooth
    product on grids of different steps (1% here)."""
    layer = smpconv_models.SMPContinuousConv1d(3, 51, 12, dtype=torch.float64)
    steps = torch.arange(2000, dtype=torch.float64)
    signal = torch.stack([torch.sin(2 * math.pi * steps / period) for period in (300, 170, 450)])[None]
    halved, decimated = layer(signal, scale=0.5)[..., 100:], layer(signal[..., ::2])[..., 100:]
    assert (halved - decimated).abs().max() < 0.02 * decimated.abs().max()


def test_1d_gradients():
    layer = smpconv_models.SMPContinuousConv1d(2, 5, 4, dtype=torch.float64)
    _randomise(layer.points, 4)
    x = torch.randn(1, 2, 11, dtype=torch.float64, requires_grad=True)
    params = dict(layer.named_parameters())

    def run(x, positions, radii, weights):
        return torch.func.functional_call(layer, {'points.positions': positions, 'points.radii': radii,
                                                  'points.weights': weights}, (x,), {'scale': 0.73})
    assert torch.autograd.gradcheck(run, (x, *(params[f'points.{n}'] for n in ('positions', 'radii', 'weights'))))


def _direct_full(conv, x: torch.Tensor, scale) -> torch.Tensor:
    """The full form evaluated directly in float64, in 2D ('same') or 1D (causal): output channel o sums, over the
    input channels c, the input weighted by K_oc, its own points' hats with a value per input channel, divided by
    the number of its points covering the tap (the paper's eq. 1), zero outside [-1, 1]; plus the bias."""
    points = conv.points
    positions, weights = points.positions.double(), points.weights.double()  # [O, P, d], [O, C, P]
    radii = points.radii.double().clamp(points.radius_min, points.radius_max)
    k, ndim = points.kernel_size[0], conv.ndim
    scales = (scale,) * ndim if isinstance(scale, (int, float)) else tuple(scale)
    outputs = [math.floor(n * s) for n, s in zip(x.shape[2:], scales)]
    radius = [(k - 1) / (2 * min(s, 1.)) for s in scales]
    gain = math.prod(min(s, 1.) for s in scales)
    y = torch.zeros(x.shape[0], weights.shape[0], *outputs, dtype=torch.float64)
    for out in itertools.product(*(range(n) for n in outputs)):
        offsets = [torch.arange(n, dtype=torch.float64) - ((o + 0.5) / s - 0.5)
                   for n, o, s in zip(x.shape[2:], out, scales)]
        if ndim == 1:  # causal: the newest end of the kernel on the centre
            coordinates = [1 + offsets[0] / radius[0]]
            inside = (offsets[0] <= 1e-9) & (offsets[0] >= -2 * radius[0] - 1e-9)
            distance = (coordinates[0] - positions[..., 0, None]).abs()  # [O, P, N]
        else:  # x along the columns, y up the rows
            ys, xs = -offsets[0][:, None] / radius[0], offsets[1][None, :] / radius[1]
            inside = (ys.abs() <= 1 + 1e-9) & (xs.abs() <= 1 + 1e-9)
            distance = (xs - positions[..., 0, None, None]).abs() + (ys - positions[..., 1, None, None]).abs()
        hats = torch.relu(1 - distance / radii.view(*radii.shape, *([1] * ndim)))
        cover = (hats > 0).sum(1, keepdim=True).to(hats)
        kernel = torch.einsum('ocp,op...->oc...', weights, hats / (cover + 1e-6)) * inside
        y[(slice(None), slice(None), *out)] = gain * torch.einsum('oc...,bc...->bo', kernel, x.double())
    return y + conv.bias.double().view(1, -1, *([1] * ndim))


@pytest.mark.parametrize('ndim, scale', [(2, 0.73), (2, (1.37, 0.5)), (2, 2.), (1, 0.5), (1, 0.73), (1, 1.6)])
@torch.no_grad()
def test_the_full_form_matches_the_formula(ndim, scale):
    """CKConv.resize, the full form (points per output channel, a value per input channel, the coverage
    normalisation of the CIFAR-10 and sequence models' convolutions), against the direct float64 formula."""
    conv = smpconv_models.CKConv(3, 4, 5, 6, ndim=ndim, radius=0.5, position_std=0.4, bias=True).double()
    _randomise(conv.points, 5)
    conv.bias.normal_()
    x = torch.randn(2, 3, *((7, 8) if ndim == 2 else (23,)), dtype=torch.float64)
    torch.testing.assert_close(conv.resize(x, scale=scale), _direct_full(conv, x, scale), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(conv.resize(x), conv(x))
