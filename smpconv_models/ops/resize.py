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

`resize_conv2d` is the operator `smpconv::resize_conv2d` (with its passes `resize_conv2d_grad_input` and
`resize_conv2d_grad_bank`): fake tensors, FLOP counts, first and second derivatives (each pass is linear in each
of its tensors, and its partial maps are the other passes). Its backends (`BACKENDS`, chosen per shape by the
dispatcher, forced with SMPCONV_RESIZE_BACKEND): 'torch', the two paths above, with their adjoints written out;
'cpp' (`resize_cpu`, CPUs) and 'triton' (`triton_resize`, GPUs), fast kernels of the depthwise form whose
contract `reference_taps` states plainly. A full bank always runs on 'torch'. FX, torch.export and ONNX record
the 'torch' path's PyTorch operations, which run without this package.

`resize_conv2d_points` (the operator `smpconv::resize_conv2d_points`) is the depthwise one for points whose
positions the channels share, given their values [C, P] and interpolation weights [P, phases, taps, ...] instead
of the bank (C / P times their size): its 'cpp' backend samples each channel's bank where it convolves with it,
and the others make the bank and run the pass of theirs. The continuous layers resize through it.
"""
import functools
import importlib
import math
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from .dispatch import Backend, Operator, check_float, compute_dtype, memory_format, save_inputs, torch_ops_only

__all__ = ['ENV_VAR', 'BACKENDS', 'POINTS_BACKENDS', 'AxisGeometry', 'axis_geometry', 'resize_geometry',
           'resize_conv2d', 'resize_conv1d', 'resize_conv2d_points', 'resize_conv1d_points', 'reference_taps',
           'reference_grads']

# fractional positions closer than this are one phase (float64 rounding of (i + 1/2) / s is far below it)
_PHASE_TOLERANCE = 1e-9
# output columns per matrix product of the banded path: its input window grows with them, its count of
# products shrinks
_COLUMN_BLOCK = 8
# phase pairs up to which one strided convolution per pair beats gathering the taps (each call costs a pass
# over the input)
_MAX_POLYPHASE_PAIRS = 16

ENV_VAR = 'SMPCONV_RESIZE_BACKEND'

Scale = Union[float, Sequence[float]]
Size = Union[int, Sequence[int]]


class AxisGeometry(NamedTuple):
    """Where the taps of every output of one axis fall: output i reads `taps` inputs from `start[i]` on (negative
    or past the end: zero padding), weighted by the kernel sampled at `offsets()[phase[i]]`. Plain numbers, so
    that compiled graphs take them as constants."""
    in_size: int
    out_size: int
    scale: float
    kernel_size: int  # taps at scale 1
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


def _cached_outside_compile(function: Callable) -> Callable:
    """`function` with an LRU cache, bypassed while torch.compile traces it: Dynamo cannot keep such a cache, and
    warns (of "silent incorrectness") at every cached function it traces through."""
    cached = functools.lru_cache(maxsize=256)(function)

    @functools.wraps(function)
    def call(*args, **kwargs):
        return function(*args, **kwargs) if torch.compiler.is_compiling() else cached(*args, **kwargs)
    return call


@_cached_outside_compile
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
    return AxisGeometry(in_size, out_size, scale, kernel_size, radius, taps, first_offsets, phase, start, causal)


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
    # plain ints: a compiled graph specialises on the input's size (each new size compiles anew) rather than
    # carrying the geometry's Python loops symbolically, which takes minutes
    in_size = [int(n) for n in in_size]
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
    return tuple(axis_geometry(n, m, float(s), int(k), causal)
                 for n, m, s, k in zip(in_size, sizes, scales, kernel_size))


def _pad(first: int, last: int, size: int) -> Tuple[int, int]:
    """Zeros needed before and after an axis of `size` for indices from `first` to `last` to read inside it."""
    return max(0, -first), max(0, last + 1 - size)


def _axis_pad(axis: AxisGeometry) -> Tuple[int, int]:
    return _pad(min(axis.start), max(axis.start) + axis.taps - 1, axis.in_size)


class _Pair(NamedTuple):
    """The outputs of one pair of phases, and where in the (padded) input their strided convolution starts."""
    rows: slice
    cols: slice
    row_phase: int
    col_phase: int
    top: int
    left: int


class _PolyphasePlan(NamedTuple):
    stride: Tuple[int, int]
    padding: Tuple[int, int, int, int]  # F.pad's of the input: left, right, top, bottom
    conv_padding: Tuple[int, int]  # the convolutions' own, where a single one pads x itself
    pairs: Tuple[_Pair, ...]


@functools.lru_cache(maxsize=256)
def _polyphase_plan(rows: AxisGeometry, cols: AxisGeometry) -> Optional[_PolyphasePlan]:
    """The strided convolutions of a geometry whose phases repeat (rational scales) in few pairs, else None."""
    row_period, col_period = rows.period(), cols.period()
    if row_period is None or col_period is None or row_period[0] * col_period[0] > _MAX_POLYPHASE_PAIRS:
        return None
    (row_outputs, row_step), (col_outputs, col_step) = row_period, col_period
    stride = (row_step, col_step)
    if row_outputs == col_outputs == 1:  # one convolution, which pads x itself where it reaches out as far below
        conv_padding = (-rows.start[0], -cols.start[0])
        covered = [(n + 2 * p - taps) // step + 1 >= out for n, p, taps, step, out in zip(
            (rows.in_size, cols.in_size), conv_padding, (rows.taps, cols.taps), stride, (rows.out_size, cols.out_size))]
        if min(conv_padding) >= 0 and all(covered):
            return _PolyphasePlan(stride, (0, 0, 0, 0), conv_padding,
                                  (_Pair(slice(None), slice(None), rows.phase[0], cols.phase[0], 0, 0),))
    (top, bottom), (left, right) = _axis_pad(rows), _axis_pad(cols)
    pairs = tuple(_Pair(slice(i, None, row_outputs), slice(j, None, col_outputs), rows.phase[i], cols.phase[j],
                        rows.start[i] + top, cols.start[j] + left)
                  for i in range(min(row_outputs, rows.out_size)) for j in range(min(col_outputs, cols.out_size)))
    return _PolyphasePlan(stride, (left, right, top, bottom), (0, 0), pairs)


def _padded_input(x: torch.Tensor, plan: _PolyphasePlan) -> torch.Tensor:
    """x with the zeros its pairs' convolutions read beyond it (none where one convolution pads x itself)."""
    return F.pad(x, list(plan.padding)) if any(plan.padding) else x


