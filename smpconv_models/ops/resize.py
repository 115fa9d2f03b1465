"""Convolution that resizes its input by any factor, with a kernel that is a continuous function ("From Discrete
to Continuous Convolution Layers", Shocher et al., arXiv:2006.11120).

For an input of H x W pixels and a scale s per axis (an output of H' = floor(H s) x W' pixels, or a given size,
s = H'/H), the centre of output pixel i lies at input coordinate c(i) = (i + 1/2) / s - 1/2, the geometry of
`F.interpolate(align_corners=False)`, and

    y[b, f, i, j] = g * sum over input pixels (u, v) of  K_f(a_y (u - c_y(i)), a_x (v - c_x(j))) x[b, f, u, v]

with zero padding, K_f the filter's continuous kernel on [-1, 1]^2 (zero outside), a = 2 / (k - 1) * min(s, 1)
per axis (a kernel of k taps keeps its footprint of k input pixels when upscaling, and stretches over k output
pixels when downscaling, acting as a learned anti-aliasing filter), and g = min(s_y, 1) * min(s_x, 1), which
keeps the response to smooth input that of s = 1.

Depthwise (a bank of one input channel per output) or full (all of them), as F.conv2d's weights.

Per axis, the taps of output i are the input pixels within R = (k - 1) / (2 min(s, 1)) of c(i), and where they
fall relative to c(i) depends only on the fractional part of c(i), the output's phase. The kernel is sampled once
per pair of phases (`AxisGeometry.offsets()`), and the convolution computes

    y[b, f, i, j] = sum_{m, n} bank[f, phase_y(i), m, phase_x(j), n] * x[b, f, start_y(i) + m, start_x(j) + n]

For a rational scale p/q the phases repeat every p outputs, q inputs further on: one strided convolution per
pair of phases computes the outputs of that pair (`polyphase`). Otherwise every output has a phase of its own
and each output row is one matrix product with a banded matrix of its columns' taps (`banded`). Both are exact;
they differ in cost.
"""
import functools
import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .dispatch import compute_dtype, memory_format

__all__ = ['AxisGeometry', 'axis_geometry', 'resize_geometry', 'resize_conv2d', 'resize_conv1d', 'reference_taps',
           'reference_grads']

# fractional positions closer than this are one phase (float64 rounding of (i + 1/2) / s is far below it)
_PHASE_TOLERANCE = 1e-9
# output columns per matrix product of the banded path: its input window grows with them, its count of
# products shrinks
_COLUMN_BLOCK = 8
# phase pairs up to which one strided convolution per pair beats gathering the taps (each call costs a pass
# over the input)
_MAX_POLYPHASE_PAIRS = 16

Scale = Union[float, Sequence[float]]
Size = Union[int, Sequence[int]]


class AxisGeometry(NamedTuple):
    """Where the taps of every output of one axis fall: output i reads `taps` inputs from `start[i]` on (negative
    or past the end: zero padding), weighted by the kernel sampled at `offsets()[phase[i]]`. Plain numbers, so
    that compiled graphs take them as constants."""
    in_size: int
    out_size: int
    scale: float
    radius: float  # R, in input pixels: taps farther from an output's centre meet no kernel
    taps: int
    first_offsets: Tuple[float, ...]  # per phase: its first tap's input position minus its output's centre
    phase: Tuple[int, ...]  # per output
    start: Tuple[int, ...]  # per output
    causal: bool = False  # the taps reach from 2R before an output's centre to it, not R on either side

    @property
    def phases(self) -> int:
        return len(self.first_offsets)

    @property
    def is_identity(self) -> bool:
        """Whether the axis keeps its size at scale 1: the plain convolution."""
        return (self.out_size, self.scale) == (self.in_size, 1.)

    def period(self) -> Optional[Tuple[int, int]]:
        """(outputs, inputs) after which phases repeat, the outputs of a phase stepping that many inputs on; None
        where every output has a phase of its own."""
        outputs = self.phases
        if outputs == self.out_size:
            return None
        steps = {b - a for a, b in zip(self.start, self.start[outputs:])}
        if self.phase[outputs:] != self.phase[:-outputs] or len(steps) != 1:
            return None
        return outputs, steps.pop()

    def offsets(self) -> torch.Tensor:
        """float64 [phases, taps]: each tap's input position minus its output's centre, in input pixels."""
        return torch.tensor(self.first_offsets, dtype=torch.float64)[:, None] + torch.arange(self.taps)

    def coordinates(self) -> torch.Tensor:
        """float64 [phases, taps]: each tap's position in the kernel's [-1, 1] domain (beyond it: outside the
        support), +1 at the output's centre if causal (the newest step, as a causal kernel's last tap)."""
        offsets = self.offsets()
        if self.radius == 0:  # a 1-tap kernel: its centre
            return torch.zeros_like(offsets)
        return offsets / self.radius + (1. if self.causal else 0.)

    def mask(self) -> torch.Tensor:
        """bool [phases, taps]: the taps within the kernel's support."""
        low, high = _support(self.radius, self.causal)
        tolerance = _PHASE_TOLERANCE * max(self.radius, 1.)
        offsets = self.offsets()
        return (offsets >= low - tolerance) & (offsets <= high + tolerance)


