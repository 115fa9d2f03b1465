"""Triton kernels of the depthwise resizing convolution (GPUs; also run by Triton's interpreter on CPUs): the
'triton' backend of the resizing convolution's operator, whose contract `resize.reference_taps` states plainly:

    y[b, c, i, j] = sum_{m < ky, n < kx} bank[c, row_phase[i], m, col_phase[j], n]
                                         * x[b, c, row_start[i] + m, col_start[j] + n]      (x = 0 outside)

At an arbitrary scale every output has a kernel of its own (the bank holds ky x kx values per output pixel) and
the SMP kernel is not separable, so no pass is a matrix product with reuse to put on tensor cores: each kernel is
plain FMA over tiles, accumulated in float32 (float64 for float64 inputs). What is worth saving is bank traffic,
one value per multiply-add: the forward and input-gradient tiles hold a block of images of one channel, which
share each bank value loaded.

- forward: a program per channel, block of images and tile of outputs, looping over the ky x kx taps; the taps
  gather x at the tile's row and column starts (masked loads are the zero padding) and the bank at its phases.
- grad_input, in gather form: a program per channel, block of images and tile of input pixels, looping over the
  outputs whose taps reach them. Starts are non-decreasing, so those outputs are a contiguous range per input row
  and per input column, found in the wrapper by `torch.searchsorted`. Every input gradient is summed in a fixed
  order by one program: deterministic, no atomics.
- grad_bank: a program per channel and tile of outputs, the batch summed inside it; per tap, the tile's sums are
  added with `tl.atomic_add` into a float32 (float64) result at the outputs' phases. At an arbitrary scale every
  output has a phase of its own, so each bank entry receives exactly one addition: deterministic. Outputs that
  share a phase (rational scales, where the polyphase path of `resize.py` is the natural backend) add in an
  unspecified order: results vary run to run by float32 rounding, as with PyTorch's own atomic reductions, and
  contend (at s = 1/2 all outputs of a channel add into its ky x kx entries); the dispatcher's timing decides.

Tensors are read through their strides (channels_last without a copy) with 64-bit offsets; tap counts are
runtime arguments, so a new scale compiles nothing new. Block sizes are autotuned over `RESIZE_CONFIGS` (forward,
grad_input) and `GRAD_BANK_CONFIGS`; Triton's interpreter runs each list's first config.
"""
from typing import Optional, Sequence, Tuple

import torch

from .dispatch import memory_format
from .triton_kernels import INTERPRETED, launch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only PyTorch builds come without Triton
    triton = None

__all__ = ['available', 'forward', 'grad_input', 'grad_bank']

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def available(x: torch.Tensor) -> bool:
    """Whether these kernels run on `x`: Triton present, a supported dtype, and a GPU (or Triton's interpreter)."""
    if triton is None or x.dtype not in _DTYPES:
        return False
    return x.is_cuda or (INTERPRETED and x.device.type == 'cpu')


