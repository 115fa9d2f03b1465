"""Building blocks of the SMPConv ImageNet networks (RepLKNet layout with SMP large kernels)."""
from collections import OrderedDict
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from timm.layers import ConvNormAct, DropPath

from .ops import depthwise_conv2d
from .smp import SMPKernel

__all__ = ['SMPConv2d', 'SMPLargeKernelConv', 'LargeKernelBlock', 'ConvFFNBlock']


def _check_odd(kernel_size: Sequence[int]) -> None:
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"'same' depthwise convolution needs odd kernel sizes, got {tuple(kernel_size)}")

class SMPConv2d(nn.Module):
    """Depthwise 'same' convolution whose kernel is sampled from self-moving points shared by all channels."""

    def __init__(
            self,
            channels: int,
            kernel_size: Union[int, Sequence[int]],
            num_points: int,
            device=None,
            dtype=None,
    ):
        super().__init__()
        self.points = SMPKernel(channels, num_points, kernel_size, ndim=2, device=device, dtype=dtype)
        _check_odd(self.points.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.points())


class SMPLargeKernelConv(nn.Module):
    """BN(SMP large-kernel conv) + BN(small dense depthwise conv), RepLKNet's re-parameterisable pair."""

    def __init__(
            self,
            channels: int,
            kernel_size: int,
            num_points: int,
            small_kernel_size: Optional[int] = 5,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.smp = nn.Sequential(OrderedDict([
            ('conv', SMPConv2d(channels, kernel_size, num_points, **dd)),
            ('bn', nn.BatchNorm2d(channels, **dd)),
        ]))
        if small_kernel_size is None:
            self.small_conv = None
        else:
            _check_odd((small_kernel_size,))
            self.small_conv = ConvNormAct(
                channels, channels, small_kernel_size, groups=channels, apply_act=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.smp(x)
        if self.small_conv is not None:
            out = out + self.small_conv(x)
        return out


class LargeKernelBlock(nn.Module):
    """x + DropPath(pw2(ReLU(LK(pw1(BN(x)))))), with pw1/pw2 pointwise conv+BN and LK the SMP large kernel."""

    def __init__(
            self,
            dim: int,
            dw_dim: int,
            kernel_size: int,
            num_points: int,
            small_kernel_size: Optional[int] = 5,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.norm = nn.BatchNorm2d(dim, **dd)
        self.pw1 = ConvNormAct(dim, dw_dim, 1, **dd)
        self.large_kernel = SMPLargeKernelConv(dw_dim, kernel_size, num_points, small_kernel_size, **dd)
        self.act = nn.ReLU()
        self.pw2 = ConvNormAct(dw_dim, dim, 1, apply_act=False, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw2(self.act(self.large_kernel(self.pw1(self.norm(x)))))
        return x + self.drop_path(out)


class ConvFFNBlock(nn.Module):
    """x + DropPath(pw2(GELU(pw1(BN(x))))), with pw1/pw2 pointwise conv+BN expanding by the FFN ratio."""

    def __init__(
            self,
            dim: int,
            hidden_dim: int,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.norm = nn.BatchNorm2d(dim, **dd)
        self.pw1 = ConvNormAct(dim, hidden_dim, 1, act_layer=nn.GELU, **dd)
        self.pw2 = ConvNormAct(hidden_dim, dim, 1, apply_act=False, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.pw2(self.pw1(self.norm(x))))