def _polyphase(x: torch.Tensor, bank: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry,
               plan: _PolyphasePlan) -> torch.Tensor:
    """One strided convolution per pair of phases, each computing the outputs of its pair."""
    groups = x.shape[1] // bank.shape[1]
    padded = _padded_input(x, plan)

    def convolution(pair: _Pair) -> torch.Tensor:
        return F.conv2d(padded[:, :, pair.top:, pair.left:], bank[:, :, pair.row_phase, :, pair.col_phase, :],
                        stride=plan.stride, padding=plan.conv_padding, groups=groups)

    if len(plan.pairs) == 1:
        return convolution(plan.pairs[0])[:, :, :rows.out_size, :cols.out_size]
    y = x.new_empty((x.shape[0], bank.shape[0], rows.out_size, cols.out_size))
    for pair in plan.pairs:
        target = y[:, :, pair.rows, pair.cols]
        target.copy_(convolution(pair)[:, :, :target.shape[2], :target.shape[3]])
    return y


def _polyphase_adjoint(grad_y: torch.Tensor, padded: torch.Tensor, bank: torch.Tensor, plan: _PolyphasePlan,
                       wanted: Tuple[bool, bool]) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The adjoints of `_polyphase` in its padded input and in the bank, where `wanted`: PyTorch's convolution
    backward per pair. The tensor whose adjoint is wanted is read only for its shape."""
    groups = padded.shape[1] // bank.shape[1]
    grad_padded = torch.zeros_like(padded) if wanted[0] else None
    grad_bank = torch.zeros_like(bank) if wanted[1] else None
    for pair in plan.pairs:
        part = padded[:, :, pair.top:, pair.left:]
        kernel = bank[:, :, pair.row_phase, :, pair.col_phase, :]
        out_size = [(n + 2 * p - k) // step + 1 for n, p, k, step in
                    zip(part.shape[2:], plan.conv_padding, kernel.shape[2:], plan.stride)]
        grad_out = grad_y[:, :, pair.rows, pair.cols]
        grad_out = F.pad(grad_out, [0, out_size[1] - grad_out.shape[3], 0, out_size[0] - grad_out.shape[2]])
        grad_part, grad_kernel, _ = torch.ops.aten.convolution_backward(
            grad_out, part, kernel, None, list(plan.stride), list(plan.conv_padding), [1, 1], False, [0, 0], groups,
            [wanted[0], wanted[1], False])
        if wanted[0]:
            grad_padded[:, :, pair.top:, pair.left:] += grad_part
        if wanted[1]:
            grad_bank[:, :, pair.row_phase, :, pair.col_phase, :] += grad_kernel
    return grad_padded, grad_bank


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


# The banded path computes, per group of channels, output row i and block b of output columns, one matrix product
# y[g, i, b] = taps[g, i, b] @ banded[g, i, b]: taps [B, group channels x row taps x window] are the input rows
# the row's taps read over the columns the block's taps reach, banded [.., group outputs x J] places each output
# column's kernel taps at its input columns (zero elsewhere). Its adjoints are the two products transposed, each
# scattered back where its factor was gathered from.

def _banded_shapes(rows: AxisGeometry, plan: _BandedPlan, x_shape: Sequence[int], bank_shape: Sequence[int]):
    """The taps' [B, G, group channels, H', row taps, blocks, window] and the outputs' [B, G, group outputs, H',
    blocks, J]."""
    batch, channels = x_shape[:2]
    out_channels, group_channels = bank_shape[:2]
    groups = channels // group_channels
    return ((batch, groups, group_channels, rows.out_size, rows.taps, plan.blocks, plan.window),
            (batch, groups, out_channels // groups, rows.out_size, plan.blocks, plan.block))


def _index(values: Sequence, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, device=device)


def _placement(plan: _BandedPlan, cols: AxisGeometry, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[blocks, J, column taps, window]: 1 where an output column's tap reads a column of its block's window."""
    placement = F.one_hot(_index(plan.reach, device), plan.window).view(-1, cols.taps, plan.window)
    placement = placement * _index(plan.real, device).view(-1, 1, 1)
    return placement.to(dtype).view(plan.blocks, plan.block, cols.taps, plan.window)


