"""Network blocks built on the continuous (resizing) SMP convolution."""
from typing import Type

import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d, register_notrace_module

from ..ops.resize import Scale, Size
from .continuous import SMPContinuousConv2d
from .imagenet import fold_batchnorm

__all__ = ['ContinuousConvNormAct']


# FX keeps the block whole: the op's geometry is plain Python on the input's shape, which a tracer cannot read
@register_notrace_module
class ContinuousConvNormAct(nn.Module):
    """Depthwise SMP continuous convolution that resizes by a set factor (or to a set size), batch norm and
    activation: the resizing counterpart of a strided `FusableConvNormAct`.

    The convolution's output is linear in its points' values, so re-parameterising folds the batch norm exactly:
    its scale multiplies each channel's values, its shift becomes a bias.
    """

    def __init__(
            self,
            channels: int,
            kernel_size: int,
            num_points: int,
            scale: Scale = 0.5,
            apply_act: bool = True,
            act_layer: Type[nn.Module] = nn.ReLU,
            inference_mode: bool = False,
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.conv = SMPContinuousConv2d(channels, kernel_size, num_points, **dd)
        self.bn = BatchNormAct2d(channels, apply_act=apply_act, act_layer=act_layer, **dd)
        self.register_parameter('bias', None)  # the folded batch norm's shift
        self.resize_by(scale)  # sets self.scale and self.size (None), unannotated: TorchScript types them by value
        if inference_mode:
            self._fold(torch.ones(channels, **dd), torch.zeros(channels, **dd))

    @torch.jit.ignore
    def resize_by(self, scale: Scale) -> None:
        """Resize every input by `scale` (a number, or one per axis) from now on."""
        self.scale, self.size = scale, None

    @torch.jit.ignore
    def resize_to(self, size: Size) -> None:
        """Resize every input to `size` (H', W') from now on, whatever its own size."""
        self.scale, self.size = None, size

    @property
    def is_folded(self) -> bool:
        return self.bias is not None

    def _fold(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Multiply each channel's point values by `scale`, add `shift` as a bias; the activation stays."""
        self.conv.points.weights.mul_(scale[:, None])
        self.bias = nn.Parameter(shift)
        self.bn = nn.Sequential(self.bn.drop, self.bn.act)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if not self.is_folded:
            ones = torch.ones_like(self.bn.running_var)
            self._fold(*fold_batchnorm(ones, None, self.bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, scale=self.scale, size=self.size)
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        return self.bn(x)

    def extra_repr(self) -> str:
        return f'scale={self.scale}' if self.size is None else f'size={self.size}'
