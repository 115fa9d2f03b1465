"""The reference for continuous (resizing) SMP convolutions: issue 18's formula, computed directly in float64.

For an input x [B, C, H, W], an output size (H', W') and a scale (s_y, s_x), output pixel (i, j) is centred
at input pixel coordinates c = ((i + 1/2) / s_y - 1/2, (j + 1/2) / s_x - 1/2), as F.interpolate's
align_corners=False, and

    y[b, f, i, j] = g * sum_{u, v} K_f(X, Y) * x[b, f, u, v],   X = a_x (v - c_x),  Y = -a_y (u - c_y),

with a = 2 / (k - 1) * min(s, 1) and g = min(s_y, 1) * min(s_x, 1) (zero padding). K_f is the SMP function
of smpconv_models.smp in the package's orientation, x along columns (-1 = left) and y pointing up (the top
row of a tap window, u - c_y = -(k - 1) / 2, is Y = +1), and zero outside [-1, 1]^2.

Every output pixel meets every input pixel here: slow, and plain to check against the formula.
"""
from typing import Sequence, Tuple, Union

import torch

from smpconv_models.smp import RADIUS_MAX, RADIUS_MIN

__all__ = ['smp_function', 'reference_resize_conv2d']


def smp_function(positions: torch.Tensor, radii: torch.Tensor, weights: torch.Tensor, x_coord: torch.Tensor,
                 y_coord: torch.Tensor) -> torch.Tensor:
    """K_f(X, Y) for every filter f, [F, *shape] for broadcastable coordinates; zero outside [-1, 1]^2.

    positions [P, 2] (coordinate 0 is x, 1 is y), radii [P] (clamped into the range SMPKernel samples with),
    weights [F, P]."""
    x_coord, y_coord = torch.broadcast_tensors(x_coord, y_coord)
    radii = radii.clamp(RADIUS_MIN, RADIUS_MAX)
    distance = (x_coord[..., None] - positions[:, 0]).abs() + (y_coord[..., None] - positions[:, 1]).abs()
    hats = torch.relu(1. - distance / radii)  # [..., P]
    inside = (x_coord.abs() <= 1.) & (y_coord.abs() <= 1.)
    kernel = (hats @ weights.T) * inside[..., None]  # [..., F]
    return kernel.movedim(-1, 0)


def _pair(value: Union[int, float, Sequence]) -> Tuple:
    return tuple(value) if isinstance(value, Sequence) else (value, value)


def reference_resize_conv2d(
        x: torch.Tensor,
        positions: torch.Tensor,
        radii: torch.Tensor,
        weights: torch.Tensor,
        kernel_size: Union[int, Sequence[int]],
        out_size: Union[int, Sequence[int]],
        scale: Union[float, Sequence[float]],
) -> torch.Tensor:
    """The depthwise continuous convolution of x [B, C, H, W] to out_size (H', W') at scale (s_y, s_x), float64.

    The scale sets the geometry and out_size the number of output pixels; the layer takes one and derives the
    other (floor(H * s) from a scale, H' / H from a size)."""
    x, positions, radii, weights = (t.to(torch.float64) for t in (x, positions, radii, weights))
    (k_y, k_x), (out_h, out_w), (s_y, s_x) = _pair(kernel_size), _pair(out_size), _pair(scale)
    height, width = x.shape[-2:]

    def offsets(out_len: int, in_len: int, s: float) -> torch.Tensor:
        """u - c for every output index (rows) and input index (columns) along one axis, [out_len, in_len]."""
        centres = (torch.arange(out_len, dtype=torch.float64) + 0.5) / s - 0.5
        return torch.arange(in_len, dtype=torch.float64) - centres[:, None]

    # 2 min(s, 1) d / (k - 1) in this order: at s = 1 the outermost taps land on exactly +-1, as the linspace
    # nodes of the sampled kernel do.
    y_coord = -2. * min(s_y, 1.) * offsets(out_h, height, s_y) / (k_y - 1)  # [H', H]
    x_coord = 2. * min(s_x, 1.) * offsets(out_w, width, s_x) / (k_x - 1)  # [W', W]
    kernel = smp_function(positions, radii, weights, x_coord[None, None], y_coord[:, :, None, None])
    gain = min(s_y, 1.) * min(s_x, 1.)
    return gain * torch.einsum('fiujv,bfuv->bfij', kernel, x)  # kernel [C, H', H, W', W]