def _support(radius: float, causal: bool) -> Tuple[float, float]:
    """The offsets (input position minus output centre) a kernel of half-width `radius` covers: [-R, R], or
    [-2R, 0] if causal."""
    return (-2 * radius, 0.) if causal else (-radius, radius)


@functools.lru_cache(maxsize=256)
def axis_geometry(in_size: int, out_size: int, scale: float, kernel_size: int, causal: bool = False) -> AxisGeometry:
    """The taps of every output of an axis of `in_size` inputs resized by `scale` to `out_size` outputs, for a
    kernel of `kernel_size` taps at scale 1 (`causal`: each output sees the inputs up to its centre)."""
    radius = (kernel_size - 1) / (2 * min(scale, 1.)) if kernel_size > 1 else 0.
    low, high = _support(radius, causal)
    centres = [(i + 0.5) / scale - 0.5 for i in range(out_size)]
    start = tuple(math.ceil(c + low - _PHASE_TOLERANCE) for c in centres)
    first_offset = [u - c for u, c in zip(start, centres)]  # in [low, low + 1): it decides the phase
    taps = max(math.floor(high - f + _PHASE_TOLERANCE) for f in first_offset) + 1  # those in the support
    phases = {}  # rounded first offset -> phase, in order of first appearance
    phase = tuple(phases.setdefault(round(f / _PHASE_TOLERANCE), len(phases)) for f in first_offset)
    first_offsets = tuple(first_offset[phase.index(p)] for p in range(len(phases)))
    return AxisGeometry(in_size, out_size, scale, radius, taps, first_offsets, phase, start, causal)


def _per_axis(value, name: str, ndim: int) -> Tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,) * ndim
    if isinstance(value, Sequence) and len(value) == ndim and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(value)
    axes = 'one per axis (height, width)' if ndim == 2 else 'one'
    raise ValueError(f'{name} takes a number or {axes}, got {value!r}')


def resize_geometry(in_size: Sequence[int], kernel_size: Sequence[int], scale: Optional[Scale] = None,
                    size: Optional[Size] = None, causal: bool = False) -> Tuple[AxisGeometry, ...]:
    """The geometry of every axis of an input of `in_size` ([H, W] or [N]) resized by `scale` (the output
    floor(n s) per axis, as F.interpolate sizes it) or to `size` (then s = n' / n); neither: scale 1."""
    ndim = len(in_size)
    if scale is not None and size is not None:
        raise ValueError(f'give scale or size, not both (got scale={scale!r}, size={size!r})')
    if size is not None:
        sizes = _per_axis(size, 'size', ndim)
        if not all(isinstance(n, int) and n >= 1 for n in sizes):
            raise ValueError(f'size takes positive integers, one per axis, got {size!r}')
        scales = tuple(n / m for n, m in zip(sizes, in_size))
    else:
        scales = _per_axis(1. if scale is None else scale, 'scale', ndim)
        if not all(math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f'scale takes positive finite numbers, got {scale!r}')
        sizes = tuple(math.floor(n * s) for n, s in zip(in_size, scales))
        if min(sizes) < 1:
            raise ValueError(f'scale {scale!r} makes an output of {" x ".join(map(str, sizes))} from '
                             f'{" x ".join(map(str, in_size))}: at least 1 per axis is needed')
    return tuple(axis_geometry(int(n), m, float(s), int(k), causal)
                 for n, m, s, k in zip(in_size, sizes, scales, kernel_size))


def _pad(first: int, last: int, size: int) -> Tuple[int, int]:
    """Zeros needed before and after an axis of `size` for indices from `first` to `last` to read inside it."""
    return max(0, -first), max(0, last + 1 - size)


def _axis_pad(axis: AxisGeometry) -> Tuple[int, int]:
    return _pad(min(axis.start), max(axis.start) + axis.taps - 1, axis.in_size)


def _padded(x: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry) -> Tuple[torch.Tensor, int, int]:
    """x zero-padded so that every tap reads inside it, and the padding before each axis."""
    (top, bottom), (left, right) = _axis_pad(rows), _axis_pad(cols)
    return F.pad(x, [left, right, top, bottom]), top, left


