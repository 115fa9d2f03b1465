"""Triton kernels of the depthwise 'same' convolution (GPUs; also run by Triton's interpreter on CPUs).

Both passes are matrix products per channel, so fp16/bf16 inputs run on tensor cores with fp32 accumulation,
and fp32 ones on TF32 tensor cores or in IEEE fp32 as PyTorch's own convolutions would
(`torch.backends.cudnn.allow_tf32`, on by default).

Forward (and input gradient: the forward pass with the kernel rotated) as an implicit GEMM: the output rows of
all images form M (batch folded into M), output columns N, input columns K, and kernel row u is the Toeplitz
matrix T_u[j_in, j_out] = w[u, j_in - j_out + kw // 2], built tile by tile from the filter, never in memory:

    y[(b, i), :] = sum_u  x[(b, i + u - kh // 2), :] @ T_u

Only the band of K that the kernel's nonzero taps reach is visited, per channel and kernel row: an SMP kernel is
zero wherever no point reaches, so its rows' nonzero taps span less than the whole row (`tap_reach`), and the
tiles of x and of T_u that would only meet zeros are skipped, never read.

Weight gradient as a GEMM per channel and kernel row u, with the batch folded into the reduction:

    G_u = dY^T X_u,  dY[(b, i), j] = dy[b, i, j],  X_u[(b, i), j'] = x[b, i + u - kh // 2, j']
    dw[u, v] = sum_j G_u[j, j + v - kw // 2]

G_u is computed only in the tiles that meet the kernel's band |j' - j| <= kw // 2; each program sums its tile
along the diagonals into a partial of its own, and the partials are added in a fixed order: deterministic,
no atomics.

Every kernel reads its tensors through their strides (channels_last and sliced inputs without a copy), with
64-bit offsets, and is autotuned over the block sizes and warps of `FORWARD_CONFIGS` and
`GRAD_WEIGHT_CONFIGS`. `reference_*` beside each wrapper is the plain PyTorch computation the tests compare
against.
"""
import os
from typing import Optional

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only PyTorch builds come without Triton
    triton = None

__all__ = ['available', 'forward', 'grad_weight', 'tap_reach', 'reference_forward', 'reference_grad_weight',
           'FORWARD_CONFIGS', 'GRAD_WEIGHT_CONFIGS', 'GRAD_WEIGHT_BLOCK_N']

INTERPRETED = os.environ.get('TRITON_INTERPRET') == '1'


def available(x: torch.Tensor) -> bool:
    """Whether these kernels can run on `x`: Triton present, and a GPU (or Triton's interpreter)."""
    if triton is None or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    return x.is_cuda or (INTERPRETED and x.device.type == 'cpu')


