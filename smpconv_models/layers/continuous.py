"""Continuous convolution layers: an SMP kernel applied at sub-pixel offsets resizes a feature map by any factor,
chosen at run time (see `ops.resize` for the formula)."""
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..ops.resize import AxisGeometry, Scale, Size, resize_conv1d, resize_conv2d, resize_geometry
from ..smp import SMPKernel
from .imagenet import SMPConv2d

__all__ = ['SMPContinuousConv2d', 'SMPContinuousConv1d', 'sample_bank']


def sample_bank(points: SMPKernel, axes: Sequence[AxisGeometry], gain: float = 1.) -> torch.Tensor:
    """The kernels of `points` at the taps of every phase of `axes` ((rows, columns) or (steps,)): [F, I or 1, phases,
    taps, ...], zero beyond the kernel's support, times `gain` and min(s, 1) per axis, which keeps the response
    to smooth input that of scale 1."""
    coordinates = [axis.coordinates().reshape(-1) for axis in axes]
    if len(axes) == 2:  # the package's orientation: the first row is y = +1, so a row below the centre has y < 0
        rows, cols = -coordinates[0], coordinates[1]
        grid = torch.stack(torch.broadcast_tensors(cols[None, :], rows[:, None]))
        support = axes[0].mask()[:, :, None, None] & axes[1].mask()[None, None]
    else:
        grid, support = coordinates[0][None], axes[0].mask()
    kernel = points.sample_at(grid)
    kernel = kernel.reshape(kernel.shape[0], -1, *support.shape)
    for axis in axes:
        gain *= min(axis.scale, 1.)
    return kernel * (support.to(kernel) * gain)


class SMPContinuousConv2d(SMPConv2d):
    """Depthwise convolution whose SMP kernel (points shared by the channels, as `SMPConv2d`'s) is sampled where
    each output pixel's taps fall, so that it resizes its input by any scale, or to any size.

    At scale 1 it is `SMPConv2d`: the same parameters, state-dict keys and output. Downscaling stretches the
    kernel over k output pixels (a learned anti-aliasing filter), upscaling keeps its k input pixels; the
    response to smooth input is that of scale 1.
    """

    def bank(self, rows: AxisGeometry, cols: AxisGeometry) -> torch.Tensor:
        """The kernels [C, 1, row phases, row taps, column phases, column taps] of a geometry (`sample_bank`)."""
        return sample_bank(self.points, (rows, cols), self.kernel_gain)

    def forward(self, x: torch.Tensor, scale: Optional[Scale] = None, size: Optional[Size] = None) -> torch.Tensor:
        """x [B, C, H, W] resized by `scale` (a number, or one per axis: the output is floor(H s_y) x floor(W s_x))
        or to `size` (H', W'); neither: the 'same' convolution of `SMPConv2d`."""
        if scale is None and size is None:
            return super().forward(x)
        rows, cols = resize_geometry(x.shape[-2:], self.kernel_size, scale, size)
        if rows.is_identity and cols.is_identity:
            return super().forward(x)
        return resize_conv2d(x, self.bank(rows, cols), rows, cols)


class SMPContinuousConv1d(nn.Module):
    """Depthwise convolution of sequences [B, C, N] whose SMP kernel (points shared by the channels) is sampled
    where each output step's taps fall, so that it resamples a sequence by any factor, or to any length.

    Causal by default: output step j sees the input steps up to its centre, (j + 1/2) / s - 1/2, the kernel's
    newest end (+1) on it, as the sequence models' kernels have their last tap on the current step; otherwise
    the kernel is centred there. Scale 1 is the causal (or 'same') depthwise convolution with the kernel of
    `kernel_size` taps; downscaling stretches it over `kernel_size` output steps.
    """

    def __init__(self, channels: int, kernel_size: int, num_points: int, causal: bool = True, device=None,
                 dtype=None):
        super().__init__()
        self.points = SMPKernel(channels, num_points, kernel_size, ndim=1,
                                position_init='newest' if causal else 'centre', device=device, dtype=dtype)
        self.causal = causal

    def bank(self, axis: AxisGeometry) -> torch.Tensor:
        """The kernels [C, 1, phases, taps] of a geometry (`sample_bank`)."""
        return sample_bank(self.points, (axis,))

    def forward(self, x: torch.Tensor, scale: Optional[float] = None, size: Optional[int] = None) -> torch.Tensor:
        """x [B, C, N] resampled by `scale` (the output has floor(N s) steps) or to `size` steps; neither: scale 1."""
        (axis,) = resize_geometry(x.shape[-1:], self.points.kernel_size, scale, size, causal=self.causal)
        return resize_conv1d(x, self.bank(axis), axis)

