"""The direct 1-D convolution on CPUs, a C++ extension (csrc/conv1d_cpu.cpp, built by `native`): the long
convolution operator's `cpp` backend, which the dispatcher times against PyTorch's (oneDNN) and the FFT. It wins on
the sequence models' small kernels (5 taps, 30 channels), which oneDNN runs at about half the FMA units' peak: on a
2-core AVX2 EPYC a pair's small kernel, forward and backward, 13.7 against 17.4 ms at sMNIST's [64, 30, 784] and
34.8 against 47.3 ms at raw Speech Commands' [8, 30, 16000] (PyTorch's: `F.conv1d` of the padded input).

float32 and float64 are computed as they are; half precisions in float32, returned in their own dtype (as the FFT
backend does). Results do not depend on the number of threads.
"""
from typing import List

import torch

from .native import NativeExtension

__all__ = ['available', 'forward', 'grad_weight']

EXTENSION = NativeExtension('smpconv_conv1d_cpu', 'conv1d_cpu.cpp', 'the C++ direct 1-D convolution')


def available(x: torch.Tensor) -> bool:
    """Whether the convolution of x runs here: a 1-D floating-point CPU input, and the extension built."""
    return x.device.type == 'cpu' and x.dim() == 3 and x.is_floating_point() and EXTENSION.module() is not None


def _computed(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32)).contiguous()


def forward(x: torch.Tensor, weight: torch.Tensor, pad: List[int]) -> torch.Tensor:
    """y[b, o, t] = sum_c sum_j weight[o, c, j] x[b, c, t - pad + j], zero outside x."""
    return EXTENSION.module().correlate(_computed(x), _computed(weight), pad[0]).to(x.dtype)


def grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size: List[int], pad: List[int]) -> torch.Tensor:
    """dw[o, c, j] = sum_b sum_t grad_y[b, o, t] x[b, c, t - pad + j]."""
    return EXTENSION.module().grad_weight(_computed(grad_y), _computed(x), kernel_size[0], pad[0]).to(x.dtype)