if triton is not None:
    # Block sizes are multiples of 16 (tl.dot); each config compiles without register spills for 31 x 31
    # kernels in fp32 (IEEE and TF32), fp16 and bf16 on sm_80 and sm_90a (benchmarks/triton_codegen.py,
    # tests/test_triton_codegen.py). The first config is the one Triton's interpreter runs.
    FORWARD_CONFIGS = [
        triton.Config({'BLOCK_M': 32, 'BLOCK_N': 32, 'BLOCK_K': 32}, num_warps=4, num_stages=3),
        triton.Config({'BLOCK_M': 128, 'BLOCK_N': 32, 'BLOCK_K': 16}, num_warps=8, num_stages=2),
        triton.Config({'BLOCK_M': 64, 'BLOCK_N': 64, 'BLOCK_K': 16}, num_warps=8, num_stages=2),
        triton.Config({'BLOCK_M': 32, 'BLOCK_N': 64, 'BLOCK_K': 16}, num_warps=8, num_stages=2),
        triton.Config({'BLOCK_M': 32, 'BLOCK_N': 32, 'BLOCK_K': 16}, num_warps=4, num_stages=3),
    ]
    GRAD_WEIGHT_CONFIGS = [
        triton.Config({'BLOCK_R': 32}, num_warps=4, num_stages=2),
        triton.Config({'BLOCK_R': 64}, num_warps=4, num_stages=2),
        triton.Config({'BLOCK_R': 64}, num_warps=8, num_stages=2),
        triton.Config({'BLOCK_R': 128}, num_warps=8, num_stages=3),
    ]

    @triton.jit
    def _forward_kernel(
            x_ptr, w_ptr, reach_ptr, y_ptr,
            rows, height, width,
            stride_xb, stride_xc, stride_xh, stride_xw,
            stride_yb, stride_yc, stride_yh, stride_yw,
            KH: tl.constexpr, KW: tl.constexpr, PRECISION: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        channel = tl.program_id(0)
        row = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # (image, output row) pairs
        col = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)  # output columns
        image, out_row = row // height, row % height
        x_plane = image.to(tl.int64) * stride_xb + channel.to(tl.int64) * stride_xc
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for u in range(KH):
            # the input columns this block's outputs reach through row u's nonzero taps
            reach = reach_ptr + (channel * KH + u) * 2
            k_start = tl.maximum(tl.program_id(2) * BLOCK_N + tl.load(reach), 0) // BLOCK_K * BLOCK_K
            k_end = tl.minimum(tl.program_id(2) * BLOCK_N + BLOCK_N + tl.load(reach + 1), width)
            in_row = out_row + u - KH // 2
            row_ok = (row < rows) & (in_row >= 0) & (in_row < height)
            row_start = x_plane + in_row.to(tl.int64) * stride_xh
            for k in range(k_start, k_end, BLOCK_K):
                in_col = k + tl.arange(0, BLOCK_K)
                a = tl.load(x_ptr + row_start[:, None] + in_col[None, :].to(tl.int64) * stride_xw,
                            mask=row_ok[:, None] & (in_col[None, :] < width), other=0.)
                tap = in_col[:, None] - col[None, :] + KW // 2  # Toeplitz: T_u[j_in, j_out]
                toeplitz = tl.load(w_ptr + (channel * KH + u) * KW + tap,
                                   mask=(tap >= 0) & (tap < KW) & (in_col[:, None] < width), other=0.)
                acc += tl.dot(a, toeplitz, input_precision=PRECISION)
        y_start = image.to(tl.int64) * stride_yb + channel.to(tl.int64) * stride_yc + \
            out_row.to(tl.int64) * stride_yh
        mask = (row < rows)[:, None] & (col < width)[None, :]
        tl.store(y_ptr + y_start[:, None] + col[None, :].to(tl.int64) * stride_yw, acc.to(y_ptr.dtype.element_ty),
                 mask=mask)

    @triton.jit
    def _grad_weight_kernel(
            grad_y_ptr, x_ptr, partial_ptr,
            rows, height, width,
            stride_gb, stride_gc, stride_gh, stride_gw,
            stride_xb, stride_xc, stride_xh, stride_xw,
            KH: tl.constexpr, KW: tl.constexpr, PRECISION: tl.constexpr,
            BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        pid = tl.program_id(0)  # channel * KH + kernel row
        channel, u = pid // KH, pid % KH
        tile, band = tl.program_id(1), tl.program_id(2)
        half_bands: tl.constexpr = (KW // 2 + BLOCK_N - 1) // BLOCK_N
        col = tile * BLOCK_N + tl.arange(0, BLOCK_N)  # dy's columns j
        x_col = (tile + band - half_bands) * BLOCK_N + tl.arange(0, BLOCK_N)  # x's columns j' near them
        grad_plane = channel.to(tl.int64) * stride_gc
        x_plane = channel.to(tl.int64) * stride_xc
        acc = tl.zeros((BLOCK_N, BLOCK_N), dtype=tl.float32)
        for r in range(0, rows, BLOCK_R):
            row = r + tl.arange(0, BLOCK_R)  # (image, output row) pairs
            image, out_row = row // height, row % height
            in_row = out_row + u - KH // 2
            grad_ok = row < rows
            x_ok = grad_ok & (in_row >= 0) & (in_row < height)
            dy = tl.load(grad_y_ptr + (grad_plane + image.to(tl.int64) * stride_gb +
                                       out_row.to(tl.int64) * stride_gh)[:, None] +
                         col[None, :].to(tl.int64) * stride_gw,
                         mask=grad_ok[:, None] & (col < width)[None, :], other=0.)
            x = tl.load(x_ptr + (x_plane + image.to(tl.int64) * stride_xb + in_row.to(tl.int64) * stride_xh)[:, None]
                        + x_col[None, :].to(tl.int64) * stride_xw,
                        mask=x_ok[:, None] & (x_col >= 0)[None, :] & (x_col < width)[None, :], other=0.)
            acc += tl.dot(tl.trans(dy), x, input_precision=PRECISION)  # G_u[j, j'] over these rows
        # G_u[j, j'] is the kernel tap v = j' - j + kw // 2: the sums along the tile's diagonals
        tap = x_col[None, :] - col[:, None] + KW // 2
        partial = partial_ptr + ((pid.to(tl.int64) * tl.num_programs(1) + tile) * tl.num_programs(2) + band) * KW
        for v in range(KW):
            tl.store(partial + v, tl.sum(tl.sum(tl.where(tap == v, acc, 0.), axis=1), axis=0))

    _forward_tuned = triton.autotune(FORWARD_CONFIGS, key=['rows', 'height', 'width', 'KH', 'KW'])(_forward_kernel)
    _grad_weight_tuned = triton.autotune(GRAD_WEIGHT_CONFIGS, key=['rows', 'height', 'width', 'KH', 'KW'])(
        _grad_weight_kernel)
else:
    FORWARD_CONFIGS = GRAD_WEIGHT_CONFIGS = []

# G's tiles are 32 columns wide, the narrowest that keeps 32-row products on tensor cores: 3 x 32 columns of X
# for every 32 of dY cover a 31-tap band (64 would take 3 x 64); and the number of partial sums (the grid)
# must not depend on the config autotuning tries.
GRAD_WEIGHT_BLOCK_N = 32


def launch(tuned, kernel, config, grid, *args, **constants) -> None:
    """The autotuned kernel, or `config`'s (Triton's interpreter, which cannot autotune, runs the first config)."""
    if config is None and not INTERPRETED:
        tuned[grid](*args, **constants)
        return
    config = config or tuned.configs[0]
    constants = {**constants, **config.kwargs}
    kernel[grid(constants)](*args, **constants, num_warps=config.num_warps, num_stages=config.num_stages)


def _precision(x: torch.Tensor) -> str:
    """tl.dot's for fp32 inputs: TF32 tensor cores where PyTorch's convolutions would use them."""
    return 'tf32' if x.dtype != torch.float32 or torch.backends.cudnn.allow_tf32 else 'ieee'


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    # Triton's interpreter computes bfloat16 tl.dot wrongly: interpret bf16 through float32
    return tensor.float() if INTERPRETED and tensor.dtype == torch.bfloat16 else tensor


def tap_reach(weight: torch.Tensor) -> torch.Tensor:
    """int32 [C, kh, 2]: per channel and kernel row, the column offsets v - kw // 2 of its first and last nonzero
    taps, the input columns an output column reaches through them; (2^30, -2^30) for a row of zeros, a range no
    column is in. NaN and infinite taps count as nonzero: they reach the output as they would densely."""
    kw = weight.shape[-1]
    nonzero = weight != 0
    offsets = torch.arange(kw, device=weight.device) - kw // 2
    first = torch.where(nonzero, offsets, 2 ** 30).amin(-1)
    last = torch.where(nonzero, offsets, -2 ** 30).amax(-1)
    return torch.stack((first, last), -1).to(torch.int32)


def forward(x: torch.Tensor, weight: torch.Tensor, config: Optional['triton.Config'] = None) -> torch.Tensor:
    """y = depthwise 'same' correlation of x [B, C, H, W] (any strides) with weight [C, kh, kw] (odd), in x's
    dtype and memory format; autotuned unless a `config` (one of FORWARD_CONFIGS) is given."""
    dtype = x.dtype
    x, weight = _upcast(x), _upcast(weight.to(x.dtype)).contiguous()
    batch, channels, height, width = x.shape
    kh, kw = weight.shape[-2:]
    y = torch.empty_like(x)  # x's strides where x is dense (channels_last too), else contiguous
    rows = batch * height

    def grid(meta):
        return channels, triton.cdiv(rows, meta['BLOCK_M']), triton.cdiv(width, meta['BLOCK_N'])
    launch(_forward_tuned, _forward_kernel, config, grid, x, weight, tap_reach(weight), y, rows, height, width,
            *x.stride(), *y.stride(), KH=kh, KW=kw, PRECISION=_precision(x))
    return y.to(dtype)


def grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size,
                config: Optional['triton.Config'] = None) -> torch.Tensor:
    """dL/dw [C, kh, kw] from dL/dy and x, both [B, C, H, W] (any strides); accumulated in float32 in a fixed
    order, returned in x's dtype; autotuned unless a `config` (one of GRAD_WEIGHT_CONFIGS) is given."""
    dtype = x.dtype
    grad_y, x = _upcast(grad_y.to(x.dtype)), _upcast(x)
    batch, channels, height, width = x.shape
    kh, kw = kernel_size
    tiles = triton.cdiv(width, GRAD_WEIGHT_BLOCK_N)
    bands = 2 * triton.cdiv(kw // 2, GRAD_WEIGHT_BLOCK_N) + 1
    # every program writes the KW partial sums of its tile: all of them, whichever config autotuning tries
    partials = torch.empty((channels * kh, tiles, bands, kw), device=x.device, dtype=torch.float32)
    launch(_grad_weight_tuned, _grad_weight_kernel, config, lambda meta: (channels * kh, tiles, bands),
            grad_y, x, partials, batch * height, height, width, *grad_y.stride(), *x.stride(), KH=kh, KW=kw,
            PRECISION=_precision(x), BLOCK_N=GRAD_WEIGHT_BLOCK_N)
    return partials.sum((1, 2)).view(channels, kh, kw).to(dtype)


def reference_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    kh, kw = weight.shape[-2:]
    return F.conv2d(x, weight.unsqueeze(1), padding=(kh // 2, kw // 2), groups=weight.shape[0])


def reference_grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size) -> torch.Tensor:
    return torch.func.vjp(lambda w: reference_forward(x, w), x.new_zeros((x.shape[1], *kernel_size)))[1](grad_y)[0]
