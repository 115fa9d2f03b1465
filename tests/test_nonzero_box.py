"""Issue 21: SMP layers convolve with the box of taps their points reach, with the same results and gradients as
PyTorch's convolution with the whole kernel (float64: to rounding), on every backend of the long convolution."""
import copy
from contextlib import contextmanager
from functools import partial
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from smpconv_models import CKConv, SMPConv2d, smp
from smpconv_models.layers import ckconv
from smpconv_models.ops import conv_taps, ffts, sampling_cpu, use_backend
from smpconv_models.ops.conv import CONV_BACKENDS
from smpconv_models.ops.depthwise import BACKENDS as DEPTHWISE_BACKENDS
from smpconv_models.ops.dispatch import fft_sizes
from smpconv_models.smp import SMPKernel, _reached_span, kernel_grid, smp_kernel

BACKENDS = list(CONV_BACKENDS)
# those that run 2-D inputs (the C++ direct convolution is 1-D)
BACKENDS_2D = [name for name, backend in CONV_BACKENDS.items() if backend.supports(torch.zeros(1, 1, 1, 1))]


pytestmark = pytest.mark.usefixtures('fresh_choices')


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def _conv(ndim: int, taps: int, radius: float, in_chs: int = 3, out_chs: int = 4) -> CKConv:
    """A layer whose points spread over [-1, 1] with radii around `radius`: a box from a tap to the whole kernel."""
    conv = CKConv(in_chs, out_chs, taps, 5, ndim, radius=radius, position_std=0.4, bias=True, dtype=torch.float64)
    with torch.no_grad():
        conv.points.radii.mul_(torch.empty_like(conv.points.radii).uniform_(0.5, 1.5))
        conv.points.weights.normal_()
    return conv


