"""Layers of the authors' sequence TCN and CIFAR-10 ResNet: SMP kernel convolutions, full (not depthwise).

Paper: `SMPConv: Self-moving Point Representations for Continuous Convolution` - https://arxiv.org/abs/2304.02330
(sections 4.2-4.3). Original code: https://github.com/sangnekim/SMPConv, folder smp/ (MIT).

The authors' continuous-kernel convolution ("CKConv" in their code, after Romero et al.), with SMP kernels: each
output channel has points of its own, with a value per input channel, and kernels are normalised by the number
of points covering each tap (the paper's eq. 1). Only the box of taps some point reaches is sampled and convolved
with (exactly: every other tap is zero), and of those only the taps that meet the input.
"""
from typing import Optional, Type

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from ..ops import causal_conv1d, conv2d_same, conv_taps, torch_ops_only
from ..ops.batch_norms import summed_batch_norms
from ..ops.resize import Scale, Size, resize_geometry
from ..smp import scaled_kernel_size
from .continuous import full_points, resize
from .dropout import Dropout

__all__ = ['CKConv', 'LargeSmallConv', 'TCNBlock', 'ResNetBlock', 'norm_layer_of', 'act_layer_of']

# the interval the authors' sequence and CIFAR-10 trainer clamps radii to after every step
RADIUS_RANGE = (1e-4, 1.)