def _polyphase(x: torch.Tensor, bank: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry,
               row_period: Tuple[int, int], col_period: Tuple[int, int]) -> torch.Tensor:
    """One strided convolution per pair of phases, each computing the outputs of its pair."""
    (row_outputs, row_step), (col_outputs, col_step) = row_period, col_period
    groups = x.shape[1] // bank.shape[1]
    padding = (-rows.start[0], -cols.start[0])
    if row_outputs == col_outputs == 1 and min(padding) >= 0:  # one strided convolution, which pads x itself
        out = F.conv2d(x, bank[:, :, 0, :, 0, :], stride=(row_step, col_step), padding=padding, groups=groups)
        if out.shape[2] >= rows.out_size and out.shape[3] >= cols.out_size:
            return out[:, :, :rows.out_size, :cols.out_size]
    padded, top, left = _padded(x, rows, cols)
    y = x.new_empty((x.shape[0], bank.shape[0], rows.out_size, cols.out_size))
    for first_row in range(min(row_outputs, rows.out_size)):
        for first_col in range(min(col_outputs, cols.out_size)):
            kernel = bank[:, :, rows.phase[first_row], :, cols.phase[first_col], :]
            part = padded[:, :, rows.start[first_row] + top:, cols.start[first_col] + left:]
            out = F.conv2d(part, kernel, stride=(row_step, col_step), groups=groups)
            target = y[:, :, first_row::row_outputs, first_col::col_outputs]
            target.copy_(out[:, :, :target.shape[2], :target.shape[3]])
    return y


class _BandedPlan(NamedTuple):
    """The indices of the banded path for one geometry, as plain numbers (constants to a compiled graph)."""
    block: int  # output columns per matrix product
    blocks: int
    window: int  # input columns a block's taps reach
    padding: Tuple[int, int, int, int]  # F.pad's: left, right, top, bottom
    row_index: Tuple[int, ...]  # [H' x row taps]: the padded input row of each output row's taps
    column_index: Tuple[int, ...]  # [blocks x window]: the padded input columns of each block
    reach: Tuple[int, ...]  # [blocks x J x column taps]: each tap's column within its block's window
    column_phase: Tuple[int, ...]  # [blocks x J]: the phase of each output column (the last one repeated)
    real: Tuple[bool, ...]  # [blocks x J]: whether the column is an output, not a block's filler