def _whole_kernel(conv: CKConv, x: torch.Tensor) -> torch.Tensor:
    """The dense reference: PyTorch's convolution with the layer's whole kernel sampled (causal in 1D, 'same' in
    2D), none of the package's operators in the way."""
    kernel = conv.kernel()
    if conv.ndim == 1:
        return F.conv1d(F.pad(x, (kernel.shape[-1] - 1, 0)), kernel, conv.bias)
    return F.conv2d(x, kernel, conv.bias, padding=[k // 2 for k in kernel.shape[2:]])


def _parameters(conv: CKConv):
    return [conv.points.positions, conv.points.radii, conv.points.weights, conv.bias]


def _the_box(conv: CKConv) -> list:
    """The box the layer convolves with: around the current position (causal: the newest tap; 'same': the
    centre)."""
    keep = [k - 1 for k in conv.kernel_size] if conv.ndim == 1 else [k // 2 for k in conv.kernel_size]
    return conv.points.nonzero_box(conv.kernel_size, keep)


def _assert_same_convolution(conv: CKConv, x: torch.Tensor) -> list:
    """Output and gradients (input, positions, radii, values, bias) against the dense reference's, the convolution
    given the box's taps only: the cropped taps are zeros with zero gradients, so only the order of float64 sums
    differs. Returns the box."""
    x = x.detach().requires_grad_()
    grad_y = torch.randn(x.shape[0], conv.points.weights.shape[0], *x.shape[2:], dtype=x.dtype)
    with mock.patch.object(ckconv, 'conv_taps', wraps=conv_taps) as conv_taps_spy:
        y = conv(x)
    box = _the_box(conv)
    assert list(conv_taps_spy.call_args.args[1].shape[2:]) == [stop - start for start, stop in box]
    expected = _whole_kernel(conv, x)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(y, [x, *_parameters(conv)], grad_y)
    expected_grads = torch.autograd.grad(expected, [x, *_parameters(conv)], grad_y)
    for grad, want in zip(grads, expected_grads):
        torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
    return box


@pytest.mark.parametrize('ndim, taps', [(1, 31), (1, 64), (2, 9), (2, 33)])
@pytest.mark.parametrize('radius', [1e-3, 0.05, 0.3, 1.])
def test_every_tap_outside_the_box_is_zero(ndim, taps, radius):
    """And in 1D the box is the tightest (widened to the current step); in 2D it holds the tightest box."""
    conv = _conv(ndim, taps, radius)
    keep = [taps - 1] if ndim == 1 else [taps // 2] * 2
    box = conv.points.nonzero_box(conv.kernel_size, keep)
    kernel = conv.kernel().detach()
    inside = torch.zeros(kernel.shape[2:], dtype=torch.bool)
    inside[tuple(slice(start, stop) for start, stop in box)] = True
    assert not kernel[..., ~inside].any()
    nonzero = kernel.ne(0).flatten(0, 1).any(0)
    for axis, (start, stop) in enumerate(box):
        along = nonzero.any(dim=[d for d in range(ndim) if d != axis]) if ndim > 1 else nonzero
        taps_hit = along.nonzero().flatten().tolist() + [keep[axis]]
        assert start <= min(taps_hit) and max(taps_hit) < stop
        if ndim == 1:
            assert [start, stop] == [min(taps_hit), max(taps_hit) + 1]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize('taps', [1, 2, 9, 784, 16000])
def test_the_reached_span_is_that_of_every_node_tested(monkeypatch, dtype, taps):
    """`nonzero_box` finds each axis's span from each point's interval on the grid, the sampler's test deciding at
    its ends (on grids of any size here): the same span as testing every node, for points whose radius ends
    exactly on a node, that reach no node (between two), or lie off the grid, on grids running either way (rows
    run from y = +1 down)."""
    monkeypatch.setattr(smp, '_WHOLE_TEST_PAIRS', 0)
    generator = torch.Generator().manual_seed(taps)
    spacing = 2 / max(taps - 1, 1)
    on_nodes = -1 + spacing * torch.randint(0, taps, (40,), generator=generator).double()
    cases = {
        'radius ending on a node': (on_nodes, spacing * torch.randint(1, 4, (40,), generator=generator).double()),
        'between two nodes, reaching none': (on_nodes + spacing / 2, torch.full((40,), spacing / 4).double()),
        'anywhere, off the grid too': (torch.rand(40, generator=generator).double() * 3 - 1.5,
                                       torch.rand(40, generator=generator).double() * 0.3 + 1e-4),
    }
    cases['all together'] = tuple(torch.cat(parts) for parts in zip(*cases.values()))
    grid = kernel_grid([taps], dtype=dtype)[0]
    for nodes in (grid, grid.flip(0)):
        for name, (positions, radii) in cases.items():
            positions, radii = positions.to(dtype), radii.to(dtype)
            reached = ((positions[:, None] - nodes).abs() / radii[:, None] < 1).any(0).nonzero().flatten().tolist()
            assert _reached_span(nodes, positions, radii) == reached[:1] + reached[-1:], name


def _points_per_filter(size, in_per_filter, normalize, radius, seed) -> SMPKernel:
    """float64 points per filter spread over and beyond the grid, two of them reaching across the edges of the boxes
    of `_boxes`."""
    generator = torch.Generator().manual_seed(seed)
    points = SMPKernel(4, 6, size, ndim=len(size), in_per_filter=in_per_filter, shared_positions=False,
                       normalize=normalize, init_radius=radius, radius_range=(1e-4, 1.), dtype=torch.float64)
    with torch.no_grad():
        points.positions.copy_(torch.rand(points.positions.shape, generator=generator, dtype=torch.float64) * 2.2
                               - 1.1)
        points.radii.mul_(torch.rand(4, 6, generator=generator, dtype=torch.float64) + 0.5)
        points.weights.normal_(generator=generator)
        for point, fraction in enumerate((1 / 3, 1 / 2)):
            for axis, k in enumerate(reversed(size)):  # coordinate 0 runs along the last axis; y points up
                node = int(k * fraction)
                points.positions[:, point, axis] = (-1 + 2 * node / max(k - 1, 1)) * (1 if axis == 0 else -1)
            points.radii[:, point] = 3 * 2 / max(max(size) - 1, 1)
        points.positions[0, 2] = 0.  # on a node (odd sizes): abs's gradient there is zero
    return points


@contextmanager
def _products(dense):
    """The C++ sampler's products as `dense` asks (None: its own choice), forward and backward."""
    with mock.patch.object(sampling_cpu, 'sample', partial(sampling_cpu.sample, dense=dense)), \
            mock.patch.object(sampling_cpu, 'grad', partial(sampling_cpu.grad, dense=dense)):
        yield


def _boxes(size):
    return (None, [[k // 3, k] for k in size], [[0, max(1, k // 2)] for k in size])


@pytest.mark.parametrize('normalize', [True, False])
@pytest.mark.parametrize('in_per_filter', [None, 3])
@pytest.mark.parametrize('size, radius', [([784], 0.002), ([16000], 0.0002), ([1001], 0.003), ([101], 0.2),
                                          ([1], 0.5), ([33, 33], 0.12), ([9, 4], 0.3), ([33, 1], 0.05)])
def test_points_per_filter_sampled_point_by_point_are_the_whole_grids(normalize, in_per_filter, size, radius):
    """Points per filter on a CPU are sampled at the nodes each one reaches (the C++ sampler): the values and
    gradients of the whole grid's products (float64: to the rounding of sums in another order), in any box, points
    off the grid or the box included, by either of the sampler's products."""
    points = _points_per_filter(size, in_per_filter, normalize, radius, seed=sum(size))
    params = list(points.parameters())
    generator = torch.Generator().manual_seed(1)
    for box in _boxes(size):
        radii = points.radii.clamp(points.radius_min, points.radius_max)
        expected = smp_kernel(points.positions, radii, points.weights, size, normalize=normalize, box=box)
        grad = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
        expected_grads = torch.autograd.grad(expected, params, grad)
        for dense in (None, False, True):
            with _products(dense):
                assert points._sampled_point_by_point()
                kernel = points(None, box)
                grads = torch.autograd.grad(kernel, params, grad)
            torch.testing.assert_close(kernel, expected, rtol=0, atol=1e-13)  # float64 sums of a few O(1) terms
            for got, want in zip(grads, expected_grads):
                # float64 gradients summed over taps of values O(1) in another order
                torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize('dense', [False, True])
@pytest.mark.parametrize('ndim', [1, 2])
def test_points_per_filter_that_are_not_finite_are_pytorchs(ndim, dense):
    """A NaN or infinite position, radius or value, and a radius that is not positive, give the C++ sampler's kernel
    and gradients the NaNs of PyTorch's sampler, where they are (its values elsewhere to rounding)."""
    size = [9, 8][-ndim:]
    positions = torch.rand(4, 5, ndim, dtype=torch.float64) * 2 - 1
    radii = torch.rand(4, 5, dtype=torch.float64) * 0.2 + 0.2
    weights = torch.randn(4, 3, 5, dtype=torch.float64)
    positions[0, 0, -1] = float('nan')  # y only in 2-D: its x reaches a few nodes
    positions[1, 1, 0] = float('inf')
    radii[2, 2] = float('nan')
    radii[3, 3] = -0.3
    weights[3, 1, 4] = float('nan')
    inputs = [t.requires_grad_() for t in (positions, radii, weights)]
    box = [[1, k] for k in size]
    with _products(dense):
        kernel = smp._SampledPointByPoint.apply(*inputs, size, box, True)
        expected = smp_kernel(*inputs, size, normalize=True, box=box)
        grad = torch.randn(kernel.shape, dtype=torch.float64)
        grads = torch.autograd.grad(kernel, inputs, grad)
    expected_grads = torch.autograd.grad(expected, inputs, grad)
    torch.testing.assert_close(kernel, expected, rtol=0, atol=1e-13, equal_nan=True)  # float64 sums, as above
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize('dense', [False, True])
def test_points_per_filter_are_sampled_in_their_dtype_under_autocast(dense):
    """In an autocast region, either of the sampler's products gives float32 points a float32 kernel, the one it
    gives outside, and its backward pass runs (the convolution casts the kernel as it casts any weight)."""
    points = _points_per_filter([33, 33], 3, True, 0.12, seed=0).float()
    with _products(dense):
        kernel = points()
        grad = torch.randn_like(kernel)
        grads = torch.autograd.grad(kernel, list(points.parameters()), grad)
        with torch.autocast('cpu', dtype=torch.bfloat16):  # a backward pass inside the region too
            autocast_kernel = points()
            autocast_grads = torch.autograd.grad(autocast_kernel, list(points.parameters()), grad)
    assert autocast_kernel.dtype == torch.float32 and torch.equal(autocast_kernel, kernel)
    assert all(torch.equal(a, b) for a, b in zip(autocast_grads, grads))


def test_points_per_filter_are_sampled_by_pytorch_where_they_must_be():
    """Half precisions (whose rounding bunches a grid's nodes unevenly), graphs being recorded or compiled, and
    transforms sample with PyTorch's operations; second derivatives are PyTorch's too."""
    points = _points_per_filter([33, 33], 3, True, 0.12, seed=0)
    assert points._sampled_point_by_point()
    assert not copy.deepcopy(points).to(torch.bfloat16)._sampled_point_by_point()
    with mock.patch.object(smp, 'capturing_graph', lambda: True):
        assert not points._sampled_point_by_point()
    # points off the nodes and the coverage fixed (no kink within finite differences' reach)
    positions = (torch.rand(3, 4, 2, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    radii = (torch.rand(3, 4, dtype=torch.float64) * 0.2 + 0.3).requires_grad_()
    weights = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)

    def kernel(positions, radii, weights):
        return smp._SampledPointByPoint.apply(positions, radii, weights, [9, 9], [[1, 8], [2, 9]], False)

    # e.g. gradient penalties
    assert torch.autograd.gradgradcheck(kernel, (positions, radii, weights), fast_mode=True)


def _conv_with_box(ndim: int, taps: int, kind: str) -> CKConv:
    """A layer whose box is one tap (its points on the current position's, reaching no other), part of the
    kernel, or the whole kernel."""
    if kind != 'one tap':
        return _conv(ndim, taps, {'part': 0.1, 'whole': 1.}[kind])
    conv = _conv(ndim, taps, 1e-3)
    with torch.no_grad():  # causal: the newest tap, at x = +1; 'same': the centre
        conv.points.positions.fill_(0.).select(-1, 0).fill_(1. if ndim == 1 else 0.)
    return conv


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('taps, length', [(31, 40), (64, 64), (63, 20), (784, 100), (1, 9)])
@pytest.mark.parametrize('kind', ['one tap', 'part', 'whole'])
def test_causal_layers_convolve_with_their_box_exactly(backend, taps, length, kind):
    """Odd and even kernel lengths, kernels longer than the input, boxes from one tap to the whole kernel."""
    conv = _conv_with_box(1, taps, kind)
    with use_backend(backend):
        box = _assert_same_convolution(conv, torch.randn(2, 3, length, dtype=torch.float64))
    one_tap, whole = [[taps - 1, taps]], [[0, taps]]
    assert box == {'one tap': one_tap, 'whole': whole}.get(kind, box)
    assert kind != 'part' or taps == 1 or box not in (one_tap, whole)


@pytest.mark.parametrize('backend', BACKENDS_2D)
@pytest.mark.parametrize('taps, size', [(33, (16, 16)), (9, (12, 7)), (33, (5, 6))])
@pytest.mark.parametrize('kind', ['one tap', 'part', 'whole'])
def test_same_layers_convolve_with_their_box_exactly(backend, taps, size, kind):
    conv = _conv_with_box(2, taps, kind)
    with use_backend(backend):
        box = _assert_same_convolution(conv, torch.randn(2, 3, *size, dtype=torch.float64))
    one_tap, whole = [[taps // 2, taps // 2 + 1]] * 2, [[0, taps]] * 2
    assert box == {'one tap': one_tap, 'whole': whole}.get(kind, box)
    assert kind != 'part' or box not in (one_tap, whole)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('taps, pad', [((7,), (0,)), ((7,), (6,)), ((6,), (2,)), ((5, 4), (0, 3)), ((3, 6), (1, 0))])
def test_conv_taps_gradients_are_the_numerical_ones(backend, taps, pad):
    """Taps off the centre, before or after the current position, even counts: numerical gradients (float64)."""
    if len(taps) == 2 and backend not in BACKENDS_2D:
        pytest.skip(f'{backend} convolves 1D inputs only')
    x = torch.randn(2, 3, *[9] * len(taps), dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, *taps, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    with use_backend(backend):
        assert torch.autograd.gradcheck(lambda *args: conv_taps(args[0], args[1], pad, args[2]), (x, weight, bias))


def test_the_fft_period_follows_the_box():
    """The FFT's period is the input's length plus the box's taps before the current one (rounded up to a fast
    size): for points among the newest third of a kernel of 63 taps, well under the whole kernel's 64 + 62."""
    conv = _conv(1, 63, 0.05)
    with torch.no_grad():
        conv.points.positions.uniform_(0.4, 1.)
    x = torch.randn(2, 3, 64, dtype=torch.float64, requires_grad=True)

    def periods(convolve):
        with use_backend('fft'), mock.patch.object(ffts, 'spectra', wraps=ffts.spectra) as spectra:
            convolve(x).sum().backward()
        return {tuple(call.args[1]) for call in spectra.call_args_list}

    [[start, stop]] = _the_box(conv)
    assert start > 40
    assert periods(conv) == {tuple(fft_sizes([64], [stop - start], [62 - start]))}
    assert periods(conv.convolve_whole_kernel) == {(128,)} != periods(conv)


def test_a_point_on_the_box_edge_gets_the_whole_kernel_gradient():
    """A point whose support ends exactly on a tap (its value there 0, just outside the box): its position and
    radius get the gradient they get through the whole kernel."""
    conv = _conv(1, 9, 0.1)  # taps at -1, -0.75, ..., 1
    with torch.no_grad():
        conv.points.positions.copy_(torch.tensor([0.5, 0.5, 0.75, 1., 0.875]).view(1, 5, 1).expand_as(
            conv.points.positions))
        conv.points.radii.copy_(torch.tensor([0.25, 0.5, 0.25, 0.25, 0.125]).expand_as(conv.points.radii))
    box = conv.points.nonzero_box(conv.kernel_size, [8])
    assert box == [[5, 9]]  # 0.5 - 0.5 = 0 is tap 4, where that point's value is 0: the box starts after it
    _assert_same_convolution(conv, torch.randn(2, 3, 12, dtype=torch.float64))


def test_a_point_on_the_box_edge_gets_the_whole_kernel_gradient_in_2d():
    """Points whose support ends exactly on a tap just outside the box along either axis (rows run from y = +1
    down; x is the last axis)."""
    conv = _conv(2, 9, 0.1)  # taps at -1, -0.75, ..., 1 along each axis
    with torch.no_grad():
        positions = [[-0.5, -0.5], [-0.5, 0.], [0., 0.5], [0.25, 0.], [0., 0.]]
        conv.points.positions.copy_(torch.tensor(positions).view(1, 5, 2).expand_as(conv.points.positions))
        conv.points.radii.copy_(torch.tensor([0.25, 0.25, 0.25, 0.125, 0.125]).expand_as(conv.points.radii))
    # x = -0.5 +- 0.25 reaches column 2 only, y = +0.5 +- 0.25 row 2 and y = -0.5 row 6: columns 1 and rows 1 and
    # 7, where those points' values are 0, lie just outside
    assert _the_box(conv) == [[2, 7], [2, 6]]
    _assert_same_convolution(conv, torch.randn(2, 3, 10, 11, dtype=torch.float64))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('ndim, taps, size', [(1, 63, (50,)), (2, 33, (16, 16))])
def test_the_box_follows_the_points_between_steps(backend, ndim, taps, size):
    """Points that move between steps (an SGD step, then further, as early training moves and grows them): each
    step convolves with the new box."""
    if ndim == 2 and backend not in BACKENDS_2D:
        pytest.skip(f'{backend} convolves 1D inputs only')
    conv = _conv(ndim, taps, 0.05)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    optimizer = torch.optim.SGD(_parameters(conv), lr=1.)
    boxes = []
    with use_backend(backend):
        for _ in range(3):
            boxes.append(_assert_same_convolution(conv, x))
            optimizer.zero_grad()
            conv(x).square().mean().backward()
            optimizer.step()
            with torch.no_grad():  # and further: the points drift and grow, as they do early in training
                conv.points.positions.add_(0.2)
                conv.points.radii.mul_(1.5)
    assert len({str(box) for box in boxes}) == 3


@pytest.mark.parametrize('ndim, taps, size', [(1, 63, (50,)), (2, 33, (16, 16))])
def test_inference_follows_points_moved_in_place(ndim, taps, size):
    """In eval mode without autograd the sampled kernel is kept between calls, and the layer still convolves with
    the points as they are now, changed in place (through `.data`, as EMA helpers change them): moved out of their
    box, or only their values changed, within the same box."""
    conv = _conv(ndim, taps, 0.05).eval()
    x = torch.randn(2, 3, *size, dtype=torch.float64)

    def moved():
        before = _the_box(conv)
        conv.points.positions.data.add_(0.2)
        conv.points.radii.data.mul_(1.5)
        assert _the_box(conv) != before

    def revalued():
        before = _the_box(conv)
        conv.points.weights.data.mul_(-0.5)
        assert _the_box(conv) == before

    with torch.no_grad():
        for change in (None, moved, revalued, moved):
            if change is not None:
                change()
            with torch.enable_grad():  # the reference sampled afresh, as the cache serves only without autograd
                expected = _whole_kernel(conv, x)
            torch.testing.assert_close(conv(x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('ndim, taps, size', [(1, 63, (50,)), (2, 33, (16, 16))])
def test_autocast_and_empty_batch(ndim, taps, size):
    conv = _conv(ndim, taps, 0.1).float()
    x = torch.randn(2, 3, *size)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y, expected = conv(x), _whole_kernel(conv, x)
    assert y.dtype == expected.dtype == torch.bfloat16
    # both round their inputs to bfloat16 (8 bits) and accumulate in float32; sums of up to 3 x 63 (1D) or
    # 3 x 33 x 33 (2D) terms of order 1, so a few bfloat16 units of the output's magnitude
    torch.testing.assert_close(y.float(), expected.float(), rtol=0, atol=4 * 2 ** -8 * expected.abs().max().item())
    empty = torch.zeros(0, 3, *size, requires_grad=True)
    y = conv(empty)
    assert y.shape == (0, 4, *size)
    y.sum().backward()
    assert empty.grad.shape == empty.shape
    assert all(not p.grad.any() for p in _parameters(conv))


def test_a_kernel_sampled_in_its_box_is_the_whole_kernel_there():
    points = SMPKernel(4, 6, (15, 11), position_std=0.3, dtype=torch.float64)
    box = [[3, 12], [2, 7]]
    torch.testing.assert_close(points(None, box), points()[:, 3:12, 2:7], rtol=0, atol=1e-15)


def test_conv_taps_names_a_pad_outside_the_taps():
    with pytest.raises(ValueError, match=r'conv_taps takes 0 <= pad < taps per axis, got pad \[5\] for taps \[5\]'):
        conv_taps(torch.zeros(1, 2, 8), torch.zeros(3, 2, 5), [5])


@pytest.mark.parametrize('backend', [name for name in DEPTHWISE_BACKENDS if name != 'triton'])  # Triton: GPUs
@pytest.mark.parametrize('radius', [0.05, 0.3])
def test_depthwise_layers_convolve_with_their_symmetric_box_exactly(backend, radius):
    """smpconv_t's layers crop to the box made symmetric about the centre: the same output and gradients as
    PyTorch's convolution with the whole kernel (float64: to rounding), on every CPU backend."""
    conv = SMPConv2d(4, kernel_size=31, num_points=12, dtype=torch.float64)
    with torch.no_grad():
        conv.points.radii.fill_(radius)
        conv.points.weights.normal_()
    window = conv.touched_window(torch.zeros(1, 4, 40, 40))
    assert window[0] < 31 and window[1] < 31 and all(w % 2 for w in window)
    x = torch.randn(2, 4, 20, 24, dtype=torch.float64, requires_grad=True)
    params = [x, conv.points.positions, conv.points.radii, conv.points.weights]
    with mock.patch.object(SMPConv2d, 'kernel', autospec=True, side_effect=SMPConv2d.kernel) as kernel_spy, \
            use_backend(backend):
        y = conv(x)
    assert list(kernel_spy.call_args.args[1]) == window  # the convolution got the window's taps only
    expected = F.conv2d(x, conv.kernel()[:, None], padding=15, groups=4)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-12)
    grad_y = torch.randn_like(y)
    with use_backend(backend):
        grads = torch.autograd.grad(y, params, grad_y)
    for grad, want in zip(grads, torch.autograd.grad(expected, params, grad_y)):
        torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
