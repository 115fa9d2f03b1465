"""Continuous convolution layers: an SMP kernel applied at sub-pixel offsets resizes a feature map by any factor,
chosen at run time (see `ops.resize` for the formula).

Two forms, as `F.conv2d`'s groups: depthwise (points shared by the channels, `SMPConv2d`'s kernel) and full
(points per output channel with a value per input channel and the coverage normalisation of the paper's eq. (1),
`CKConv`'s kernel, built by `full_points`), chosen by `out_channels`.

TorchScript compiles the layers; the resize geometry is plain Python, so a scripted layer resizes through a
Python call (`torch.jit.ignore`): it runs, but `torch.jit.save` refuses it.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..ops import conv2d_same, depthwise_conv2d
from ..ops.resize import (AxisGeometry, resize_conv1d, resize_conv1d_points, resize_conv2d, resize_conv2d_points,
                          resize_geometry)
from ..smp import RADIUS_MAX, RADIUS_MIN, SMPKernel
from .imagenet import SMPConv2d

__all__ = ['SMPContinuousConv2d', 'SMPContinuousConv1d', 'full_points', 'sample_interpolation', 'sample_bank', 'resize']

# a scale or size: one number, or one per axis (height, width); eager calls take any sequence, TorchScript tuples
Scale2d = Union[float, Tuple[float, float]]
Size2d = Union[int, Tuple[int, int]]


def full_points(in_channels: int, out_channels: int, kernel_size: int, num_points: int, ndim: int,
                causal: bool = False, radius: Optional[float] = None, position_std: float = 0.2,
                radius_range: Tuple[float, float] = (RADIUS_MIN, RADIUS_MAX), device=None, dtype=None) -> SMPKernel:
    """The full form's kernel: points per output channel with a value per input channel, normalised by the number
    of points covering each tap (eq. 1); causal ones start near their newest end (+1), others near the centre."""
    return SMPKernel(out_channels, num_points, kernel_size, ndim=ndim, in_per_filter=in_channels,
                     shared_positions=False, normalize=True, position_std=position_std,
                     position_init='newest' if causal else 'centre', init_radius=radius, radius_range=radius_range,
                     device=device, dtype=dtype)


def sample_interpolation(points: SMPKernel, axes: Sequence[AxisGeometry], gain: float = 1.) -> torch.Tensor:
    """The points' interpolation weights at the taps of every phase of `axes` ((rows, columns) or (steps,)):
    [(F,) P, phases, taps, ...], zero beyond the kernel's support, times `gain` and min(s, 1) per axis, which keeps
    the response to smooth input that of scale 1. The kernels are the points' values times them, summed over the
    points."""
    coordinates = [axis.coordinates().reshape(-1) for axis in axes]
    if len(axes) == 2:  # the package's orientation: the first row is y = +1, so a row below the centre has y < 0
        rows, cols = -coordinates[0], coordinates[1]
        grid = torch.stack(torch.broadcast_tensors(cols[None, :], rows[:, None]))
        support = axes[0].mask()[:, :, None, None] & axes[1].mask()[None, None]
    else:
        grid, support = coordinates[0][None], axes[0].mask()
    for axis in axes:
        gain *= min(axis.scale, 1.)
    # on the interpolation weights, before the points' values multiply them: a filter count's fewer products
    interp = points.interpolation_at(grid, (support.to(grid) * gain).reshape(grid.shape[1:]))
    return interp.reshape(*interp.shape[:-len(axes)], *support.shape)


def _is_depthwise(points: SMPKernel) -> bool:
    """Whether the points' kernels are a depthwise bank of points the filters share: one value per filter."""
    return points.weights.dim() == 2 and points.positions.dim() == 2


def _bank(points: SMPKernel, interp: torch.Tensor) -> torch.Tensor:
    """The kernels [F, I or 1, phases, taps, ...] of the points' values and their interpolation `interp`."""
    weights = points.weights
    num_points = weights.shape[-1]
    taps = interp.shape[points.positions.dim() - 1:]  # after [P] or [F, P]
    if points.positions.dim() == 2:  # shared by the filters
        kernel = weights.reshape(-1, num_points) @ interp.reshape(num_points, -1)
    else:
        kernel = weights.reshape(weights.shape[0], -1, num_points) @ interp.reshape(weights.shape[0], num_points, -1)
    return kernel.reshape(weights.shape[0], -1, *taps)


def sample_bank(points: SMPKernel, axes: Sequence[AxisGeometry], gain: float = 1.) -> torch.Tensor:
    """The kernels [F, I or 1, phases, taps, ...] of the points at the taps of every phase of `axes`
    (`sample_interpolation`)."""
    return _bank(points, sample_interpolation(points, axes, gain))


def resize(x: torch.Tensor, points: SMPKernel, axes: Sequence[AxisGeometry], gain: float = 1.) -> torch.Tensor:
    """x [B, C, N] or [B, C, H, W] resized as `axes` say with the points' kernels: depthwise or full, as their
    values' shape; a depthwise bank is sampled inside the convolution (`resize_conv2d_points`)."""
    interp = sample_interpolation(points, axes, gain)
    if _is_depthwise(points):
        convolve = resize_conv1d_points if len(axes) == 1 else resize_conv2d_points
        return convolve(x, points.weights, interp, *axes)
    bank = _bank(points, interp)
    return resize_conv1d(x, bank, *axes) if len(axes) == 1 else resize_conv2d(x, bank, *axes)


