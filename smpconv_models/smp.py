"""Self-moving point (SMP) kernels.

A kernel is a continuous function on [-1, 1]^d built from P points, each with a learned position, a
learned radius and a learned value per filter (Kim & Park, "SMPConv: Self-moving Point Representations
for Continuous Convolution", CVPR 2023, arXiv:2304.02330). Sampling it on a grid of any size gives a dense
kernel:

    K[f, node] = sum_p  weights[f, p] * relu(1 - |positions[p] - node|_1 / radii[p])

Layout of a sampled kernel: the last axis runs along x (coordinate 0, -1 = left) and, in 2D, the axis
before it along y (coordinate 1) pointing up, so row 0 is y = +1. This is the authors' orientation.

This module knows nothing of networks: it turns points into dense kernels.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .ops import sampling_cpu
from .ops.dispatch import capturing_graph

__all__ = ['RADIUS_MIN', 'RADIUS_MAX', 'round_to_odd', 'scaled_kernel_size', 'points_for_kernel', 'kernel_grid', 'smp_kernel', 'central_box', 'point_interpolation', 'SMPKernel', 'project_radii']

# Radii live in [RADIUS_MIN, RADIUS_MAX]: the authors clamp to this range after every optimizer step.
RADIUS_MIN = 1e-3
RADIUS_MAX = 1.0


def round_to_odd(value: float) -> int:
    """The odd integer nearest to `value` (at least 1)."""
    return max(1, 2 * round((value - 1) / 2) + 1)


def scaled_kernel_size(kernel_size: Sequence[int], scale: float, odd: bool) -> Tuple[List[int], float]:
    """The sizes at which a kernel of `kernel_size` taps covers inputs `scale` times longer, round(scale * k) per
    axis (odd where a 'same' convolution needs it), and the gain that keeps its value per unit of input: the
    ratio of the grid cells' sizes, so that the response to smooth input stays the same to first order."""
    if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f'kernel_scale takes a positive finite number, got {scale!r}')
    sizes = [round_to_odd(scale * k) if odd else max(1, round(scale * k)) for k in kernel_size]
    gain = 1.
    for trained, sampled in zip(kernel_size, sizes):
        if trained > 1 and sampled > 1:
            gain *= (trained - 1) / (sampled - 1)
    return sizes, gain


def points_for_kernel(kernel_size: int, divisor: int = 4) -> int:
    """The paper's point budget for a k x k kernel: floor(k^2 / divisor) (4 for SMPConv-T/B, 8 for mobile)."""
    return kernel_size * kernel_size // divisor


def kernel_grid(
        kernel_size: List[int],
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
) -> List[torch.Tensor]:
    """Coordinates of the kernel's nodes, one tensor per point coordinate, broadcastable to `kernel_size`."""
    ndim = len(kernel_size)
    if ndim not in (1, 2):
        raise ValueError(f'SMP kernels are 1D or 2D, got kernel_size {kernel_size}')
    coords: List[torch.Tensor] = []
    for coord in range(ndim):
        axis = ndim - 1 - coord
        nodes = torch.linspace(-1., 1., kernel_size[axis], device=device, dtype=dtype)
        if coord == 1:
            nodes = nodes.flip(0)  # y points up: row 0 is y = +1
        shape = [1] * ndim
        shape[axis] = kernel_size[axis]
        coords.append(nodes.view(shape))
    return coords