def _banded_taps(x: torch.Tensor, rows: AxisGeometry, plan: _BandedPlan, taps_shape: Sequence[int]) -> torch.Tensor:
    """[G, H', blocks, B, group channels x row taps x window]"""
    taps = F.pad(x, list(plan.padding)).index_select(2, _index(plan.row_index, x.device))
    taps = taps.index_select(3, _index(plan.column_index, x.device)).view(taps_shape)
    return taps.permute(1, 3, 5, 0, 2, 4, 6).flatten(4)


def _banded_taps_adjoint(grad_taps: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry, plan: _BandedPlan,
                         taps_shape: Sequence[int]) -> torch.Tensor:
    """The input x's gradient from its taps' (each input pixel: the sum over the taps that read it)."""
    batch, groups, group_channels = taps_shape[:3]
    left, right, top, bottom = plan.padding
    grad = grad_taps.view(*(taps_shape[i] for i in (1, 3, 5, 0, 2, 4, 6))).permute(3, 0, 4, 1, 5, 2, 6)
    grad = grad.reshape(batch, groups * group_channels, rows.out_size * rows.taps, plan.blocks * plan.window)
    padded_size = (rows.in_size + top + bottom, cols.in_size + left + right)
    grad = grad.new_zeros((*grad.shape[:3], padded_size[1])).index_add_(
        3, _index(plan.column_index, grad.device), grad)
    grad = grad.new_zeros((*grad.shape[:2], padded_size[0], padded_size[1])).index_add_(
        2, _index(plan.row_index, grad.device), grad)
    return grad[:, :, top:top + rows.in_size, left:left + cols.in_size]