class SMPContinuousConv2d(SMPConv2d):
    """Convolution whose SMP kernel is sampled where each output pixel's taps fall, so that it resizes its input by
    any scale, or to any size.

    Depthwise by default (points shared by the channels, as `SMPConv2d`'s); with `out_channels`, full (points per
    output channel with a value per input channel, eq. (1) normalisation, as `CKConv`'s). At scale 1 it is the
    'same' convolution with the kernel on its k x k grid (depthwise: `SMPConv2d`, the same parameters, state-dict
    keys and output). Downscaling stretches the kernel over k output pixels (a learned anti-aliasing filter),
    upscaling keeps its k input pixels; the response to smooth input is that of scale 1.
    """

    def __init__(self, channels: int, kernel_size: Union[int, Sequence[int]], num_points: int,
                 kernel_scale: float = 1., out_channels: Optional[int] = None, device=None, dtype=None):
        super().__init__(channels, kernel_size, num_points, kernel_scale, device=device, dtype=dtype)
        self.depthwise = out_channels is None
        if not self.depthwise:  # SMPConv2d's points are depthwise: the full form's replace them
            self.points = full_points(channels, out_channels, self.points.kernel_size, num_points, ndim=2,
                                      device=device, dtype=dtype)

    def bank(self, rows: AxisGeometry, cols: AxisGeometry) -> torch.Tensor:
        """The kernels [O, C or 1, row phases, row taps, column phases, column taps] of a geometry (`sample_bank`)."""
        return sample_bank(self.points, (rows, cols), self.kernel_gain)

    def forward(self, x: torch.Tensor, scale: Optional[Scale2d] = None, size: Optional[Size2d] = None) -> torch.Tensor:
        """x [B, C, H, W] resized by `scale` (a number, or one per axis: the output is floor(H s_y) x floor(W s_x))
        or to `size` (H', W'); neither: the 'same' convolution."""
        if scale is None and size is None:
            return self._same(x)
        return self._resize_in_python(x, scale, size)

    def _same(self, x: torch.Tensor) -> torch.Tensor:
        """The 'same' convolution at scale 1 (depthwise: `SMPConv2d.forward`, which TorchScript cannot call through
        super())."""
        if self.depthwise:
            return depthwise_conv2d(x, self.kernel(self.touched_window(x)))
        return conv2d_same(x, self.kernel())

    @torch.jit.ignore  # the geometry is Python: a scripted layer calls back into it, and cannot be saved
    def _resize_in_python(self, x: torch.Tensor, scale: Optional[Scale2d], size: Optional[Size2d]) -> torch.Tensor:
        axes = resize_geometry(x.shape[-2:], self.kernel_size, scale, size)
        if all(axis.is_identity for axis in axes):
            return self._same(x)
        return resize(x, self.points, axes, self.kernel_gain)

    def extra_repr(self) -> str:
        return '' if self.depthwise else f'out_channels={self.points.weights.shape[0]} (full)'


class SMPContinuousConv1d(nn.Module):
    """Convolution of sequences [B, C, N] whose SMP kernel is sampled where each output step's taps fall, so that it
    resamples a sequence by any factor, or to any length.

    Depthwise by default (points shared by the channels); with `out_channels`, full (points per output channel with
    a value per input channel, eq. (1) normalisation, as `CKConv`'s). Causal by default: output step j sees the
    input steps up to its centre, (j + 1/2) / s - 1/2, the kernel's newest end (+1) on it, as the sequence models'
    kernels have their last tap on the current step; otherwise the kernel is centred there. Scale 1 is the causal
    (or 'same') convolution with the kernel of `kernel_size` taps; downscaling stretches it over `kernel_size`
    output steps.
    """

    def __init__(self, channels: int, kernel_size: int, num_points: int, causal: bool = True,
                 out_channels: Optional[int] = None, device=None, dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if out_channels is None:
            self.points = SMPKernel(channels, num_points, kernel_size, ndim=1,
                                    position_init='newest' if causal else 'centre', **dd)
        else:
            self.points = full_points(channels, out_channels, kernel_size, num_points, ndim=1, causal=causal, **dd)
        self.causal = causal

    def bank(self, axis: AxisGeometry) -> torch.Tensor:
        """The kernels [O, C or 1, phases, taps] of a geometry (`sample_bank`)."""
        return sample_bank(self.points, (axis,))

    def forward(self, x: torch.Tensor, scale: Optional[float] = None, size: Optional[int] = None) -> torch.Tensor:
        """x [B, C, N] resampled by `scale` (the output has floor(N s) steps) or to `size` steps; neither: scale 1."""
        return self._resize_in_python(x, scale, size)

    @torch.jit.ignore  # the geometry is Python: a scripted layer calls back into it, and cannot be saved
    def _resize_in_python(self, x: torch.Tensor, scale: Optional[float], size: Optional[int]) -> torch.Tensor:
        axes = resize_geometry(x.shape[-1:], self.points.kernel_size, scale, size, causal=self.causal)
        return resize(x, self.points, axes)