def smp_kernel(
        positions: torch.Tensor,
        radii: torch.Tensor,
        weights: torch.Tensor,
        kernel_size: List[int],
        normalize: bool = False,
        grid: Optional[torch.Tensor] = None,
        box: Optional[List[List[int]]] = None,
) -> torch.Tensor:
    """Sample the SMP function on a `kernel_size` grid (or only its taps in `box`).

    Args:
        positions: [P, d] shared by all filters, or [F, P, d] per filter.
        radii: [P], or [F, P] with per-filter positions. Used as given (see `SMPKernel` for the clamp).
        weights: [F, P] or [F, I, P]: each point's value per filter (and input channel).
        kernel_size: d sizes, in tensor order ([height, width] in 2D).
        normalize: divide by the number of points covering each node, as the paper's eq. (1) does.
        grid: [d, *kernel_size] node coordinates to use instead of the exact linspace grid.
        box: per axis, [start, stop): sample only the nodes of the grid from `start` to `stop` (`central_box`,
            `SMPKernel.nonzero_box`).

    Returns:
        Dense kernel of shape [*weights.shape[:-1], *sizes], sizes those of the box (default: kernel_size).
    """
    ndim = positions.shape[-1]
    if ndim != len(kernel_size):
        raise ValueError(f'{ndim}D points cannot be sampled on a {len(kernel_size)}D grid {kernel_size}')
    if grid is None:
        coords = kernel_grid(kernel_size, device=positions.device, dtype=positions.dtype)
    else:
        coords = grid.unbind(0)
    sizes = kernel_size
    if box is not None:
        coords = [_in_box(c, box) for c in coords]
        sizes = [stop - start for start, stop in box]
    interp = point_interpolation(positions, radii, coords, normalize).flatten(-ndim)  # [..., P, K]
    num_points = positions.shape[-2]
    if positions.dim() == 2:
        kernel = weights.reshape(-1, num_points) @ interp
    else:
        kernel = weights.reshape(positions.shape[0], -1, num_points) @ interp
    return kernel.reshape(list(weights.shape[:-1]) + list(sizes))


