"""Triton kernels of the depthwise 'same' convolution (GPUs; also run by Triton's interpreter on CPUs).

Forward (and input gradient: the forward pass with the kernel rotated) as an implicit GEMM per channel:
the output rows of all images form M (batch folded into M), output columns N, input columns K, and the
kernel row u is the Toeplitz matrix T_u[j_in, j_out] = w[u, j_in - j_out + kw // 2], built tile by tile
from the filter, never in memory:

    y[(b, i), :] = sum_u  x[(b, i + u - kh // 2), :] @ T_u

so fp16/bf16 inputs run on tensor cores with fp32 accumulation, and only the band of K that the kernel
reaches is visited. The weight gradient is a direct reduction over batch and pixels, one program per
(channel, kernel row, block of kernel columns), in a fixed order: deterministic, no atomics.

`reference` beside each wrapper is the plain PyTorch computation the tests compare against.
"""
import os

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only PyTorch builds come without Triton
    triton = None

__all__ = ['available', 'forward', 'grad_weight', 'reference_forward', 'reference_grad_weight']

INTERPRETED = os.environ.get('TRITON_INTERPRET') == '1'

# explicit block sizes: tl.dot needs multiples of 16
BLOCK_M, BLOCK_N, BLOCK_K = 64, 32, 32
BLOCK_ROWS, BLOCK_COLS, BLOCK_TAPS = 16, 32, 16


def available(x: torch.Tensor) -> bool:
    """Whether these kernels can run on `x`: Triton present, and a GPU (or Triton's interpreter)."""
    if triton is None or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    return x.is_cuda or (INTERPRETED and x.device.type == 'cpu')


if triton is not None:
    @triton.jit
    def _forward_kernel(
            x_ptr, w_ptr, y_ptr,
            rows, height, width, channels,
            KH: tl.constexpr, KW: tl.constexpr, IEEE: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        channel = tl.program_id(0)
        row = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # (image, output row) pairs
        col = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)  # output columns
        image, out_row = row // height, row % height
        plane = (image * channels + channel) * height * width  # start of x[image, channel]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        # the input columns any output column of this block reaches
        k_start = tl.maximum(tl.program_id(2) * BLOCK_N - KW // 2, 0) // BLOCK_K * BLOCK_K
        k_end = tl.minimum(tl.program_id(2) * BLOCK_N + BLOCK_N + KW // 2, width)
        for u in range(KH):
            in_row = out_row + u - KH // 2
            row_ok = (row < rows) & (in_row >= 0) & (in_row < height)
            for k in range(k_start, k_end, BLOCK_K):
                in_col = k + tl.arange(0, BLOCK_K)
                a = tl.load(x_ptr + plane[:, None] + in_row[:, None] * width + in_col[None, :],
                            mask=row_ok[:, None] & (in_col[None, :] < width), other=0.)
                tap = in_col[:, None] - col[None, :] + KW // 2  # Toeplitz: T_u[j_in, j_out]
                toeplitz = tl.load(w_ptr + (channel * KH + u) * KW + tap,
                                   mask=(tap >= 0) & (tap < KW) & (in_col[:, None] < width), other=0.)
                if IEEE:
                    acc += tl.dot(a, toeplitz, input_precision='ieee')
                else:
                    acc += tl.dot(a, toeplitz)
        mask = (row < rows)[:, None] & (col < width)[None, :]
        tl.store(y_ptr + plane[:, None] + out_row[:, None] * width + col[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=mask)

    @triton.jit
    def _grad_weight_kernel(
            grad_y_ptr, x_ptr, grad_w_ptr,
            rows, height, width, channels,
            KH: tl.constexpr, KW: tl.constexpr,
            BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr, BLOCK_TAPS: tl.constexpr,
    ):
        channel = tl.program_id(0)
        u = tl.program_id(1)
        v = tl.program_id(2) * BLOCK_TAPS + tl.arange(0, BLOCK_TAPS)  # kernel columns of this program
        acc = tl.zeros((BLOCK_TAPS,), dtype=tl.float32)
        for r in range(0, rows, BLOCK_ROWS):
            row = r + tl.arange(0, BLOCK_ROWS)
            image, out_row = row // height, row % height
            plane = (image * channels + channel) * height * width
            in_row = out_row + u - KH // 2
            row_ok = (row < rows) & (in_row >= 0) & (in_row < height)
            for c in range(0, width, BLOCK_COLS):
                col = c + tl.arange(0, BLOCK_COLS)
                dy = tl.load(grad_y_ptr + plane[:, None] + out_row[:, None] * width + col[None, :],
                             mask=(row < rows)[:, None] & (col < width)[None, :], other=0.).to(tl.float32)
                in_col = col[None, :, None] + v[None, None, :] - KW // 2  # [rows, cols, taps]
                x = tl.load(x_ptr + plane[:, None, None] + in_row[:, None, None] * width + in_col,
                            mask=row_ok[:, None, None] & (in_col >= 0) & (in_col < width) & (v < KW)[None, None, :],
                            other=0.).to(tl.float32)
                acc += tl.sum(tl.sum(dy[:, :, None] * x, axis=0), axis=0)
        tl.store(grad_w_ptr + (channel * KH + u) * KW + v, acc, mask=v < KW)


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    # Triton's interpreter computes bfloat16 tl.dot wrongly: interpret bf16 through float32
    return tensor.float() if INTERPRETED and tensor.dtype == torch.bfloat16 else tensor


def forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y = depthwise 'same' correlation of x [B, C, H, W] with weight [C, kh, kw] (odd), in x's dtype."""
    dtype = x.dtype
    x, weight = _upcast(x.contiguous()), _upcast(weight.to(x.dtype).contiguous())
    batch, channels, height, width = x.shape
    kh, kw = weight.shape[-2:]
    y = torch.empty_like(x)
    grid = (channels, triton.cdiv(batch * height, BLOCK_M), triton.cdiv(width, BLOCK_N))
    _forward_kernel[grid](x, weight, y, batch * height, height, width, channels, KH=kh, KW=kw,
                          IEEE=x.dtype == torch.float32, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    return y.to(dtype)


def grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size) -> torch.Tensor:
    """dL/dw [C, kh, kw] from dL/dy and x, both [B, C, H, W]; accumulated in float32, returned in x's dtype."""
    batch, channels, height, width = x.shape
    kh, kw = kernel_size
    grad_w = torch.empty((channels, kh, kw), device=x.device, dtype=torch.float32)
    grid = (channels, kh, triton.cdiv(kw, BLOCK_TAPS))
    _grad_weight_kernel[grid](grad_y.contiguous(), x.contiguous(), grad_w, batch * height, height, width, channels,
                              KH=kh, KW=kw, BLOCK_ROWS=BLOCK_ROWS, BLOCK_COLS=BLOCK_COLS, BLOCK_TAPS=BLOCK_TAPS)
    return grad_w.to(x.dtype)


def reference_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    kh, kw = weight.shape[-2:]
    return F.conv2d(x, weight.unsqueeze(1), padding=(kh // 2, kw // 2), groups=weight.shape[0])


def reference_grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size) -> torch.Tensor:
    return torch.func.vjp(lambda w: reference_forward(x, w), x.new_zeros((x.shape[1], *kernel_size)))[1](grad_y)[0]
