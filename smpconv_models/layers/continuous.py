"""Continuous convolution layers: an SMP kernel applied at sub-pixel offsets resizes a feature map by any factor,
chosen at run time (see `ops.resize` for the formula)."""
from typing import Optional

import torch

from ..ops.resize import AxisGeometry, Scale, Size, resize_conv2d, resize_geometry
from .imagenet import SMPConv2d

__all__ = ['SMPContinuousConv2d']


class SMPContinuousConv2d(SMPConv2d):
    """Depthwise convolution whose SMP kernel (points shared by the channels, as `SMPConv2d`'s) is sampled where
    each output pixel's taps fall, so that it resizes its input by any scale, or to any size.

    At scale 1 it is `SMPConv2d`: the same parameters, state-dict keys and output. Downscaling stretches the
    kernel over k output pixels (a learned anti-aliasing filter), upscaling keeps its k input pixels; the
    response to smooth input is that of scale 1.
    """

    def bank(self, rows: AxisGeometry, cols: AxisGeometry) -> torch.Tensor:
        """The kernels [C, row phases, row taps, column phases, column taps] of a geometry, zero beyond the
        kernel's support, times the gain that keeps the response to smooth input."""
        # the package's orientation: the first row is y = +1, so a row below the centre has y < 0
        y = -rows.coordinates()
        x = cols.coordinates()
        grid = torch.stack(torch.broadcast_tensors(x.reshape(1, 1, -1), y.reshape(1, -1, 1))).squeeze(1)
        kernel = self.points.sample_at(grid).view(-1, rows.phases, rows.taps, cols.phases, cols.taps)
        support = (rows.mask()[:, :, None, None] & cols.mask()[None, None]).to(kernel)
        gain = self.kernel_gain * min(rows.scale, 1.) * min(cols.scale, 1.)
        return kernel * (support * gain)

    def forward(self, x: torch.Tensor, scale: Optional[Scale] = None, size: Optional[Size] = None) -> torch.Tensor:
        """x [B, C, H, W] resized by `scale` (a number, or one per axis: the output is floor(H s_y) x floor(W s_x))
        or to `size` (H', W'); neither: the 'same' convolution of `SMPConv2d`."""
        if scale is None and size is None:
            return super().forward(x)
        rows, cols = resize_geometry(x.shape[-2:], self.kernel_size, scale, size)
        if (rows.out_size, cols.out_size, rows.scale, cols.scale) == (rows.in_size, cols.in_size, 1., 1.):
            return super().forward(x)
        return resize_conv2d(x, self.bank(rows, cols), rows, cols)
