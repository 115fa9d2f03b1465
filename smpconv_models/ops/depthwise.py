"""Depthwise 'same' convolution with one odd-sized filter per channel."""
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ['depthwise_conv2d']


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Stride-1, zero-padded 'same' cross-correlation of each channel of x [B, C, H, W] with weight [C, kh, kw],
    plus an optional bias [C]."""
    kernel_h, kernel_w = weight.shape[-2], weight.shape[-1]
    return F.conv2d(x, weight.unsqueeze(1), bias, padding=(kernel_h // 2, kernel_w // 2), groups=weight.shape[0])
