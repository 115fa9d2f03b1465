"""Building blocks of the SMPConv ImageNet networks (RepLKNet layout with SMP large kernels).

Every block can be re-parameterised for inference (`reparameterize()`, which timm's
`reparameterize_model` calls): batch norms fold into the convolutions next to them and the SMP kernel and
the small kernel merge into one depthwise convolution. `inference_mode=True` builds a block in that form.
"""
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import ConvNormAct, DropPath

from ..ops import depthwise_conv2d, torch_ops_only, useful_window
from ..ops.dispatch import check_odd
from ..smp import SMPKernel, central_box, scaled_kernel_size

__all__ = ['SMPConv2d', 'FusableConvNormAct', 'SMPLargeKernelConv', 'LargeKernelBlock',
           'ConvFFNBlock']


def fold_batchnorm(weight: torch.Tensor, bias: Optional[torch.Tensor],
                   bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution equal to a convolution (weights [out, ...]) followed by `bn` in eval."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale if bias is None else (bias - bn.running_mean) * scale
    if bn.affine:
        shift = shift + bn.bias
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), shift


class SMPConv2d(nn.Module):
    """Depthwise 'same' convolution whose kernel is sampled from self-moving points shared by all channels.

    The points define a function on [-1, 1]^2; `kernel_scale` s samples it on round-to-odd(s * k) nodes per
    axis instead of k, for inputs s times larger. The sampled values are scaled by the ratio of the grid
    cells' areas, ((k - 1) / (k' - 1))^2, so that the kernel keeps its value per unit of input image: on an
    image upsampled by s, the response to smooth content is the same to first order (the sum over s^2
    times more taps is divided by about s^2).
    """

    def __init__(
            self,
            channels: int,
            kernel_size: Union[int, Sequence[int]],
            num_points: int,
            kernel_scale: float = 1.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        self.points = SMPKernel(channels, num_points, kernel_size, ndim=2, device=device, dtype=dtype)
        check_odd(self.points.kernel_size)
        self.set_kernel_scale(kernel_scale)

    @torch.jit.ignore
    def set_kernel_scale(self, scale: float) -> None:
        """Sample the kernels `scale` times larger (or smaller) from now on; the parameters stay as they are."""
        self.kernel_size, self.kernel_gain = scaled_kernel_size(self.points.kernel_size, scale, odd=True)
        self.kernel_scale = scale

    def kernel(self, window: Optional[List[int]] = None) -> torch.Tensor:
        """The dense kernel [C, kh, kw] the convolution applies (or its central `window`)."""
        kernel = self.points(self.kernel_size, central_box(self.kernel_size, window))
        return kernel if self.kernel_gain == 1. else kernel * self.kernel_gain

    def touched_window(self, x: torch.Tensor) -> Optional[List[int]]:
        """The central part of the kernel that touches x and holds its nonzero taps (taps farther out meet only
        padding, or are zero: `SMPKernel.nonzero_box`, made symmetric about the centre as the depthwise
        convolution crops); None for all of it, as while a graph is recorded, where the input's size and the
        points may vary, and under a transform, where the points' values cannot be read."""
        if torch.jit.is_scripting() or torch_ops_only():
            return None
        return self._nonzero_window(useful_window(self.kernel_size, x.shape[-2], x.shape[-1]))

    @torch.jit.unused
    def _nonzero_window(self, window: List[int]) -> List[int]:
        centre = [k // 2 for k in self.kernel_size]
        box = self.points.nonzero_box(self.kernel_size, centre)
        return [min(size, 2 * max(c - start, stop - 1 - c) + 1) for size, c, (start, stop) in zip(window, centre, box)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.kernel(self.touched_window(x)))


class DepthwiseConv2d(nn.Module):
    """Depthwise 'same' convolution with a dense kernel [C, kh, kw] (and a bias): the fused large kernel, or
    the dense large kernel that SMP kernels are compared with."""

    def __init__(self, channels: int, kernel_size: Sequence[int], bias: bool = True, device=None, dtype=None):
        super().__init__()
        check_odd(kernel_size)
        self.weight = nn.Parameter(torch.zeros(channels, *kernel_size, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype)) if bias else None

    def kernel(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias)


class FusableConvNormAct(ConvNormAct):
    """timm's conv + batch norm (+ activation), whose batch norm folds into the convolution's weights and bias."""

    def __init__(self, *args, inference_mode: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if inference_mode:
            self._set_folded(torch.zeros_like(self.conv.weight), torch.zeros_like(self.conv.weight[:, 0, 0, 0]))

    def _set_folded(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Replace conv + batch norm by a convolution with bias; the activation stays."""
        conv = self.conv
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              conv.dilation, conv.groups, bias=True, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            self.conv.bias.copy_(bias)
        self.bn = nn.Sequential(self.bn.drop, self.bn.act)

    @property
    def is_folded(self) -> bool:
        return not isinstance(self.bn, nn.BatchNorm2d)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if not self.is_folded:
            self._set_folded(*fold_batchnorm(self.conv.weight, self.conv.bias, self.bn))

    @torch.no_grad()
    def absorb_input_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Fold a per-channel affine map of the input, x -> scale * x + shift, into this 1x1 convolution."""
        if self.conv.kernel_size != (1, 1) or self.conv.groups != 1:
            raise ValueError('only a 1x1 dense convolution absorbs an input affine map exactly (no padding)')
        offset = (self.conv.weight[:, :, 0, 0] * shift).sum(1)  # what the shift adds to every output pixel
        self.conv.weight.mul_(scale[None, :, None, None])
        if self.is_folded:
            self.conv.bias.add_(offset)
        else:
            self.bn.running_mean.sub_(offset)  # the batch norm then removes it as it would the bias


def _pad_to(kernel: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad a centred odd kernel [C, h, w] to at least `size`."""
    pad_h = max(0, size[0] - kernel.shape[-2]) // 2
    pad_w = max(0, size[1] - kernel.shape[-1]) // 2
    return nn.functional.pad(kernel, (pad_w, pad_w, pad_h, pad_h))


class SMPLargeKernelConv(nn.Module):
    """BN(SMP large-kernel conv) + BN(small dense depthwise conv), RepLKNet's re-parameterisable pair.

    `kernel_type='dense'` learns the large kernel as a dense k x k kernel instead, as RepLKNet does.
    """

    def __init__(
            self,
            channels: int,
            kernel_size: int,
            num_points: int,
            small_kernel_size: Optional[int] = 5,
            kernel_type: str = 'smp',
            inference_mode: bool = False,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if inference_mode:
            self.fused = DepthwiseConv2d(channels, (kernel_size, kernel_size), **dd)
            self.smp = None
            self.small_conv = None
            return
        self.fused = None
        if kernel_type == 'smp':
            large = SMPConv2d(channels, kernel_size, num_points, **dd)
        elif kernel_type == 'dense':
            large = DepthwiseConv2d(channels, (kernel_size, kernel_size), bias=False, **dd)
            nn.init.trunc_normal_(large.weight, std=.02)
        else:
            raise ValueError(f"kernel_type is 'smp' or 'dense', got {kernel_type!r}")
        self.smp = nn.Sequential(OrderedDict([('conv', large), ('bn', nn.BatchNorm2d(channels, **dd))]))
        if small_kernel_size is None:
            self.small_conv = None
        else:
            check_odd((small_kernel_size,))
            self.small_conv = ConvNormAct(
                channels, channels, small_kernel_size, groups=channels, apply_act=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        out = self.smp(x)
        if self.small_conv is not None:
            out = out + self.small_conv(x)
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        """One depthwise convolution with bias: the SMP kernel sampled once, with the small kernel added."""
        if self.fused is not None:
            return
        weight, bias = fold_batchnorm(self.smp.conv.kernel(), None, self.smp.bn)
        if self.small_conv is not None:
            small_weight, small_bias = fold_batchnorm(self.small_conv.conv.weight[:, 0], None, self.small_conv.bn)
            weight = _pad_to(weight, small_weight.shape[-2:]) + _pad_to(small_weight, weight.shape[-2:])
            bias = bias + small_bias
        self.fused = DepthwiseConv2d(weight.shape[0], tuple(weight.shape[1:]), device=weight.device,
                                     dtype=weight.dtype)
        self.fused.weight.copy_(weight)
        self.fused.bias.copy_(bias)
        self.smp = None
        self.small_conv = None


class _PreNormBlock(nn.Module):
    """x + DropPath(pw2(mix(pw1(BN(x))))); re-parameterising folds the pre-norm into pw1."""

    def __init__(self, dim: int, inference_mode: bool, drop_path: float, device=None, dtype=None):
        super().__init__()
        self.norm = nn.Identity() if inference_mode else nn.BatchNorm2d(dim, device=device, dtype=dtype)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    @torch.no_grad()
    def reparameterize(self) -> None:
        if isinstance(self.norm, nn.BatchNorm2d):
            scale, shift = fold_batchnorm(torch.ones_like(self.norm.running_var), None, self.norm)
            self.pw1.absorb_input_affine(scale, shift)
            self.norm = nn.Identity()


class LargeKernelBlock(_PreNormBlock):
    """x + DropPath(pw2(ReLU(LK(pw1(BN(x)))))), with pw1/pw2 pointwise conv+BN and LK the SMP large kernel."""

    def __init__(
            self,
            dim: int,
            dw_dim: int,
            kernel_size: int,
            num_points: int,
            small_kernel_size: Optional[int] = 5,
            kernel_type: str = 'smp',
            drop_path: float = 0.,
            inference_mode: bool = False,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__(dim, inference_mode, drop_path, **dd)
        self.pw1 = FusableConvNormAct(dim, dw_dim, 1, inference_mode=inference_mode, **dd)
        self.large_kernel = SMPLargeKernelConv(
            dw_dim, kernel_size, num_points, small_kernel_size, kernel_type, inference_mode=inference_mode, **dd)
        self.act = nn.ReLU()
        self.pw2 = FusableConvNormAct(dw_dim, dim, 1, apply_act=False, inference_mode=inference_mode, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw2(self.act(self.large_kernel(self.pw1(self.norm(x)))))
        return x + self.drop_path(out)


class ConvFFNBlock(_PreNormBlock):
    """x + DropPath(pw2(GELU(pw1(BN(x))))), with pw1/pw2 pointwise conv+BN expanding by the FFN ratio."""

    def __init__(self, dim: int, hidden_dim: int, drop_path: float = 0., inference_mode: bool = False, device=None,
                 dtype=None):
        dd = {'device': device, 'dtype': dtype}
        super().__init__(dim, inference_mode, drop_path, **dd)
        self.pw1 = FusableConvNormAct(dim, hidden_dim, 1, act_layer=nn.GELU, inference_mode=inference_mode, **dd)
        self.pw2 = FusableConvNormAct(hidden_dim, dim, 1, apply_act=False, inference_mode=inference_mode, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.pw2(self.pw1(self.norm(x))))