@functools.lru_cache(maxsize=256)
def _banded_plan(rows: AxisGeometry, cols: AxisGeometry) -> _BandedPlan:
    block = min(cols.out_size, _COLUMN_BLOCK)
    blocks = -(-cols.out_size // block)
    columns = [min(j, cols.out_size - 1) for j in range(blocks * block)]
    firsts = [cols.start[columns[b * block]] for b in range(blocks)]
    reach = [cols.start[j] + n - firsts[position // block] for position, j in enumerate(columns)
             for n in range(cols.taps)]
    window = max(reach) + 1
    top, bottom = _axis_pad(rows)
    left, right = _pad(min(firsts), max(firsts) + window - 1, cols.in_size)
    return _BandedPlan(
        block, blocks, window, (left, right, top, bottom),
        tuple(u + m + top for u in rows.start for m in range(rows.taps)),
        tuple(first + v + left for first in firsts for v in range(window)),
        tuple(reach), tuple(cols.phase[j] for j in columns), tuple(j < cols.out_size for j in range(blocks * block)))


def _banded(x: torch.Tensor, bank: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry) -> torch.Tensor:
    """Per group of channels, output row and block of output columns, one matrix product: the input rows its taps
    read, over the columns the block's taps reach, times the banded matrix that places each output column's
    kernel taps at its input columns (zero elsewhere)."""
    plan = _banded_plan(rows, cols)
    batch, channels = x.shape[:2]
    out_channels, group_channels = bank.shape[:2]
    groups = channels // group_channels
    index = functools.partial(torch.tensor, device=x.device)
    taps = F.pad(x, list(plan.padding)).index_select(2, index(plan.row_index))
    taps = taps.index_select(3, index(plan.column_index))
    taps = taps.view(batch, groups, group_channels, rows.out_size, rows.taps, plan.blocks, plan.window)
    taps = taps.permute(1, 3, 5, 0, 2, 4, 6).reshape(
        groups, rows.out_size, plan.blocks, batch, group_channels * rows.taps * plan.window)
    placement = F.one_hot(index(plan.reach), plan.window).view(-1, cols.taps, plan.window)
    placement = (placement * index(plan.real).view(-1, 1, 1)).to(x.dtype)
    placement = placement.view(plan.blocks, plan.block, cols.taps, plan.window)
    kernels = bank.index_select(2, index(rows.phase)).index_select(4, index(plan.column_phase))
    kernels = kernels.view(groups, out_channels // groups, group_channels, rows.out_size, rows.taps, plan.blocks,
                           plan.block, cols.taps)
    banded = torch.einsum('gocimbjn,bjnv->gibcmvoj', kernels, placement).reshape(
        groups, rows.out_size, plan.blocks, group_channels * rows.taps * plan.window,
        out_channels // groups * plan.block)
    y = torch.matmul(taps, banded)  # [groups, H', blocks, B, group outputs x J]
    y = y.view(groups, rows.out_size, plan.blocks, batch, out_channels // groups, plan.block)
    y = y.permute(3, 0, 4, 1, 2, 5).reshape(batch, out_channels, rows.out_size, plan.blocks * plan.block)
    return y[..., :cols.out_size]


def resize_conv2d(x: torch.Tensor, bank: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry) -> torch.Tensor:
    """The resizing convolution of x [B, C, H, W] with the kernels `bank` [O, C / groups, row phases, row taps,
    column phases, column taps] sampled at the phases' offsets (see the module docstring): depthwise for a bank of
    one input channel per output, full for one of all of them, as F.conv2d's weights."""
    channels = x.shape[1]
    shape = tuple(bank.shape)
    if len(shape) != 6 or shape[2:] != (rows.phases, rows.taps, cols.phases, cols.taps) or channels % shape[1] or \
            shape[0] % (channels // shape[1]) or tuple(x.shape[2:]) != (rows.in_size, cols.in_size):
        raise ValueError(f'resize_conv2d takes x [B, C, {rows.in_size}, {cols.in_size}] and a bank [O, C / groups, '
                         f'{rows.phases}, {rows.taps}, {cols.phases}, {cols.taps}] for its geometry, got '
                         f'{tuple(x.shape)} and {shape}')
    dtype = compute_dtype(x, bank)
    x, bank = x.to(dtype), bank.to(dtype)
    if x.shape[0] == 0:
        y = x.new_empty((0, bank.shape[0], rows.out_size, cols.out_size))
    else:
        row_period, col_period = rows.period(), cols.period()
        if row_period is not None and col_period is not None and \
                row_period[0] * col_period[0] <= _MAX_POLYPHASE_PAIRS:
            y = _polyphase(x, bank, rows, cols, row_period, col_period)
        else:
            y = _banded(x, bank, rows, cols)
    return y.contiguous(memory_format=memory_format(x))  # in x's layout, as depthwise_conv2d's output


def resize_conv1d(x: torch.Tensor, bank: torch.Tensor, axis: AxisGeometry) -> torch.Tensor:
    """The resizing convolution of a sequence x [B, C, N] with the kernels `bank` [O, C / groups, phases, taps]:
    the 2D one on a single row."""
    row = axis_geometry(1, 1, 1., 1)
    return resize_conv2d(x.unsqueeze(2), bank[:, :, None, None], row, axis).squeeze(2)


# ---- the contract of the fast kernels (one filter per channel, the geometry as index tensors), for their tests ----

def reference_taps(x: torch.Tensor, bank: torch.Tensor, row_start: torch.Tensor, row_phase: torch.Tensor,
                   col_start: torch.Tensor, col_phase: torch.Tensor) -> torch.Tensor:
    """y[b, c, i, j] = sum_{m, n} bank[c, row_phase[i], m, col_phase[j], n] x[b, c, row_start[i] + m,
    col_start[j] + n] (zero outside x) for x [B, C, H, W] and a depthwise bank [C, Py, ky, Px, kx], every tap
    gathered: what the fast kernels compute, plainly."""
    height, width = x.shape[-2:]
    rows = row_start[:, None] + torch.arange(bank.shape[2], device=x.device)  # [H', ky]
    cols = col_start[:, None] + torch.arange(bank.shape[4], device=x.device)  # [W', kx]
    inside = ((rows >= 0) & (rows < height))[:, :, None, None] & ((cols >= 0) & (cols < width))
    taps = x[:, :, rows.clamp(0, height - 1)][..., cols.clamp(0, width - 1)]  # [B, C, H', ky, W', kx]
    kernels = bank[:, row_phase][:, :, :, col_phase]  # [C, H', ky, W', kx]
    return torch.einsum('bcimjn,cimjn->bcij', taps * inside, kernels)


def reference_grads(grad_y: torch.Tensor, x: torch.Tensor, bank: torch.Tensor, *geometry: torch.Tensor
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The gradients of `reference_taps` in x and in the bank for the output gradient grad_y: the fast kernels'
    grad_input and grad_bank."""
    x, bank = x.detach().requires_grad_(), bank.detach().requires_grad_()
    return torch.autograd.grad(reference_taps(x, bank, *geometry), (x, bank), grad_y)