def point_interpolation(positions: torch.Tensor, radii: torch.Tensor, coords: List[torch.Tensor],
                        normalize: bool = False, node_gain: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Each point's interpolation weight at each node, [..., P, *nodes] for positions [..., P, d], radii [..., P]
    and the nodes' coordinates `coords` (one tensor per point coordinate, broadcast together): the kernel is the
    points' values times them, summed over the points (`smp_kernel`). `normalize`: divided by the number of
    points covering each node; `node_gain` [*nodes]: factors of the nodes' values (zero: a node outside the
    kernel's support), applied here, to a P-th of the kernel's size."""
    ndim = positions.shape[-1]
    # distances [..., P, *nodes]: summed per coordinate by broadcasting, so the largest intermediate has one
    # element per point and node.
    point_shape = list(positions.shape[:-1]) + [1] * ndim
    distance = (positions[..., 0].reshape(point_shape) - coords[0]).abs()
    for coord in range(1, ndim):
        distance = distance + (positions[..., coord].reshape(point_shape) - coords[coord]).abs()
    interp = F.relu(1. - distance / radii.reshape(point_shape))
    if normalize:
        # |N(x)| has no gradient: it only counts the points whose support covers each node.
        coverage = (interp > 0).sum(dim=-ndim - 1, keepdim=True).to(interp.dtype)
        interp = interp * (1. / (coverage + 1e-6))
    if node_gain is not None:
        interp = interp * node_gain
    return interp


def central_box(kernel_size: List[int], window: Optional[List[int]]) -> Optional[List[List[int]]]:
    """The box of the central `window` (odd sizes <= kernel_size) of a kernel; None (the whole kernel) for none."""
    if window is None:
        return None
    box: List[List[int]] = []
    for k, w in zip(kernel_size, window):
        box.append([(k - w) // 2, (k - w) // 2 + w])
    return box


def _in_box(coords: torch.Tensor, box: List[List[int]]) -> torch.Tensor:
    """The node coordinates broadcastable to the kernel within `box` (size-1 axes stay)."""
    ndim = len(box)
    for axis in range(ndim):
        if coords.shape[axis - ndim] > 1:
            coords = coords.narrow(axis - ndim, box[axis][0], box[axis][1] - box[axis][0])
    return coords


class _SampledPointByPoint(torch.autograd.Function):
    """`smp_kernel` of points per filter [F, P, d] on the exact grid, each point evaluated at the nodes it reaches by
    the C++ sampler (ops/sampling_cpu.py), forward and backward. Second derivatives (create_graph) differentiate
    `smp_kernel` itself."""

    @staticmethod
    def forward(ctx, positions: torch.Tensor, radii: torch.Tensor, weights: torch.Tensor, kernel_size: List[int],
                box: Optional[List[List[int]]], normalize: bool) -> torch.Tensor:
        coords = kernel_grid(kernel_size, device=positions.device, dtype=positions.dtype)
        if box is not None:
            coords = [_in_box(c, box) for c in coords]
        nodes_x = coords[0].reshape(-1)
        nodes_y = coords[1].reshape(-1) if len(coords) == 2 else nodes_x.new_zeros(1)
        ctx.save_for_backward(positions, radii, weights, nodes_x, nodes_y)
        ctx.kernel_size, ctx.box, ctx.normalize = kernel_size, box, normalize
        per_input = weights if weights.dim() == 3 else weights[:, None]  # [F, I, P]
        kernel = sampling_cpu.sample(positions, radii, per_input, nodes_x, nodes_y, normalize)
        return kernel.view(*weights.shape[:-1], *[c.numel() for c in reversed(coords)])

    @staticmethod
    def backward(ctx, grad_kernel: torch.Tensor):
        positions, radii, weights, nodes_x, nodes_y = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: gradients that can be differentiated again
            inputs = [t for t, needed in zip((positions, radii, weights), ctx.needs_input_grad) if needed]
            kernel = smp_kernel(positions, radii, weights, ctx.kernel_size, ctx.normalize, box=ctx.box)
            grads = iter(torch.autograd.grad(kernel, inputs, grad_kernel, create_graph=True))
            return tuple(next(grads) if needed else None for needed in ctx.needs_input_grad[:3]) + (None,) * 3
        per_input = weights if weights.dim() == 3 else weights[:, None]
        grad_positions, grad_radii, grad_weights = sampling_cpu.grad(
            grad_kernel.reshape(*per_input.shape[:2], nodes_y.numel(), nodes_x.numel()), positions, radii,
            per_input, nodes_x, nodes_y, ctx.normalize)
        return grad_positions, grad_radii, grad_weights.view_as(weights), None, None, None


# FX records kernel generation as one call: its shape logic runs on concrete parameters.
torch.fx.wrap('smp_kernel')


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _to_size(kernel_size: Union[int, Sequence[int]], ndim: int) -> Tuple[int, ...]:
    size = (kernel_size,) * ndim if _is_size(kernel_size) else kernel_size
    if not isinstance(size, Sequence) or len(size) != ndim or not all(_is_size(k) for k in size):
        raise ValueError(f'kernel_size takes a positive integer or {ndim} of them, got {kernel_size!r}')
    return tuple(size)


class SMPKernel(nn.Module):
    """Learned self-moving points that sample a dense kernel of any size.

    Parameters: `positions` [P, d] (or [F, P, d] per filter), `radii` [P] (or [F, P]) and `weights`
    [F, P] (or [F, I, P] when each filter spans `in_per_filter` input channels). The depthwise ImageNet
    models share positions and radii across the channels of a layer.
    """

    def __init__(
            self,
            num_filters: int,
            num_points: int,
            kernel_size: Union[int, Sequence[int]],
            ndim: int = 2,
            in_per_filter: Optional[int] = None,
            shared_positions: bool = True,
            normalize: bool = False,
            position_std: float = 0.2,
            position_init: str = 'centre',
            weight_std: float = 0.02,
            init_radius: Optional[float] = None,
            radius_range: Tuple[float, float] = (RADIUS_MIN, RADIUS_MAX),
            device=None,
            dtype=None,
    ):
        """
        Args:
            num_filters: F, the number of kernels produced (the channels of a depthwise conv).
            num_points: P, the number of points.
            kernel_size: default sampling size; also sets the initial radius.
            ndim: 1 (sequences) or 2 (images).
            in_per_filter: input channels per filter for full convolutions; None for depthwise.
            shared_positions: one set of points for all filters, else one set per filter.
            normalize: divide by the number of covering points (paper eq. 1); off for ImageNet models.
            position_std: std of the truncated normal that places the points in [-1, 1]^d.
            position_init: 'centre': the points start around 0; 'newest' (1D): at 1 - 2|z|, near +1, the newest
                step of a causal kernel, as in the authors' sequence models (z the truncated normal, in [-1, 0]).
            weight_std: std of the (normal, cut at +-2) point values.
            init_radius: initial radius; default twice the grid step of the smallest axis, 4 / k (at most
                the largest radius).
            radius_range: the interval radii are kept in (the authors' CIFAR/sequence models use 1e-4).
        """
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if ndim not in (1, 2):
            raise ValueError(f'SMP kernels are 1D or 2D, got ndim={ndim}')
        if num_points < 1:
            raise ValueError(f'an SMP kernel needs at least one point, got num_points={num_points}')
        self.kernel_size = _to_size(kernel_size, ndim)
        self.normalize = normalize
        self.position_std = position_std
        if position_init not in ('centre', 'newest') or (position_init == 'newest' and ndim != 1):
            raise ValueError(f"position_init takes 'centre', or 'newest' for 1D kernels, got {position_init!r} "
                             f'({ndim}D)')
        self.position_init = position_init
        self.weight_std = weight_std
        self.radius_min, self.radius_max = radius_range
        if not 0. < self.radius_min <= self.radius_max:
            raise ValueError(f'radius_range must satisfy 0 < min <= max, got {radius_range}')
        if init_radius is None:
            init_radius = min(4. / min(self.kernel_size), self.radius_max)
        self.init_radius = init_radius
        if not self.radius_min <= self.init_radius <= self.radius_max:
            raise ValueError(f'init_radius {self.init_radius} outside radius_range {radius_range}')
        point_dims = (num_points,) if shared_positions else (num_filters, num_points)
        weight_dims = (num_filters,) if in_per_filter is None else (num_filters, in_per_filter)
        self.positions = nn.Parameter(torch.empty(*point_dims, ndim, **dd))
        self.radii = nn.Parameter(torch.empty(*point_dims, **dd))
        self.weights = nn.Parameter(torch.empty(*weight_dims, num_points, **dd))
        # Node coordinates taken over from a checkpoint (the authors' EMA drifts its grid buffer); None
        # means the exact linspace grid. Only used when sampling at `kernel_size`.
        self.register_buffer('grid', None)
        # the last kernel sampled for inference, and what it was sampled from (see _inference_kernel)
        self._cached_kernel: Optional[torch.Tensor] = None
        self._cache_key: Optional[tuple] = None
        self._cache_sources: Tuple[torch.Tensor, ...] = ()
        self.reset_parameters()

    @property
    def num_points(self) -> int:
        return self.positions.shape[-2]

    def reset_parameters(self) -> None:
        if self.position_init == 'newest':
            nn.init.trunc_normal_(self.positions, std=self.position_std, a=-1., b=0.)
            with torch.no_grad():
                self.positions.mul_(2.).add_(1.)
        else:
            nn.init.trunc_normal_(self.positions, std=self.position_std, a=-1., b=1.)
        nn.init.constant_(self.radii, self.init_radius)
        nn.init.trunc_normal_(self.weights, std=self.weight_std)  # cut at +-2, as the authors', not at 2 std

    @torch.no_grad()
    def project_radii(self) -> None:
        """Clamp the radii into `radius_range`; call after each optimizer step."""
        self.radii.clamp_(self.radius_min, self.radius_max)

    def forward(self, kernel_size: Optional[List[int]] = None, box: Optional[List[List[int]]] = None
                ) -> torch.Tensor:
        """Dense kernel [F, (I,) *kernel_size], sampled at `self.kernel_size` unless another size is given;
        only its taps in `box` (per axis [start, stop)) when one is given."""
        default_size = list(self.kernel_size)
        size = default_size if kernel_size is None else list(kernel_size)
        grid = self.grid if size == default_size else None
        if not torch.jit.is_scripting() and self._serves_from_cache():
            return self._inference_kernel(size, grid, box)
        return self._sample(size, grid, box)

    @torch.jit.unused
    def nonzero_box(self, kernel_size: Sequence[int], keep: Sequence[int]) -> List[List[int]]:
        """Per axis, the taps [start, stop) of a `kernel_size` grid beyond which every tap is zero, with zero
        gradients, widened to take in tap `keep` of each axis (a convolution's current position).

        A tap's value is relu(1 - |node - position|_1 / radius) times a point's value, summed over the points: it
        is nonzero only where some point has |node - position| / radius < 1 along each axis, computed here as
        the sampler computes it (same grid, same dtype), so the box holds every nonzero tap exactly. The whole
        kernel: for a grid taken over from a checkpoint (`set_grid`), for points without values (the meta device,
        where MACs are counted: the model's nominal ones), and under torch.compile (a graph cannot depend on the
        points' values)."""
        size = [int(k) for k in kernel_size]
        if self.positions.is_meta or torch.compiler.is_compiling() or (
                self.grid is not None and size == list(self.kernel_size)):
            return [[0, k] for k in size]
        ndim = len(size)
        radii = self.radii.detach().clamp(self.radius_min, self.radius_max).reshape(-1)
        coords = kernel_grid(size, device=self.positions.device, dtype=self.positions.dtype)
        box = []
        for axis, tap in enumerate(keep):
            coordinate = ndim - 1 - axis  # the last axis runs along coordinate 0 (x)
            positions = self.positions.detach()[..., coordinate].reshape(-1)
            reached = _reached_span(coords[coordinate].reshape(-1), positions, radii)
            box.append([min([tap] + reached[:1]), max([tap] + reached[1:]) + 1])
        return box

    @torch.jit.export
    def interpolation_at(self, grid: torch.Tensor, node_gain: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Each point's interpolation weight [(F,) P, *grid.shape[1:]] at the points `grid` [d, ...] of the plane
        (or line), times `node_gain` [...] if given: the kernel there is `weights` times them, summed over the
        points (any points, the nodes of a grid or not)."""
        if node_gain is not None:
            node_gain = node_gain.to(self.positions)
        radii = self.radii.clamp(self.radius_min, self.radius_max)  # as `_sample`
        return point_interpolation(self.positions, radii, grid.to(self.positions).unbind(0), self.normalize,
                                   node_gain)

    def _sample(self, size: List[int], grid: Optional[torch.Tensor], box: Optional[List[List[int]]]
                ) -> torch.Tensor:
        # The clamp keeps a loop that never projects from sampling with a non-positive radius.
        radii = self.radii.clamp(self.radius_min, self.radius_max)
        if not torch.jit.is_scripting() and grid is None and self._sampled_point_by_point():
            return _SampledPointByPoint.apply(self.positions, radii, self.weights, size, box, self.normalize)
        return smp_kernel(self.positions, radii, self.weights, size, normalize=self.normalize, grid=grid, box=box)

    @torch.jit.unused
    def _sampled_point_by_point(self) -> bool:
        """Whether the kernel is sampled point by point, at the nodes each point reaches (the sequence models' points
        reach 1-5 taps of 784 or 16,000, the CIFAR-10 model's a few of 33 x 33): points per filter on a CPU, where
        no graph is recorded and no transform is at work, which must not depend on the points' values
        (`capturing_graph`). On GPUs the whole grid's operations are cheap; the shared points of the ImageNet
        models reach most of their kernels, where one matrix product samples every filter."""
        return not capturing_graph() and sampling_cpu.available(self.positions)

    @torch.jit.unused
    def _serves_from_cache(self) -> bool:
        """Inference outside of graph capture: eval mode, no autograd, no compiler, tracer or transform at work (under
        vmap over stacked parameters, one kernel would serve every model)."""
        return not self.training and not torch.is_grad_enabled() and not capturing_graph()

    @torch.jit.unused
    def _inference_kernel(self, size: List[int], grid: Optional[torch.Tensor],
                          box: Optional[List[List[int]]]) -> torch.Tensor:
        """The kernel, sampled again unless what it is sampled from is the same, value for value, as last time.

        Values, not versions or storage: an in-place change through `.data` (EMA helpers, pruning tools) leaves
        a tensor's version counter as it was. Comparing the points costs a fraction of sampling the kernel."""
        sources = (self.positions, self.radii, self.weights) + (() if grid is None else (grid,))
        key = (tuple(size), None if box is None else tuple(map(tuple, box)), self.normalize, self.radius_min,
               self.radius_max)
        if not (key == self._cache_key and _same_values(sources, self._cache_sources)):
            self._cached_kernel = self._sample(size, grid, box)
            self._cache_key = key
            self._cache_sources = tuple(t.detach().clone() for t in sources)
        return self._cached_kernel

    @torch.jit.ignore
    def set_grid(self, grid: Optional[torch.Tensor]) -> None:
        """Sample at `kernel_size` on the given [d, *kernel_size] node coordinates (None: the exact grid)."""
        if grid is not None:
            if tuple(grid.shape) != self._grid_shape():
                raise ValueError(f'grid of shape {tuple(grid.shape)} does not fit kernel_size '
                                 f'{self.kernel_size}: expected {self._grid_shape()}')
            grid = grid.to(device=self.positions.device, dtype=self.positions.dtype)
        self.grid = grid

    def _grid_shape(self) -> Tuple[int, ...]:
        return (len(self.kernel_size), *self.kernel_size)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # The grid is optional state: a state dict without one means the exact grid.
        key = prefix + 'grid'
        grid = state_dict.get(key)
        if grid is None:
            self.grid = None
        elif tuple(grid.shape) == self._grid_shape():
            self.grid = torch.empty(self._grid_shape(), device=self.positions.device, dtype=self.positions.dtype)
        else:
            error_msgs.append(f'size mismatch for {key}: copying a param with shape {tuple(grid.shape)}, '
                              f'the shape for kernel_size {self.kernel_size} is {self._grid_shape()}.')
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (f'num_filters={self.weights.shape[0]}, num_points={self.num_points}, '
                f'kernel_size={self.kernel_size}, normalize={self.normalize}')


# below this many point-node pairs, testing every node takes less than the ends' candidates (measured on 2 CPU
# cores: smpconv_t's 240 points x 31 nodes, 0.3 ms a layer against 0.5 ms)
_WHOLE_TEST_PAIRS = 1 << 17


def _interval_on_grid(nodes: torch.Tensor, positions: torch.Tensor, radii: torch.Tensor
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each point's interval, position -+ radius, in indices of the evenly spaced grid `nodes` (either way), in
    float64: the nodes it reaches lie strictly inside (low, high), to within rounding."""
    start = nodes[0].double()
    step = (nodes[-1].double() - start) / (nodes.numel() - 1)
    ends = torch.stack([(positions.double() - radii.double() - start) / step,
                        (positions.double() + radii.double() - start) / step])
    return ends.min(0).values, ends.max(0).values


def _reaches(nodes: torch.Tensor, positions: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether each point reaches each node (broadcast), as the sampler computes it: a point's value at a node is
    relu(1 - |node - position|_1 / radius), nonzero only where this holds along every axis."""
    return (positions - nodes).abs() / radii < 1


def _reached_span(nodes: torch.Tensor, positions: torch.Tensor, radii: torch.Tensor) -> List[int]:
    """[first, last] of the grid `nodes` (evenly spaced, either way) that some point reaches, [] for none.

    Each point reaches a run of nodes; its ends, from the point's interval mapped onto the grid in float64, are
    right to within rounding, which can move them one node either way, so the sampler's own test (`_reaches`)
    decides among the three nodes around each end: O(points), where testing every node costs O(points x nodes)
    (61 ms per layer of 900 points and 16,000 taps). Grids of a half-precision dtype, whose nodes rounding
    bunches together, single nodes, and grids small enough that testing every node costs less (under
    `_WHOLE_TEST_PAIRS` point-node pairs) are tested whole."""
    count = nodes.numel()
    if count < 2 or nodes.dtype not in (torch.float32, torch.float64) or \
            positions.numel() * count < _WHOLE_TEST_PAIRS:
        reached = _reaches(nodes, positions[:, None], radii[:, None]).any(0).nonzero().flatten().tolist()
        return reached[:1] + reached[-1:]
    low, high = _interval_on_grid(nodes, positions, radii)
    around = torch.arange(3, device=nodes.device)
    firsts = (low.floor().long()[:, None] + around).clamp(0, count - 1)
    lasts = (high.ceil().long()[:, None] - around).clamp(0, count - 1)
    first = torch.where(_reaches(nodes[firsts], positions[:, None], radii[:, None]), firsts, count).min().item()
    last = torch.where(_reaches(nodes[lasts], positions[:, None], radii[:, None]), lasts, -1).max().item()
    return [first, last] if first < count else []


def _same_values(tensors: Sequence[torch.Tensor], copies: Sequence[torch.Tensor]) -> bool:
    return len(tensors) == len(copies) and all(
        t.dtype == c.dtype and t.device == c.device and torch.equal(t, c) for t, c in zip(tensors, copies))


def project_radii(module: nn.Module) -> None:
    """Clamp the radii of every SMP kernel inside `module` into its range."""
    for m in module.modules():
        if isinstance(m, SMPKernel):
            m.project_radii()