if triton is not None:
    # (images, output or input rows, columns) per tile. A block of one image serves batch-1 inference; larger
    # blocks share each bank value among more images. Every config compiles without spills on sm_80 and sm_90a
    # (benchmarks/triton_codegen.py, tests/test_triton_codegen.py).
    RESIZE_CONFIGS = [
        triton.Config({'BLOCK_B': 4, 'BLOCK_I': 8, 'BLOCK_J': 32}, num_warps=4),
        triton.Config({'BLOCK_B': 1, 'BLOCK_I': 32, 'BLOCK_J': 32}, num_warps=8),
        triton.Config({'BLOCK_B': 8, 'BLOCK_I': 8, 'BLOCK_J': 32}, num_warps=8),
        triton.Config({'BLOCK_B': 2, 'BLOCK_I': 16, 'BLOCK_J': 64}, num_warps=8),
    ]
    # the batch is a loop inside each program: BLOCK_B is the width of its steps
    GRAD_BANK_CONFIGS = [
        triton.Config({'BLOCK_B': 4, 'BLOCK_I': 8, 'BLOCK_J': 32}, num_warps=4),
        triton.Config({'BLOCK_B': 2, 'BLOCK_I': 16, 'BLOCK_J': 32}, num_warps=8),
        triton.Config({'BLOCK_B': 8, 'BLOCK_I': 8, 'BLOCK_J': 32}, num_warps=8),
    ]

    @triton.jit
    def _image_tile(batch, BLOCK_B: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
        """This program's channel, block of images, and tile of rows and columns: the grid's first axis runs over
        channels x blocks of images."""
        batch_blocks = tl.cdiv(batch, BLOCK_B)
        channel = (tl.program_id(0) // batch_blocks).to(tl.int64)
        image = (tl.program_id(0) % batch_blocks) * BLOCK_B + tl.arange(0, BLOCK_B)
        rows = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
        return channel, image, rows, tl.program_id(2) * BLOCK_J + tl.arange(0, BLOCK_J)

    @triton.jit
    def _taps(start_ptr, phase_ptr, output, valid, stride_phase):
        """The first input each output's taps read, and its phase's offset in the bank."""
        start = tl.load(start_ptr + output, mask=valid, other=0)
        return start, tl.load(phase_ptr + output, mask=valid, other=0).to(tl.int64) * stride_phase

    @triton.jit
    def _forward_kernel(
            x_ptr, bank_ptr, y_ptr, row_start_ptr, row_phase_ptr, col_start_ptr, col_phase_ptr,
            batch, height, width, out_height, out_width, row_taps, col_taps,
            stride_xb, stride_xc, stride_xh, stride_xw,
            stride_kc, stride_kp, stride_km, stride_kq, stride_kn,
            stride_yb, stride_yc, stride_yh, stride_yw,
            ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr,
    ):
        channel, image, i, j = _image_tile(batch, BLOCK_B, BLOCK_I, BLOCK_J)
        image_ok, i_ok, j_ok = image < batch, i < out_height, j < out_width
        top, row_kernel = _taps(row_start_ptr, row_phase_ptr, i, i_ok, stride_kp)
        left, col_kernel = _taps(col_start_ptr, col_phase_ptr, j, j_ok, stride_kq)
        kernels = bank_ptr + channel * stride_kc + row_kernel[:, None] + col_kernel[None, :]
        windows = x_ptr + (image.to(tl.int64) * stride_xb + channel * stride_xc)[:, None, None] + \
            (top * stride_xh)[None, :, None] + (left * stride_xw)[None, None, :]
        acc = tl.zeros((BLOCK_B, BLOCK_I, BLOCK_J), dtype=ACC)
        for m in range(row_taps):
            row_in = i_ok & (top + m >= 0) & (top + m < height)
            for n in range(col_taps):
                col_in = j_ok & (left + n >= 0) & (left + n < width)
                w = tl.load(kernels + m * stride_km + n * stride_kn, mask=i_ok[:, None] & j_ok[None, :], other=0.)
                v = tl.load(windows + m * stride_xh + n * stride_xw,
                            mask=image_ok[:, None, None] & (row_in[:, None] & col_in[None, :])[None, :, :], other=0.)
                acc += v.to(ACC) * w.to(ACC)[None, :, :]
        y = y_ptr + (image.to(tl.int64) * stride_yb + channel * stride_yc)[:, None, None] + \
            (i.to(tl.int64) * stride_yh)[None, :, None] + (j.to(tl.int64) * stride_yw)[None, None, :]
        tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=image_ok[:, None, None] & (i_ok[:, None] & j_ok[None, :]))

    @triton.jit
    def _grad_input_kernel(
            grad_y_ptr, bank_ptr, grad_x_ptr, row_start_ptr, row_phase_ptr, col_start_ptr, col_phase_ptr,
            row_first_ptr, row_count_ptr, col_first_ptr, col_count_ptr,
            batch, height, width,
            stride_gb, stride_gc, stride_gh, stride_gw,
            stride_kc, stride_kp, stride_km, stride_kq, stride_kn,
            stride_xb, stride_xc, stride_xh, stride_xw,
            ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr,
    ):
        channel, image, u, v = _image_tile(batch, BLOCK_B, BLOCK_I, BLOCK_J)  # a tile of input rows and columns
        image_ok, u_ok, v_ok = image < batch, u < height, v < width
        # outputs row_first[u] + a, a < row_count[u], have input row u among their taps (columns likewise)
        row_first = tl.load(row_first_ptr + u, mask=u_ok, other=0)
        row_count = tl.load(row_count_ptr + u, mask=u_ok, other=0)
        col_first = tl.load(col_first_ptr + v, mask=v_ok, other=0)
        col_count = tl.load(col_count_ptr + v, mask=v_ok, other=0)
        row_steps, col_steps = tl.max(row_count, axis=0), tl.max(col_count, axis=0)
        planes = grad_y_ptr + (image.to(tl.int64) * stride_gb + channel * stride_gc)[:, None, None]
        acc = tl.zeros((BLOCK_B, BLOCK_I, BLOCK_J), dtype=ACC)
        for a in range(row_steps):
            i_ok = a < row_count
            i = row_first + a
            top, row_kernel = _taps(row_start_ptr, row_phase_ptr, i, i_ok, stride_kp)
            row_kernel += channel * stride_kc + (u - top) * stride_km  # tap u - top of output row i
            rows = planes + (i.to(tl.int64) * stride_gh)[None, :, None]
            for b in range(col_steps):
                j_ok = b < col_count
                j = col_first + b
                left, col_kernel = _taps(col_start_ptr, col_phase_ptr, j, j_ok, stride_kq)
                col_kernel += (v - left) * stride_kn
                ij_ok = i_ok[:, None] & j_ok[None, :]
                w = tl.load(bank_ptr + row_kernel[:, None] + col_kernel[None, :], mask=ij_ok, other=0.)
                g = tl.load(rows + (j.to(tl.int64) * stride_gw)[None, None, :],
                            mask=image_ok[:, None, None] & ij_ok[None, :, :], other=0.)
                acc += g.to(ACC) * w.to(ACC)[None, :, :]
        grad_x = grad_x_ptr + (image.to(tl.int64) * stride_xb + channel * stride_xc)[:, None, None] + \
            (u.to(tl.int64) * stride_xh)[None, :, None] + (v.to(tl.int64) * stride_xw)[None, None, :]
        tl.store(grad_x, acc.to(grad_x_ptr.dtype.element_ty),
                 mask=image_ok[:, None, None] & (u_ok[:, None] & v_ok[None, :]))

    @triton.jit
    def _grad_bank_kernel(
            grad_y_ptr, x_ptr, grad_bank_ptr, row_start_ptr, row_phase_ptr, col_start_ptr, col_phase_ptr,
            batch, height, width, out_height, out_width, row_taps, col_taps,
            stride_gb, stride_gc, stride_gh, stride_gw,
            stride_xb, stride_xc, stride_xh, stride_xw,
            stride_kc, stride_kp, stride_km, stride_kq, stride_kn,
            ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr,
    ):
        channel = tl.program_id(0).to(tl.int64)
        i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
        j = tl.program_id(2) * BLOCK_J + tl.arange(0, BLOCK_J)
        i_ok, j_ok = i < out_height, j < out_width
        top, row_kernel = _taps(row_start_ptr, row_phase_ptr, i, i_ok, stride_kp)
        left, col_kernel = _taps(col_start_ptr, col_phase_ptr, j, j_ok, stride_kq)
        kernels = grad_bank_ptr + channel * stride_kc + row_kernel[:, None] + col_kernel[None, :]
        images = tl.arange(0, BLOCK_B)
        grads = grad_y_ptr + channel * stride_gc + (i.to(tl.int64) * stride_gh)[None, :, None] + \
            (j.to(tl.int64) * stride_gw)[None, None, :]
        windows = x_ptr + channel * stride_xc + (top * stride_xh)[None, :, None] + (left * stride_xw)[None, None, :]
        for m in range(row_taps):
            row_in = i_ok & (top + m >= 0) & (top + m < height)
            for n in range(col_taps):
                col_in = j_ok & (left + n >= 0) & (left + n < width)
                acc = tl.zeros((BLOCK_B, BLOCK_I, BLOCK_J), dtype=ACC)
                for first in range(0, batch, BLOCK_B):
                    image = first + images
                    image_ok = (image < batch)[:, None, None]
                    offset = (image.to(tl.int64) * stride_gb)[:, None, None]
                    g = tl.load(grads + offset, mask=image_ok & (i_ok[:, None] & j_ok[None, :])[None, :, :],
                                other=0.)
                    offset = (image.to(tl.int64) * stride_xb)[:, None, None] + m * stride_xh + n * stride_xw
                    v = tl.load(windows + offset, mask=image_ok & (row_in[:, None] & col_in[None, :])[None, :, :],
                                other=0.)
                    acc += g.to(ACC) * v.to(ACC)
                tl.atomic_add(kernels + m * stride_km + n * stride_kn, tl.sum(acc, axis=0),
                              mask=i_ok[:, None] & j_ok[None, :], sem='relaxed')

    _KEY = ['batch', 'height', 'width', 'row_taps', 'col_taps']
    _forward_tuned = triton.autotune(RESIZE_CONFIGS, key=_KEY + ['out_height', 'out_width'])(_forward_kernel)
    _grad_input_tuned = triton.autotune(RESIZE_CONFIGS, key=['batch', 'height', 'width'])(_grad_input_kernel)
    # autotuning runs the kernel once per config: each run must add into zeros
    _grad_bank_tuned = triton.autotune(GRAD_BANK_CONFIGS, key=_KEY + ['out_height', 'out_width'],
                                       reset_to_zero=['grad_bank_ptr'])(_grad_bank_kernel)
else:
    RESIZE_CONFIGS = GRAD_BANK_CONFIGS = []


def _accumulator(dtype: torch.dtype) -> 'tl.dtype':
    return tl.float64 if dtype == torch.float64 else tl.float32


def _reaching_outputs(start: torch.Tensor, taps: int, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per input of an axis of `size`, the first output whose `taps` inputs from `start` on include it, and how
    many consecutive outputs do (starts are non-decreasing)."""
    inputs = torch.arange(size, device=start.device)
    first = torch.searchsorted(start + (taps - 1), inputs, out_int32=True)
    end = torch.searchsorted(start, inputs, right=True, out_int32=True)
    return first, (end - first).clamp_min(0)


def _grid(channels_blocks, rows: int, cols: int):
    """The launch grid of a tiling of `rows` x `cols` with `channels_blocks(meta)` programs along the first axis."""
    return lambda meta: (channels_blocks(meta), triton.cdiv(rows, meta['BLOCK_I']), triton.cdiv(cols, meta['BLOCK_J']))


def forward(x: torch.Tensor, bank: torch.Tensor, row_start: torch.Tensor, row_phase: torch.Tensor,
            col_start: torch.Tensor, col_phase: torch.Tensor, *, config: Optional['triton.Config'] = None
            ) -> torch.Tensor:
    """y [B, C, H', W'] in x's dtype and memory format; autotuned unless a `config` of RESIZE_CONFIGS is given."""
    batch, channels, height, width = x.shape
    out_height, out_width = row_start.numel(), col_start.numel()
    y = torch.empty((batch, channels, out_height, out_width), device=x.device, dtype=x.dtype,
                    memory_format=memory_format(x))
    if y.numel():
        grid = _grid(lambda meta: channels * triton.cdiv(batch, meta['BLOCK_B']), out_height, out_width)
        launch(_forward_tuned, _forward_kernel, config, grid,
                x, bank, y, row_start.contiguous(), row_phase.contiguous(), col_start.contiguous(),
                col_phase.contiguous(), batch, height, width, out_height, out_width, bank.shape[2], bank.shape[4],
                *x.stride(), *bank.stride(), *y.stride(), ACC=_accumulator(x.dtype))
    return y


def grad_input(grad_y: torch.Tensor, bank: torch.Tensor, row_start: torch.Tensor, row_phase: torch.Tensor,
               col_start: torch.Tensor, col_phase: torch.Tensor, in_height: int, in_width: int, *,
               config: Optional['triton.Config'] = None) -> torch.Tensor:
    """grad_x [B, C, in_height, in_width] in grad_y's dtype and memory format, the forward's adjoint in x;
    autotuned unless a `config` of RESIZE_CONFIGS is given."""
    batch, channels = grad_y.shape[:2]
    grad_x = torch.empty((batch, channels, in_height, in_width), device=grad_y.device, dtype=grad_y.dtype,
                         memory_format=memory_format(grad_y))
    if grad_x.numel():
        row_start, col_start = row_start.contiguous(), col_start.contiguous()
        grid = _grid(lambda meta: channels * triton.cdiv(batch, meta['BLOCK_B']), in_height, in_width)
        launch(_grad_input_tuned, _grad_input_kernel, config, grid,
                grad_y, bank, grad_x, row_start, row_phase.contiguous(), col_start, col_phase.contiguous(),
                *_reaching_outputs(row_start, bank.shape[2], in_height),
                *_reaching_outputs(col_start, bank.shape[4], in_width), batch, in_height, in_width,
                *grad_y.stride(), *bank.stride(), *grad_x.stride(), ACC=_accumulator(grad_y.dtype))
    return grad_x


def grad_bank(grad_y: torch.Tensor, x: torch.Tensor, row_start: torch.Tensor, row_phase: torch.Tensor,
              col_start: torch.Tensor, col_phase: torch.Tensor, bank_shape: Sequence[int], *,
              config: Optional['triton.Config'] = None) -> torch.Tensor:
    """grad_bank of `bank_shape` [C, Py, ky, Px, kx] in x's dtype, the forward's adjoint in the bank, accumulated
    in float32 (float64); autotuned unless a `config` of GRAD_BANK_CONFIGS is given."""
    batch, channels, height, width = x.shape
    out_height, out_width = grad_y.shape[2:]
    grad = torch.zeros(tuple(bank_shape), device=x.device,
                       dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    if grad_y.numel():
        grid = _grid(lambda meta: channels, out_height, out_width)
        launch(_grad_bank_tuned, _grad_bank_kernel, config, grid,
                grad_y, x, grad, row_start.contiguous(), row_phase.contiguous(), col_start.contiguous(),
                col_phase.contiguous(), batch, height, width, out_height, out_width, grad.shape[2], grad.shape[4],
                *grad_y.stride(), *x.stride(), *grad.stride(), ACC=_accumulator(x.dtype))
    return grad.to(x.dtype)
