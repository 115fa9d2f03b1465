"""The 'cpp' backend of the depthwise resizing convolution: a C++ extension with OpenMP (csrc/resize_cpu.cpp),
compiled on first use with torch.utils.cpp_extension, once per process.

    y[b, c, i, j] = sum_{m < ky, n < kx} bank[c, row_phase[i], m, col_phase[j], n]
                                           * x[b, c, row_start[i] + m, col_start[j] + n]      (x = 0 outside)

`forward` computes y, `grad_input` and `grad_bank` its adjoints in x and in the bank, for float32, float64 and
bfloat16 (accumulated in float32) CPU tensors in any memory layout (made contiguous first); results are
contiguous, in the inputs' dtype, and do not depend on the number of threads. The `*_points` functions take the
bank as points' values [C, P] and their interpolation [P, Py, ky, Px, kx] (bank[c] = sum_q weights[c, q]
interp[q], sampled per channel where it is used and never stored whole), `grad_points` giving the adjoints in
both. Where the extension cannot be built (no compiler, say), `available` warns once and answers False, and the
operator computes with PyTorch (`native`).
"""
from typing import Sequence, Tuple

import torch

from .native import NativeExtension

__all__ = ['available', 'forward', 'grad_input', 'grad_bank', 'forward_points', 'grad_input_points', 'grad_points']

_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
EXTENSION = NativeExtension('smpconv_resize_cpu', 'resize_cpu.cpp', 'the C++ resizing convolution')


def available(x: torch.Tensor) -> bool:
    """Whether this backend runs on x: a float32, float64 or bfloat16 CPU tensor, and the extension built."""
    return x.device.type == 'cpu' and x.dtype in _DTYPES and EXTENSION.module() is not None


def forward(x: torch.Tensor, bank: torch.Tensor, row_start: torch.Tensor, row_phase: torch.Tensor,
            col_start: torch.Tensor, col_phase: torch.Tensor) -> torch.Tensor:
    """y [B, C, H', W'] of x [B, C, H, W] and the depthwise bank [C, Py, ky, Px, kx]."""
    return EXTENSION.module().forward(x, bank.to(x.dtype), None, None, row_start, row_phase, col_start, col_phase)


def grad_input(grad_y: torch.Tensor, bank: torch.Tensor, row_start: torch.Tensor, row_phase: torch.Tensor,
               col_start: torch.Tensor, col_phase: torch.Tensor, in_height: int, in_width: int) -> torch.Tensor:
    """The gradient [B, C, in_height, in_width] of the input for grad_y [B, C, H', W']."""
    return EXTENSION.module().grad_input(grad_y, bank.to(grad_y.dtype), None, None, row_start, row_phase, col_start,
                                         col_phase, in_height, in_width)


def grad_bank(grad_y: torch.Tensor, x: torch.Tensor, row_start: torch.Tensor, row_phase: torch.Tensor,
              col_start: torch.Tensor, col_phase: torch.Tensor, bank_shape: Sequence[int]) -> torch.Tensor:
    """The gradient of the bank (of `bank_shape`, [C, Py, ky, Px, kx]) for grad_y [B, C, H', W'] and x."""
    return EXTENSION.module().grad_bank(grad_y.to(x.dtype), x, row_start, row_phase, col_start, col_phase,
                                        list(bank_shape))


def forward_points(x: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor, row_start: torch.Tensor,
                   row_phase: torch.Tensor, col_start: torch.Tensor, col_phase: torch.Tensor) -> torch.Tensor:
    """`forward` with the bank weights [C, P] @ interp [P, Py, ky, Px, kx]."""
    return EXTENSION.module().forward(x, None, weights.to(x.dtype), interp.to(x.dtype), row_start, row_phase,
                                      col_start, col_phase)


def grad_input_points(grad_y: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor, row_start: torch.Tensor,
                      row_phase: torch.Tensor, col_start: torch.Tensor, col_phase: torch.Tensor, in_height: int,
                      in_width: int) -> torch.Tensor:
    """`grad_input` with the bank weights [C, P] @ interp [P, Py, ky, Px, kx]."""
    return EXTENSION.module().grad_input(grad_y, None, weights.to(grad_y.dtype), interp.to(grad_y.dtype),
                                         row_start, row_phase, col_start, col_phase, in_height, in_width)


def grad_points(grad_y: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor,
                row_start: torch.Tensor, row_phase: torch.Tensor, col_start: torch.Tensor, col_phase: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The gradients of the points' values [C, P] and interpolation [P, Py, ky, Px, kx] for grad_y and x."""
    return EXTENSION.module().grad_points(grad_y.to(x.dtype), x, weights.to(x.dtype), interp.to(x.dtype),
                                          row_start, row_phase, col_start, col_phase)
