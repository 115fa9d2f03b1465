"""The SMP kernel against its definition (SPEC section 1), evaluated node by node in float64."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from smpconv_models.smp import RADIUS_MAX, RADIUS_MIN, SMPKernel, points_for_kernel, project_radii, smp_kernel


def reference_kernel(positions, radii, weights, kernel_size, normalize=False):
    """K[f, (i,) node] = sum_p w[f, (i,) p] * relu(1 - |p - node|_1 / r_p), one node at a time, float64.

    Node coordinates: x = linspace(-1, 1)[column]; in 2D y = linspace(-1, 1)[rows - 1 - row] (y points up).
    """
    positions, radii, weights = positions.double(), radii.double(), weights.double()
    if positions.dim() == 2:  # shared by every filter
        positions = positions.expand(weights.shape[0], *positions.shape)
        radii = radii.expand(weights.shape[0], *radii.shape)
    filters = weights if weights.dim() == 3 else weights[:, None]
    nodes = [torch.linspace(-1, 1, k, dtype=torch.float64) for k in kernel_size]
    out = torch.zeros(*filters.shape[:2], *kernel_size, dtype=torch.float64)
    for index in torch.cartesian_prod(*[torch.arange(k) for k in kernel_size]).reshape(-1, len(kernel_size)):
        if len(kernel_size) == 1:
            node = torch.stack([nodes[0][index[0]]])
        else:
            node = torch.stack([nodes[1][index[1]], nodes[0][kernel_size[0] - 1 - index[0]]])
        for f in range(filters.shape[0]):
            interp = torch.relu(1 - (positions[f] - node).abs().sum(-1) / radii[f])
            if normalize:
                interp = interp / ((interp > 0).sum().double() + 1e-6)
            out[(f, slice(None), *index)] = filters[f] @ interp
    return out if weights.dim() == 3 else out[:, 0]


def random_points(num_points, ndim, filters=None, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lead = () if filters is None else (filters,)
    positions = torch.rand(*lead, num_points, ndim, generator=generator, dtype=dtype) * 2.4 - 1.2
    radii = torch.rand(*lead, num_points, generator=generator, dtype=dtype) * 0.6 + 0.2
    return positions, radii


@pytest.mark.parametrize('position, node', [
    ((1., 1.), (0, 4)),  # x = +1 is the last column, y = +1 the first row
    ((-1., 1.), (0, 0)),
    ((-1., -1.), (4, 0)),
    ((0.5, -1.), (4, 3)),
    ((-0.5, 0.), (2, 1)),
])
def test_single_point_orientation(position, node):
    # a radius below the grid step (0.5) touches exactly the one node the point sits on
    kernel = smp_kernel(torch.tensor([position]), torch.tensor([0.3]), torch.tensor([[2.]]), [5, 5])
    expected = torch.zeros(1, 5, 5)
    expected[(0, *node)] = 2.
    torch.testing.assert_close(kernel, expected, rtol=0, atol=0)


@pytest.mark.parametrize('kernel_size', [[7, 7], [5, 9], [9]])
@pytest.mark.parametrize('normalize', [False, True])
@pytest.mark.parametrize('shared', [True, False])
@pytest.mark.parametrize('in_per_filter', [None, 2])
def test_kernel_matches_definition(kernel_size, normalize, shared, in_per_filter):
    filters, num_points = 3, 6
    positions, radii = random_points(num_points, len(kernel_size), filters=None if shared else filters)
    weight_shape = (filters, num_points) if in_per_filter is None else (filters, in_per_filter, num_points)
    weights = torch.randn(weight_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kernel = smp_kernel(positions, radii, weights, kernel_size, normalize=normalize)
    assert kernel.shape == (*weight_shape[:-1], *kernel_size)
    # float64 against float64: only summation order differs
    torch.testing.assert_close(
        kernel, reference_kernel(positions, radii, weights, kernel_size, normalize), rtol=0, atol=1e-12)


@pytest.mark.parametrize('shared', [True, False])
@pytest.mark.parametrize('normalize', [False, True])
def test_gradcheck_positions_radii_weights(shared, normalize):
    # random float64 points almost surely avoid the kinks of |.| and relu, where the gradient is one-sided
    positions, radii = random_points(4, 2, filters=None if shared else 2, seed=3)
    weights = torch.randn(2, 4, dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_() for t in (positions, radii, weights))
    assert torch.autograd.gradcheck(lambda p, r, w: smp_kernel(p, r, w, [5, 7], normalize=normalize), inputs)


def test_module_parameters_and_init():
    kernel = SMPKernel(96, points_for_kernel(31), 31)
    assert kernel.positions.shape == (240, 2) and kernel.radii.shape == (240,) and kernel.weights.shape == (96, 240)
    assert kernel().shape == (96, 31, 31)
    torch.testing.assert_close(kernel.radii, torch.full((240,), 4 / 31))
    # the authors' initialisation: positions N(0, 0.2) cut at +-1, values N(0, 0.02) (cut at +-2, never hit);
    # the sample stds of 20,000 and 960,000 draws are within 2% of these with overwhelming probability
    torch.manual_seed(0)
    wide = SMPKernel(1000, 10_000, 31, position_std=1.)
    assert wide.positions.abs().max() <= 1. and wide.positions.abs().max() > 0.99
    large = SMPKernel(96, 10_000, 31)
    assert large.positions.std().item() == pytest.approx(0.2, rel=0.02)  # the cut at 5 std changes it by 1e-5
    assert large.weights.std().item() == pytest.approx(0.02, rel=0.02)
    per_filter = SMPKernel(8, 10, 9, ndim=1, in_per_filter=4, shared_positions=False, normalize=True)
    assert per_filter.positions.shape == (8, 10, 1) and per_filter.weights.shape == (8, 4, 10)
    assert per_filter().shape == (8, 4, 9)


def test_module_matches_functional():
    kernel = SMPKernel(4, 12, (7, 9), dtype=torch.float64)
    expected = reference_kernel(kernel.positions.detach(), kernel.radii.detach(), kernel.weights.detach(), [7, 9])
    torch.testing.assert_close(kernel().detach(), expected, rtol=0, atol=1e-12)


def test_sampling_at_other_sizes_samples_the_same_function():
    kernel = SMPKernel(4, 30, 7, dtype=torch.float64)
    small, large = kernel().detach(), kernel([13, 13]).detach()
    assert large.shape == (4, 13, 13)
    # the 7-node grid is every other node of the 13-node grid: the same function at the same points
    torch.testing.assert_close(large[:, ::2, ::2], small, rtol=0, atol=1e-12)
    expected = reference_kernel(kernel.positions.detach(), kernel.radii.detach(), kernel.weights.detach(), [13, 13])
    torch.testing.assert_close(large, expected, rtol=0, atol=1e-12)


def test_radius_projection_and_forward_clamp():
    kernel = SMPKernel(2, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        kernel.radii.copy_(torch.tensor([-0.5, 1e-4, 0.5, 3.]))
    clamped = torch.tensor([RADIUS_MIN, RADIUS_MIN, 0.5, RADIUS_MAX], dtype=torch.float64)
    # forward never sees a radius outside the range, and leaves the parameter to the projection
    expected = smp_kernel(kernel.positions, clamped, kernel.weights, [5, 5])
    torch.testing.assert_close(kernel(), expected, rtol=0, atol=0)
    assert kernel.radii[0] == -0.5
    kernel().square().sum().backward()
    # a radius held at a bound by the clamp gets no gradient until the optimizer brings it back
    assert kernel.radii.grad[0] == 0 and kernel.radii.grad[3] == 0 and kernel.radii.grad[2] != 0
    project_radii(kernel)
    torch.testing.assert_close(kernel.radii.detach(), clamped, rtol=0, atol=0)


def test_radius_range_is_validated():
    with pytest.raises(ValueError, match='init_radius'):
        SMPKernel(2, 4, 5, init_radius=2.)
    with pytest.raises(ValueError, match='radius_range'):
        SMPKernel(2, 4, 5, radius_range=(0., 1.))
    with pytest.raises(ValueError, match='kernel_size'):
        SMPKernel(2, 4, (5, 5, 5))
    with pytest.raises(ValueError, match='kernel_size takes a positive integer or 2 of them, got 5.0'):
        SMPKernel(2, 4, 5.)
    with pytest.raises(ValueError, match='ndim=3'):
        SMPKernel(2, 4, 5, ndim=3)
    with pytest.raises(ValueError, match='num_points=0'):
        SMPKernel(2, 0, 5)
    # small kernels start at the largest radius rather than beyond it
    assert SMPKernel(2, 4, 3).init_radius == RADIUS_MAX


def test_grid_override_is_used_at_its_own_size_only():
    kernel = SMPKernel(3, 20, 5, dtype=torch.float64)
    exact = kernel().detach()
    # shifting every node by +0.1 in x is the same as shifting every point by -0.1
    shifted_grid = torch.stack([
        torch.linspace(-1, 1, 5, dtype=torch.float64).expand(5, 5) + 0.1,
        torch.linspace(1, -1, 5, dtype=torch.float64)[:, None].expand(5, 5),
    ])
    kernel.set_grid(shifted_grid)
    moved = smp_kernel(
        kernel.positions - torch.tensor([0.1, 0.], dtype=torch.float64), kernel.radii, kernel.weights, [5, 5])
    torch.testing.assert_close(kernel(), moved, rtol=0, atol=1e-12)
    assert not torch.allclose(kernel(), exact)
    torch.testing.assert_close(kernel([9, 9])[:, ::2, ::2].detach(), exact, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match='does not fit kernel_size'):
        kernel.set_grid(torch.zeros(2, 7, 7))


def test_grid_travels_with_the_state_dict():
    source = SMPKernel(3, 20, 5)
    source.set_grid(torch.rand(2, 5, 5))
    target = SMPKernel(3, 20, 5)
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target(), source())
    # a state dict without a grid means the exact grid
    target.load_state_dict(SMPKernel(3, 20, 5).state_dict())
    assert target.grid is None and 'grid' not in target.state_dict()
    with pytest.raises(RuntimeError, match='size mismatch for grid'):
        target.load_state_dict({**source.state_dict(), 'grid': torch.zeros(2, 3, 3)})


class _LargestIntermediate(TorchDispatchMode):
    """Records the largest tensor any aten op produces."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_memory_bound_of_shared_positions():
    # SMPConv-T's first layer: C=96, P=240, k=31. Forward and backward stay within [P, k*k] (one value
    # per point and node), half the [P, k*k, d] the specification allows.
    channels, points, size = 96, 240, 31
    kernel = SMPKernel(channels, points, size)
    with _LargestIntermediate() as largest:
        kernel().square().sum().backward()
    assert largest.numel <= points * size * size