def _banded_matrix(bank: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry, plan: _BandedPlan,
                   groups: int) -> torch.Tensor:
    """[G, H', blocks, group channels x row taps x window, group outputs x J]"""
    out_channels, group_channels = bank.shape[:2]
    kernels = bank.index_select(2, _index(rows.phase, bank.device))
    kernels = kernels.index_select(4, _index(plan.column_phase, bank.device)).view(
        groups, out_channels // groups, group_channels, rows.out_size, rows.taps, plan.blocks, plan.block, cols.taps)
    banded = torch.einsum('gocimbjn,bjnv->gibcmvoj', kernels, _placement(plan, cols, bank.device, bank.dtype))
    return banded.reshape(groups, rows.out_size, plan.blocks, group_channels * rows.taps * plan.window,
                          out_channels // groups * plan.block)


def _banded_matrix_adjoint(grad_banded: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry, plan: _BandedPlan,
                           bank_shape: Sequence[int]) -> torch.Tensor:
    """The bank's gradient from its banded matrices' (each kernel tap: the sum over the places it was put)."""
    out_channels, group_channels = bank_shape[:2]
    groups = grad_banded.shape[0]
    grad = grad_banded.view(groups, rows.out_size, plan.blocks, group_channels, rows.taps, plan.window,
                            out_channels // groups, plan.block)
    grad = torch.einsum('gibcmvoj,bjnv->gocimbjn', grad, _placement(plan, cols, grad.device, grad.dtype))
    grad = grad.reshape(out_channels, group_channels, rows.out_size, rows.taps, plan.blocks * plan.block, cols.taps)
    grad = grad.new_zeros((*grad.shape[:4], cols.phases, cols.taps)).index_add_(
        4, _index(plan.column_phase, grad.device), grad)
    return grad.new_zeros(bank_shape).index_add_(2, _index(rows.phase, grad.device), grad)


def _banded(x: torch.Tensor, bank: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry) -> torch.Tensor:
    plan = _banded_plan(rows, cols)
    taps_shape, out_shape = _banded_shapes(rows, plan, x.shape, bank.shape)
    y = torch.matmul(_banded_taps(x, rows, plan, taps_shape), _banded_matrix(bank, rows, cols, plan, taps_shape[1]))
    y = y.view(*(out_shape[i] for i in (1, 3, 4, 0, 2, 5))).permute(3, 0, 4, 1, 2, 5)
    return y.reshape(x.shape[0], bank.shape[0], rows.out_size, plan.blocks * plan.block)[..., :cols.out_size]


def _banded_grad_y(grad_y: torch.Tensor, cols: AxisGeometry, plan: _BandedPlan, out_shape: Sequence[int]
                   ) -> torch.Tensor:
    """grad_y as the products' outputs: [G, H', blocks, B, group outputs x J] (zero at the blocks' fillers)."""
    grad_y = F.pad(grad_y, [0, plan.blocks * plan.block - cols.out_size]).reshape(out_shape)
    return grad_y.permute(1, 3, 4, 0, 2, 5).flatten(4)


def _banded_grad_input(grad_y: torch.Tensor, bank: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry,
                       in_channels: int) -> torch.Tensor:
    plan = _banded_plan(rows, cols)
    taps_shape, out_shape = _banded_shapes(rows, plan, (grad_y.shape[0], in_channels), bank.shape)
    banded = _banded_matrix(bank, rows, cols, plan, taps_shape[1])
    grad_taps = torch.matmul(_banded_grad_y(grad_y, cols, plan, out_shape), banded.transpose(-1, -2))
    return _banded_taps_adjoint(grad_taps, rows, cols, plan, taps_shape)


def _banded_grad_bank(grad_y: torch.Tensor, x: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry,
                      bank_shape: Sequence[int]) -> torch.Tensor:
    plan = _banded_plan(rows, cols)
    taps_shape, out_shape = _banded_shapes(rows, plan, x.shape, bank_shape)
    taps = _banded_taps(x, rows, plan, taps_shape)
    grad_banded = torch.matmul(taps.transpose(-1, -2), _banded_grad_y(grad_y, cols, plan, out_shape))
    return _banded_matrix_adjoint(grad_banded, rows, cols, plan, bank_shape)


# ---- the backends -------------------------------------------------------------------------------------------

def _torch_forward(x: torch.Tensor, bank: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry) -> torch.Tensor:
    """PyTorch's own operations: strided convolutions per pair of phases where they are few, else banded matrix
    products."""
    plan = _polyphase_plan(rows, cols)
    return _banded(x, bank, rows, cols) if plan is None else _polyphase(x, bank, rows, cols, plan)


def _torch_grad_input(grad_y: torch.Tensor, bank: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry,
                      in_channels: int) -> torch.Tensor:
    plan = _polyphase_plan(rows, cols)
    if plan is None:
        return _banded_grad_input(grad_y, bank, rows, cols, in_channels)
    left, right, top, bottom = plan.padding
    padded_shape = (grad_y.shape[0], in_channels, rows.in_size + top + bottom, cols.in_size + left + right)
    grad_padded = _polyphase_adjoint(grad_y, grad_y.new_empty(padded_shape), bank, plan, (True, False))[0]
    return grad_padded[:, :, top:top + rows.in_size, left:left + cols.in_size]


def _torch_grad_bank(grad_y: torch.Tensor, x: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry,
                     bank_shape: Sequence[int]) -> torch.Tensor:
    plan = _polyphase_plan(rows, cols)
    if plan is None:
        return _banded_grad_bank(grad_y, x, rows, cols, bank_shape)
    return _polyphase_adjoint(grad_y, _padded_input(x, plan), x.new_empty(bank_shape), plan, (False, True))[1]


@functools.lru_cache(maxsize=256)
def _index_tensors(rows: AxisGeometry, cols: AxisGeometry, device: torch.device) -> Tuple[torch.Tensor, ...]:
    """row_start, row_phase, col_start, col_phase as the fast kernels take them (on the device, once)."""
    return tuple(torch.tensor(values, device=device) for values in (rows.start, rows.phase, cols.start, cols.phase))


def _depthwise_kernels(module: str) -> Backend:
    """The backend of a module of fast depthwise kernels (`available`, `forward`, `grad_input`, `grad_bank`, as
    `reference_taps` states them: the bank without its input-channel axis, the geometry as index tensors),
    imported on first use (Triton takes seconds to import, a C++ extension to compile)."""
    def kernels():
        return importlib.import_module(f'.{module}', __package__)

    def forward(x, bank, rows, cols):
        return kernels().forward(x, bank[:, 0], *_index_tensors(rows, cols, x.device))

    def grad_input(grad_y, bank, rows, cols, in_channels):
        return kernels().grad_input(grad_y, bank[:, 0], *_index_tensors(rows, cols, grad_y.device), rows.in_size,
                                    cols.in_size)

    def grad_bank(grad_y, x, rows, cols, bank_shape):
        shape = (bank_shape[0], *bank_shape[2:])
        return kernels().grad_bank(grad_y, x, *_index_tensors(rows, cols, x.device), shape).unsqueeze(1)

    return Backend({'resize.forward': forward, 'resize.grad_input': grad_input, 'resize.grad_bank': grad_bank},
                   lambda x: kernels().available(x))


BACKENDS: Dict[str, Backend] = {
    'torch': Backend({'resize.forward': _torch_forward, 'resize.grad_input': _torch_grad_input,
                      'resize.grad_bank': _torch_grad_bank}),
    'cpp': _depthwise_kernels('resize_cpu'),
    'triton': _depthwise_kernels('triton_resize'),
}

RESIZE = Operator('resizing convolution', ENV_VAR, BACKENDS)


def _geometry_signature(rows: AxisGeometry, cols: AxisGeometry) -> Tuple:
    """What of a geometry decides a pass's cost, as plain values for the dispatcher's choice keys."""
    return tuple(tuple(axis[:4]) + (axis.causal,) for axis in (rows, cols))


def _compute(pass_: str, first: torch.Tensor, second: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry, *rest,
             batched: int, bank_shape: Sequence[int]) -> torch.Tensor:
    """Pass `pass_` on (first, second, rows, cols, *rest), on its backend: chosen by the dispatcher for a depthwise
    bank, PyTorch's for a full one (the fast kernels are depthwise)."""
    args = (first, second, rows, cols, *rest)
    if bank_shape[1] != 1 or bank_shape[0] != args[batched - 1].shape[1]:
        return BACKENDS['torch'].passes[pass_](*args)
    signature = (tuple(bank_shape),) + _geometry_signature(rows, cols)
    return RESIZE.compute(pass_, *args, batched=batched, signature=signature)


# ---- the operator: its geometry travels as axis_geometry's arguments, per axis -------------------------------

def _geometry_args(rows: AxisGeometry, cols: AxisGeometry) -> Tuple[List[int], List[float], List[int], List[bool]]:
    """The output sizes, scales, kernel sizes and causality of the two axes: with the input's size, all that
    `axis_geometry` takes."""
    return ([rows.out_size, cols.out_size], [rows.scale, cols.scale], [rows.kernel_size, cols.kernel_size],
            [rows.causal, cols.causal])


def _axes(in_size: Sequence[int], out_size: List[int], scale: List[float], kernel_size: List[int],
          causal: List[bool]) -> Tuple[AxisGeometry, AxisGeometry]:
    rows, cols = (axis_geometry(*args) for args in zip(in_size, out_size, scale, kernel_size, causal))
    return rows, cols


@torch.library.custom_op('smpconv::resize_conv2d', mutates_args=())
def _forward(x: torch.Tensor, bank: torch.Tensor, out_size: List[int], scale: List[float], kernel_size: List[int],
             causal: List[bool]) -> torch.Tensor:
    rows, cols = _axes(x.shape[-2:], out_size, scale, kernel_size, causal)
    if x.shape[0] == 0:
        y = x.new_empty((0, bank.shape[0], *out_size))
    else:
        y = _compute('resize.forward', x, bank, rows, cols, batched=1, bank_shape=bank.shape)
    return y.contiguous(memory_format=memory_format(x))  # in x's layout, whichever backend ran


@_forward.register_fake
def _(x, bank, out_size, scale, kernel_size, causal):
    return x.new_empty((x.shape[0], bank.shape[0], *out_size)).contiguous(memory_format=memory_format(x))


@torch.library.custom_op('smpconv::resize_conv2d_grad_input', mutates_args=())
def _grad_input(grad_y: torch.Tensor, bank: torch.Tensor, in_shape: List[int], scale: List[float],
                kernel_size: List[int], causal: List[bool]) -> torch.Tensor:
    """in_shape: x's [C, H, W]."""
    rows, cols = _axes(in_shape[1:], list(grad_y.shape[-2:]), scale, kernel_size, causal)
    if grad_y.shape[0] == 0:
        grad_x = grad_y.new_zeros((0, *in_shape))
    else:
        grad_x = _compute('resize.grad_input', grad_y, bank, rows, cols, in_shape[0], batched=1,
                          bank_shape=bank.shape)
    return grad_x.contiguous(memory_format=memory_format(grad_y))


@_grad_input.register_fake
def _(grad_y, bank, in_shape, scale, kernel_size, causal):
    return grad_y.new_empty((grad_y.shape[0], *in_shape)).contiguous(memory_format=memory_format(grad_y))


@torch.library.custom_op('smpconv::resize_conv2d_grad_bank', mutates_args=())
def _grad_bank(grad_y: torch.Tensor, x: torch.Tensor, bank_shape: List[int], scale: List[float],
               kernel_size: List[int], causal: List[bool]) -> torch.Tensor:
    rows, cols = _axes(x.shape[-2:], list(grad_y.shape[-2:]), scale, kernel_size, causal)
    if x.shape[0] == 0:
        return x.new_zeros(bank_shape)
    return _compute('resize.grad_bank', grad_y, x, rows, cols, bank_shape, batched=2,
                    bank_shape=bank_shape).contiguous()


@_grad_bank.register_fake
def _(grad_y, x, bank_shape, scale, kernel_size, causal):
    return x.new_empty(bank_shape)


# Every pass is linear in each of its tensors, and each partial map is another pass: <dy, forward(x, bank)> =
# <grad_input(dy, bank), x> = <grad_bank(dy, x), bank>.

def _backward(ctx, grad_y):
    x, bank = ctx.saved_tensors
    _, scale, kernel_size, causal = ctx.args
    grad_x = grad_bank = None
    if ctx.needs_input_grad[0]:
        grad_x = _grad_input(grad_y, bank, list(x.shape[1:]), scale, kernel_size, causal)
    if ctx.needs_input_grad[1]:
        grad_bank = _grad_bank(grad_y, x, list(bank.shape), scale, kernel_size, causal)
    return grad_x, grad_bank, None, None, None, None


def _grad_input_backward(ctx, grad_grad_x):
    grad_y, bank = ctx.saved_tensors
    _, scale, kernel_size, causal = ctx.args
    out_size = list(grad_y.shape[-2:])
    grad_grad_y = grad_bank = None
    if ctx.needs_input_grad[0]:
        grad_grad_y = _forward(grad_grad_x, bank, out_size, scale, kernel_size, causal)
    if ctx.needs_input_grad[1]:
        grad_bank = _grad_bank(grad_y, grad_grad_x, list(bank.shape), scale, kernel_size, causal)
    return grad_grad_y, grad_bank, None, None, None, None


def _grad_bank_backward(ctx, grad_grad_bank):
    grad_y, x = ctx.saved_tensors
    _, scale, kernel_size, causal = ctx.args
    grad_grad_y = grad_x = None
    if ctx.needs_input_grad[0]:
        grad_grad_y = _forward(x, grad_grad_bank, list(grad_y.shape[-2:]), scale, kernel_size, causal)
    if ctx.needs_input_grad[1]:
        grad_x = _grad_input(grad_y, grad_grad_bank, list(x.shape[1:]), scale, kernel_size, causal)
    return grad_grad_y, grad_x, None, None, None, None


_forward.register_autograd(_backward, setup_context=save_inputs)
_grad_input.register_autograd(_grad_input_backward, setup_context=save_inputs)
_grad_bank.register_autograd(_grad_bank_backward, setup_context=save_inputs)


def _flops(batch: int, bank_shape: Sequence[int], out_size: Sequence[int]) -> int:
    """Multiply-adds x2 of a pass: every output (or, for the gradients, every output's term) meets its taps of
    every input channel of its group."""
    return 2 * batch * math.prod(bank_shape[:2]) * math.prod(out_size) * bank_shape[3] * bank_shape[5]


@register_flop_formula(torch.ops.smpconv.resize_conv2d)
def _forward_flops(x_shape, bank_shape, out_size, *args, out_shape=None, **kwargs) -> int:
    return _flops(x_shape[0], bank_shape, out_size)


@register_flop_formula(torch.ops.smpconv.resize_conv2d_grad_input)
def _grad_input_flops(grad_y_shape, bank_shape, *args, out_shape=None, **kwargs) -> int:
    return _flops(grad_y_shape[0], bank_shape, grad_y_shape[-2:])


@register_flop_formula(torch.ops.smpconv.resize_conv2d_grad_bank)
def _grad_bank_flops(grad_y_shape, x_shape, bank_shape, *args, out_shape=None, **kwargs) -> int:
    return _flops(grad_y_shape[0], bank_shape, grad_y_shape[-2:])


# ---- the depthwise operator on the points: their kernels sampled inside the passes -----------------------------

# A depthwise bank of points whose positions the channels share is bank[c] = sum_p weights[c, p] interp[p]: C x P
# values and P x (phases x taps) interpolation weights stand for C x (phases x taps) values. At an arbitrary scale
# the bank has k'^2 values per output pixel and channel (44 MB for smpconv_t's second downsampling at batch 8),
# and making it, then its gradient's products, cost as much as the convolution. The 'cpp' backend samples each
# channel's kernels where it convolves with them and folds their gradient into the points' as it is made; the
# others make the bank and run its pass on their own backend of the bank operator.

def _sampled_bank(weights: torch.Tensor, interp: torch.Tensor) -> torch.Tensor:
    """The depthwise bank [C, 1, Py, ky, Px, kx] of the points' values [C, P] and interpolation [P, Py, ky, Px, kx]."""
    return (weights @ interp.flatten(1)).view(weights.shape[0], 1, *interp.shape[1:])


def _points_gradients(grad_bank: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The gradients of the points' values and interpolation from their bank's (`_sampled_bank`'s adjoint)."""
    grad_bank = grad_bank.flatten(1)
    return grad_bank @ interp.flatten(1).T, (weights.T @ grad_bank).view_as(interp)


def _through_bank(name: str) -> Backend:
    """The passes on the points by the bank operator's backend `name`, on the bank they make."""
    passes = BACKENDS[name].passes

    def forward(x, weights, interp, rows, cols):
        return passes['resize.forward'](x, _sampled_bank(weights, interp), rows, cols)

    def grad_input(grad_y, weights, interp, rows, cols, in_channels):
        return passes['resize.grad_input'](grad_y, _sampled_bank(weights, interp), rows, cols, in_channels)

    def grad_points(grad_y, x, weights, interp, rows, cols):
        bank_shape = (weights.shape[0], 1, *interp.shape[1:])
        return _points_gradients(passes['resize.grad_bank'](grad_y, x, rows, cols, bank_shape), weights, interp)

    return Backend({'resize_points.forward': forward, 'resize_points.grad_input': grad_input,
                    'resize_points.grad_points': grad_points}, BACKENDS[name].supports)


def _sampling_kernels() -> Backend:
    """The C++ kernels that sample each channel's bank from the points themselves."""
    def kernels():
        return importlib.import_module('.resize_cpu', __package__)

    def forward(x, weights, interp, rows, cols):
        return kernels().forward_points(x, weights, interp, *_index_tensors(rows, cols, x.device))

    def grad_input(grad_y, weights, interp, rows, cols, in_channels):
        return kernels().grad_input_points(grad_y, weights, interp, *_index_tensors(rows, cols, grad_y.device),
                                           rows.in_size, cols.in_size)

    def grad_points(grad_y, x, weights, interp, rows, cols):
        return kernels().grad_points(grad_y, x, weights, interp, *_index_tensors(rows, cols, x.device))

    return Backend({'resize_points.forward': forward, 'resize_points.grad_input': grad_input,
                    'resize_points.grad_points': grad_points}, lambda x: kernels().available(x))


# the backends of the same names as the bank operator's, so that SMPCONV_RESIZE_BACKEND forces both alike
POINTS_BACKENDS: Dict[str, Backend] = {'torch': _through_bank('torch'), 'cpp': _sampling_kernels(),
                                       'triton': _through_bank('triton')}

RESIZE_POINTS = Operator('resizing convolution of points', ENV_VAR, POINTS_BACKENDS)


def _points_signature(weights: torch.Tensor, interp: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry) -> Tuple:
    """What decides a pass's cost besides the input's shape: the points and the geometry."""
    return (tuple(weights.shape), tuple(interp.shape)) + _geometry_signature(rows, cols)


@torch.library.custom_op('smpconv::resize_conv2d_points', mutates_args=())
def _points_forward(x: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor, out_size: List[int],
                    scale: List[float], kernel_size: List[int], causal: List[bool]) -> torch.Tensor:
    rows, cols = _axes(x.shape[-2:], out_size, scale, kernel_size, causal)
    if x.shape[0] == 0:
        y = x.new_empty((0, weights.shape[0], *out_size))
    else:
        y = RESIZE_POINTS.compute('resize_points.forward', x, weights, interp, rows, cols, batched=1,
                                  signature=_points_signature(weights, interp, rows, cols))
    return y.contiguous(memory_format=memory_format(x))


@_points_forward.register_fake
def _(x, weights, interp, out_size, scale, kernel_size, causal):
    return x.new_empty((x.shape[0], weights.shape[0], *out_size)).contiguous(memory_format=memory_format(x))


@torch.library.custom_op('smpconv::resize_conv2d_points_grad_input', mutates_args=())
def _points_grad_input(grad_y: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor, in_shape: List[int],
                       scale: List[float], kernel_size: List[int], causal: List[bool]) -> torch.Tensor:
    """in_shape: x's [C, H, W]."""
    rows, cols = _axes(in_shape[1:], list(grad_y.shape[-2:]), scale, kernel_size, causal)
    if grad_y.shape[0] == 0:
        grad_x = grad_y.new_zeros((0, *in_shape))
    else:
        grad_x = RESIZE_POINTS.compute('resize_points.grad_input', grad_y, weights, interp, rows, cols, in_shape[0],
                                       batched=1, signature=_points_signature(weights, interp, rows, cols))
    return grad_x.contiguous(memory_format=memory_format(grad_y))


@_points_grad_input.register_fake
def _(grad_y, weights, interp, in_shape, scale, kernel_size, causal):
    return grad_y.new_empty((grad_y.shape[0], *in_shape)).contiguous(memory_format=memory_format(grad_y))


@torch.library.custom_op('smpconv::resize_conv2d_points_grad_points', mutates_args=())
def _points_grad_points(grad_y: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor,
                        scale: List[float], kernel_size: List[int], causal: List[bool]
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    rows, cols = _axes(x.shape[-2:], list(grad_y.shape[-2:]), scale, kernel_size, causal)
    if x.shape[0] == 0:
        return torch.zeros_like(weights), torch.zeros_like(interp)
    grad_weights, grad_interp = RESIZE_POINTS.compute(
        'resize_points.grad_points', grad_y, x, weights, interp, rows, cols, batched=2,
        signature=_points_signature(weights, interp, rows, cols))
    return grad_weights.contiguous(), grad_interp.contiguous()


@_points_grad_points.register_fake
def _(grad_y, x, weights, interp, scale, kernel_size, causal):
    return torch.empty_like(weights), torch.empty_like(interp)


def _points_backward(ctx, grad_y):
    x, weights, interp = ctx.saved_tensors
    _, scale, kernel_size, causal = ctx.args
    grad_x = grad_weights = grad_interp = None
    if torch.is_grad_enabled():
        # a graph of the gradients (second derivatives): through the bank, whose passes have derivatives of their
        # own, as these do not
        bank = _sampled_bank(weights, interp)
        if ctx.needs_input_grad[0]:
            grad_x = _grad_input(grad_y, bank, list(x.shape[1:]), scale, kernel_size, causal)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_weights, grad_interp = _points_gradients(
                _grad_bank(grad_y, x, list(bank.shape), scale, kernel_size, causal), weights, interp)
        return grad_x, grad_weights, grad_interp, None, None, None, None
    if ctx.needs_input_grad[0]:
        grad_x = _points_grad_input(grad_y, weights, interp, list(x.shape[1:]), scale, kernel_size, causal)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        grad_weights, grad_interp = _points_grad_points(grad_y, x, weights, interp, scale, kernel_size, causal)
    return grad_x, grad_weights, grad_interp, None, None, None, None


_points_forward.register_autograd(_points_backward, setup_context=save_inputs)


def _points_flops(batch: int, weights_shape: Sequence[int], interp_shape: Sequence[int], out_size: Sequence[int],
                  samplings: int) -> int:
    """A pass's convolution (`_flops` of the bank) plus `samplings` products of the values and the
    interpolation, of the bank's size each."""
    bank_shape = (weights_shape[0], 1, *interp_shape[1:])
    return _flops(batch, bank_shape, out_size) + 2 * samplings * math.prod(weights_shape) * math.prod(interp_shape[1:])


@register_flop_formula(torch.ops.smpconv.resize_conv2d_points)
def _points_forward_flops(x_shape, weights_shape, interp_shape, out_size, *args, out_shape=None, **kwargs) -> int:
    return _points_flops(x_shape[0], weights_shape, interp_shape, out_size, 1)


@register_flop_formula(torch.ops.smpconv.resize_conv2d_points_grad_input)
def _points_grad_input_flops(grad_y_shape, weights_shape, interp_shape, *args, out_shape=None, **kwargs) -> int:
    return _points_flops(grad_y_shape[0], weights_shape, interp_shape, grad_y_shape[-2:], 1)


@register_flop_formula(torch.ops.smpconv.resize_conv2d_points_grad_points)
def _points_grad_points_flops(grad_y_shape, x_shape, weights_shape, interp_shape, *args, out_shape=None,
                              **kwargs) -> int:
    return _points_flops(grad_y_shape[0], weights_shape, interp_shape, grad_y_shape[-2:], 2)


# ---- the function -----------------------------------------------------------------------------------------

def resize_conv2d(x: torch.Tensor, bank: torch.Tensor, rows: AxisGeometry, cols: AxisGeometry) -> torch.Tensor:
    """The resizing convolution of x [B, C, H, W] with the kernels `bank` [O, C / groups, row phases, row taps,
    column phases, column taps] sampled at the phases' offsets (see the module docstring): depthwise for a bank of
    one input channel per output, full for one of all of them, as F.conv2d's weights. The output is in x's
    memory layout, and F.conv2d's dtype under autocast."""
    check_float('resize_conv2d', x=x, bank=bank)
    channels = x.shape[1]
    shape = tuple(bank.shape)
    if len(shape) != 6 or shape[2:] != (rows.phases, rows.taps, cols.phases, cols.taps) or channels % shape[1] or \
            shape[0] % (channels // shape[1]) or tuple(x.shape[2:]) != (rows.in_size, cols.in_size):
        raise ValueError(f'resize_conv2d takes x [B, C, {rows.in_size}, {cols.in_size}] and a bank [O, C / groups, '
                         f'{rows.phases}, {rows.taps}, {cols.phases}, {cols.taps}] for its geometry, got '
                         f'{tuple(x.shape)} and {shape}')
    dtype = compute_dtype(x, bank)
    x, bank = x.to(dtype), bank.to(dtype)
    if torch_ops_only():  # PyTorch's own operations: recorded graphs then run without this package
        return _torch_forward(x, bank, rows, cols).contiguous(memory_format=memory_format(x))
    return _forward(x, bank, *_geometry_args(rows, cols))


def resize_conv1d(x: torch.Tensor, bank: torch.Tensor, axis: AxisGeometry) -> torch.Tensor:
    """The resizing convolution of a sequence x [B, C, N] with the kernels `bank` [O, C / groups, phases, taps]:
    the 2D one on a single row."""
    row = axis_geometry(1, 1, 1., 1)
    return resize_conv2d(x.unsqueeze(2), bank[:, :, None, None], row, axis).squeeze(2)


def resize_conv2d_points(x: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor, rows: AxisGeometry,
                         cols: AxisGeometry) -> torch.Tensor:
    """`resize_conv2d` of x [B, C, H, W] with the depthwise bank of points whose positions the channels share,
    bank[c] = sum_p weights[c, p] interp[p], for their values `weights` [C, P] and interpolation weights `interp`
    [P, row phases, row taps, column phases, column taps]: the same result, and on the 'cpp' backend the bank is
    sampled per channel where it is used, never made whole."""
    check_float('resize_conv2d_points', x=x, weights=weights, interp=interp)
    shape = tuple(interp.shape)
    if weights.dim() != 2 or weights.shape[0] != x.shape[1] or len(shape) != 5 or shape[0] != weights.shape[1] or \
            shape[1:] != (rows.phases, rows.taps, cols.phases, cols.taps) or \
            tuple(x.shape[2:]) != (rows.in_size, cols.in_size):
        raise ValueError(f'resize_conv2d_points takes x [B, C, {rows.in_size}, {cols.in_size}], weights [C, P] and '
                         f'interp [P, {rows.phases}, {rows.taps}, {cols.phases}, {cols.taps}] for its geometry, got '
                         f'{tuple(x.shape)}, {tuple(weights.shape)} and {shape}')
    dtype = compute_dtype(x, weights)
    x, weights, interp = x.to(dtype), weights.to(dtype), interp.to(dtype)
    if torch_ops_only():  # PyTorch's own operations: recorded graphs then run without this package
        return _torch_forward(x, _sampled_bank(weights, interp), rows, cols).contiguous(
            memory_format=memory_format(x))
    return _points_forward(x, weights, interp, *_geometry_args(rows, cols))


def resize_conv1d_points(x: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor,
                         axis: AxisGeometry) -> torch.Tensor:
    """`resize_conv2d_points` of a sequence x [B, C, N], with interp [P, phases, taps]: the 2D one on a single
    row."""
    row = axis_geometry(1, 1, 1., 1)
    return resize_conv2d_points(x.unsqueeze(2), weights, interp[:, None, None], row, axis).squeeze(2)


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