class CKConv(nn.Module):
    """Convolution with an SMP kernel of points per output channel, a value per input channel and the coverage
    normalisation of the paper's eq. (1): causal in 1D (the kernel's last tap is the current step), 'same' in
    2D. `kernel_type='dense'` learns a dense kernel of the same size instead, to compare with."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int,
            num_points: int,
            ndim: int,
            radius: float,
            position_std: float,
            bias: bool = False,
            kernel_type: str = 'smp',
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if ndim == 2 and kernel_size % 2 == 0:
            raise ValueError(f"'same' 2D convolution needs an odd kernel size, got {kernel_size}")
        self.ndim = ndim
        if kernel_type == 'smp':
            self.points = full_points(in_chs, out_chs, kernel_size, num_points, ndim, causal=ndim == 1, radius=radius,
                                      position_std=position_std, radius_range=RADIUS_RANGE, **dd)
            self.weight = None
        elif kernel_type == 'dense':
            self.points = None
            self.weight = nn.Parameter(torch.empty(out_chs, in_chs, *([kernel_size] * ndim), **dd))
            trunc_normal_(self.weight, std=.02)
        else:
            raise ValueError(f"kernel_type is 'smp' or 'dense', got {kernel_type!r}")
        self.bias = nn.Parameter(torch.zeros(out_chs, **dd)) if bias else None
        self.kernel_size, self.kernel_gain = [kernel_size] * ndim, 1.

    @torch.jit.ignore
    def set_kernel_scale(self, scale: float) -> None:
        """Sample the kernel for inputs `scale` times longer (a sequence at `scale` times the sampling rate, say):
        round(scale * L) taps over the same span, the newest still the current step, each weighted by the
        trained tap spacing over the new one; the parameters stay as they are."""
        if self.points is None:
            raise ValueError('a dense kernel cannot be re-sampled: only SMP kernels (kernel_type="smp") can')
        self.kernel_size, self.kernel_gain = scaled_kernel_size(self.points.kernel_size, scale, odd=self.ndim == 2)

    def kernel(self) -> torch.Tensor:
        """The dense kernel [O, C, L] or [O, C, L, L] the convolution applies."""
        if self.points is None:
            return self.weight
        kernel = self.points(self.kernel_size)
        return kernel if self.kernel_gain == 1. else kernel * self.kernel_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.points is not None and not (torch.jit.is_scripting() or torch_ops_only()):
            return self._convolve_nonzero_taps(x)
        return self.convolve_whole_kernel(x)

    def convolve_whole_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution with the whole kernel sampled (what FX, export and TorchScript record, and what
        transforms compute: the nonzero box is read from the points' values, which vmap batches; and the cost of an
        SMP kernel before issue 21, which benchmarks compare with)."""
        if self.ndim == 1:
            return causal_conv1d(x, self.kernel(), self.bias)
        return conv2d_same(x, self.kernel(), self.bias)

    @torch.jit.unused
    def _convolve_nonzero_taps(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution with the kernel's box of nonzero taps only (`SMPKernel.nonzero_box`, with the current
        position's tap): the same result and gradients as the whole kernel's, at the cost of the box."""
        pad = [k - 1 for k in self.kernel_size] if self.ndim == 1 else [k // 2 for k in self.kernel_size]
        box = self.points.nonzero_box(self.kernel_size, pad)
        taps = self.points(self.kernel_size, box)
        if self.kernel_gain != 1.:
            taps = taps * self.kernel_gain
        return conv_taps(x, taps, [p - start for p, (start, _) in zip(pad, box)], self.bias)

    @torch.jit.unused
    def resize(self, x: torch.Tensor, scale: Optional[Scale] = None, size: Optional[Size] = None) -> torch.Tensor:
        """The convolution resizing x [B, C, N] (causal) or [B, C, H, W] by `scale` or to `size` as the continuous
        layers do (`SMPContinuousConv1d`, `SMPContinuousConv2d`), the kernel's newest end on each output step's
        centre in 1D: their full form (`out_channels`), plus the bias."""
        axes = resize_geometry(x.shape[2:], self.kernel_size, scale, size, causal=self.ndim == 1)
        if all(axis.is_identity for axis in axes):
            return self(x)
        if self.points is None:
            raise ValueError('a dense kernel cannot resize: only SMP kernels (kernel_type="smp") can')
        y = resize(x, self.points, axes, self.kernel_gain)
        return y if self.bias is None else y + self.bias.to(y.dtype).view(1, -1, *([1] * self.ndim))


class CausalConv1d(nn.Conv1d):
    """Conv1d whose output step t sees the input steps t - k + 1 .. t, by the package's operator (`causal_conv1d`),
    which times oneDNN against the C++ direct convolution for it."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, bias: bool = False, device=None, dtype=None):
        super().__init__(in_chs, out_chs, kernel_size, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return causal_conv1d(x, self.weight, self.bias)


class SameConv2d(nn.Conv2d):
    """Conv2d with 'same' zero padding (odd kernels), by the package's operator (`conv2d_same`), which times oneDNN
    against the FFT for it."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, bias: bool = False, device=None, dtype=None):
        if kernel_size % 2 == 0:
            raise ValueError(f"'same' 2D convolution needs an odd kernel size, got {kernel_size}")
        super().__init__(in_chs, out_chs, kernel_size, padding=kernel_size // 2, bias=bias, device=device,
                         dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_same(x, self.weight, self.bias)


class LargeSmallConv(nn.Module):
    """BN(SMP kernel convolution) + BN(small dense convolution), the authors' pair of parallel kernels, then an
    activation where one is given."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            ndim: int,
            kernel_size: int,
            small_kernel_size: int,
            norm_layer: Type[nn.Module],
            small_bias: bool = False,
            act_layer: Optional[Type[nn.Module]] = None,
            **ck_args,
    ):
        dd = {'device': ck_args.get('device'), 'dtype': ck_args.get('dtype')}
        super().__init__()
        self.large = CKConv(in_chs, out_chs, kernel_size, ndim=ndim, **ck_args)
        self.large_norm = norm_layer(out_chs, **dd)
        if ndim == 1:
            self.small = CausalConv1d(in_chs, out_chs, small_kernel_size, bias=small_bias, **dd)
        else:
            self.small = SameConv2d(in_chs, out_chs, small_kernel_size, bias=small_bias, **dd)
        self.small_norm = norm_layer(out_chs, **dd)
        self.act = nn.Identity() if act_layer is None else act_layer()
        trunc_normal_(self.small.weight, std=.02)
        if self.small.bias is not None:
            nn.init.zeros_(self.small.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        large, small = self.large(x), self.small(x)
        if torch.jit.is_scripting() or torch_ops_only():  # graphs recorded and transforms get PyTorch's norms
            return self.act(self.large_norm(large) + self.small_norm(small))
        return self._summed_norms(large, small)

    @torch.jit.unused
    def _summed_norms(self, large: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
        return summed_batch_norms(large, small, self.large_norm, self.small_norm, self.act)


class _ResidualBlock(nn.Module):
    """Two pairs of parallel kernels, the first activated (both in the TCN: a pair applies the activation in one
    pass with its norms, `summed_batch_norms`), and a shortcut (a 1x1 convolution where the width changes)."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            ndim: int,
            dropout: float,
            act_layer: Type[nn.Module],
            activated_conv2: bool,
            **conv_args,
    ):
        dd = {'device': conv_args.get('device'), 'dtype': conv_args.get('dtype')}
        super().__init__()
        self.conv1 = LargeSmallConv(in_chs, out_chs, ndim, act_layer=act_layer, **conv_args)
        self.conv2 = LargeSmallConv(out_chs, out_chs, ndim, act_layer=act_layer if activated_conv2 else None,
                                    **conv_args)
        if in_chs == out_chs:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = (nn.Conv1d if ndim == 1 else nn.Conv2d)(in_chs, out_chs, 1, **dd)
        self.act = act_layer()
        self.drop = Dropout(dropout)


class TCNBlock(_ResidualBlock):
    """relu(drop(relu(conv2(h))) + shortcut(x)), h = drop(relu(conv1(x))): the authors' TCN block, with its
    activation both before and after the residual sum."""

    def __init__(self, in_chs: int, out_chs: int, **kwargs):
        super().__init__(in_chs, out_chs, ndim=1, activated_conv2=True, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.conv1(x))
        return self.act(self.drop(self.conv2(h)) + self.shortcut(x))


class ResNetBlock(_ResidualBlock):
    """relu(conv2(h) + shortcut(x)), h = drop(relu(conv1(x))): the authors' CIFAR-10 ResNet block."""

    def __init__(self, in_chs: int, out_chs: int, **kwargs):
        super().__init__(in_chs, out_chs, ndim=2, activated_conv2=False, **kwargs)
        if isinstance(self.shortcut, nn.Conv2d):  # the authors re-initialise 2D (not 1D) shortcuts
            trunc_normal_(self.shortcut.weight, std=.02)
            nn.init.zeros_(self.shortcut.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.conv1(x))
        return self.act(self.conv2(h) + self.shortcut(x))


_NORMS = {'batchnorm': {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}}
_ACTS = {'relu': nn.ReLU, 'leaky_relu': nn.LeakyReLU}


class _LayerNorm(nn.GroupNorm):
    """Layer norm over channels and positions (GroupNorm with one group), as the authors' `LayerNorm`."""

    def __init__(self, num_channels: int, eps: float = 1e-12, device=None, dtype=None):
        super().__init__(1, num_channels, eps=eps, device=device, dtype=dtype)


def norm_layer_of(norm: str, ndim: int) -> Type[nn.Module]:
    """The norm layer class of a config name ('batchnorm', 'layernorm') for `ndim`-D inputs."""
    if norm == 'layernorm':
        return _LayerNorm
    if norm not in _NORMS:
        raise ValueError(f"norm takes 'batchnorm' or 'layernorm', got {norm!r}")
    return _NORMS[norm][ndim]


def act_layer_of(act: str) -> Type[nn.Module]:
    """The activation class of a config name ('relu', 'leaky_relu')."""
    if act not in _ACTS:
        raise ValueError(f"act takes {' or '.join(map(repr, _ACTS))}, got {act!r}")
    return _ACTS[act]
