"""Depthwise 'same' convolution with one odd-sized filter per channel, as a custom operator, and its backends.

    y[b, c, i, j] = sum_{u, v} w[c, u, v] * x[b, c, i + u - kh // 2, j + v - kw // 2]   (zero outside x)

`depthwise_conv2d(x, weight, bias)` is the operator `smpconv::depthwise_conv2d`, with first and second
derivatives and FLOP counts (torch.utils.flop_counter): torch.compile keeps it in one graph, and each pass
runs on the fastest backend for its shape (see `dispatch`), or the one forced with SMPCONV_DWCONV_BACKEND or
`use_backend`. TorchScript, FX, torch.export and ONNX export
record PyTorch's own convolution instead.

The backends: PyTorch's own convolution (oneDNN on CPUs, cuDNN or PyTorch's kernels on GPUs) in either memory
layout, FFT convolution, and this package's Triton kernels. Each computes the 'forward' pass `(x, w)` and the
'grad_weight' pass `(grad_y, x, kernel_size)` exactly (up to floating-point rounding), outputs in any memory
layout, for odd kernels no larger than (2H - 1) x (2W - 1); the input gradient is the forward pass of the output
gradient with the kernel rotated by 180 degrees, which every backend shares.

Taps farther than H - 1 rows (W - 1 columns) from the centre never meet a pixel of an H x W input, so the
kernel is cropped to its central (2H - 1) x (2W - 1) window first: the result is exactly the same.

The output's dtype is F.conv2d's under autocast, whichever backend computes it: inside an autocast region
for x's device, float32 and lower-precision inputs are computed in the autocast dtype; elsewhere x and weight
are computed in their promoted dtype. An empty input gives an empty output, as F.conv2d's does.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from . import ffts
from .dispatch import (Backend, Operator, check_float, check_odd, compute_dtype, conv_grad_weight, fft_dtype,
                       fft_sizes, first_sample, memory_format, recording_graph, save_inputs, tap_flops, transforming)

__all__ = ['depthwise_conv2d', 'useful_window', 'ENV_VAR', 'BACKENDS']

ENV_VAR = 'SMPCONV_DWCONV_BACKEND'


# ---- PyTorch's convolution, in the layout it is given ------------------------------------------------

def _torch_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    kh, kw = weight.shape[-2:]
    return F.conv2d(x, weight.unsqueeze(1), padding=(kh // 2, kw // 2), groups=weight.shape[0])


def _torch_grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    kh, kw = kernel_size
    channels = x.shape[1]
    return conv_grad_weight(grad_y, x, (channels, 1, kh, kw), (kh // 2, kw // 2), channels)[:, 0]


def _torch_in(layout: torch.memory_format) -> Backend:
    """PyTorch's convolution on its tensor arguments converted to `layout` first."""
    def converted(function: Callable) -> Callable:
        return lambda *args: function(*(a.contiguous(memory_format=layout) if torch.is_tensor(a) and a.dim() == 4
                                        else a for a in args))
    return Backend({'forward': converted(_torch_forward), 'grad_weight': converted(_torch_grad_weight)})


# ---- FFT convolution ----------------------------------------------------------------------------------

def _fft_sizes(height: int, width: int, kernel_size: Sequence[int]) -> List[int]:
    """The FFT's periods for 'same' taps: the kernel reaches kernel // 2 pixels past the border."""
    if kernel_size[0] > 2 * height - 1 or kernel_size[1] > 2 * width - 1:
        raise ValueError(f'FFT convolution takes kernels up to (2H - 1) x (2W - 1) = {2 * height - 1} x '
                         f'{2 * width - 1}, got {tuple(kernel_size)}: crop the taps that never meet a pixel')
    return fft_sizes((height, width), kernel_size, [k // 2 for k in kernel_size])


def _place_kernel(weight: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The kernel on a size[0] x size[1] period, its centre tap at (0, 0)."""
    kh, kw = weight.shape[-2:]
    placed = weight.new_zeros((weight.shape[0], *size))
    placed[:, :kh, :kw] = weight
    return placed.roll((-(kh // 2), -(kw // 2)), dims=(-2, -1))


def _spectrum(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The spectrum [B, C, P0, F1] of x [B, C, H, W] (either layout) zero-padded to `size`, in float32 or wider."""
    return ffts.spectra(x, size).unflatten(-1, (size[0], size[1] // 2 + 1))


def _fft_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    height, width = x.shape[-2:]
    size = _fft_sizes(height, width, weight.shape[-2:])
    spectrum = _spectrum(x, size)
    kernel = torch.fft.rfft2(_place_kernel(weight.to(fft_dtype(x.dtype)), size))
    # conj_physical, not a lazy conj() view: inside a compiled graph (torch 2.14) the conjugate bit of a view
    # made in a custom operator is dropped and the result silently wrong
    return ffts.cropped_signals((spectrum * kernel.conj_physical()).flatten(-2), size, (height, width), x.dtype)


def _fft_grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    """dw[c, u, v] = sum_{b, i, j} dy[b, c, i, j] x[b, c, i + u - kh//2, j + v - kw//2]: the correlation of x
    with dy, summed over the batch in the frequency domain and read at lags -k//2 .. k//2."""
    height, width = x.shape[-2:]
    kh, kw = kernel_size
    size = _fft_sizes(height, width, kernel_size)
    cross = (_spectrum(x, size) * _spectrum(grad_y, size).conj_physical()).sum(0)  # see _fft_forward
    lags = torch.fft.irfft2(cross, s=size).roll((kh // 2, kw // 2), dims=(-2, -1))
    return lags[:, :kh, :kw].to(x.dtype)


# ---- this package's Triton kernels, imported on first use (Triton takes seconds to import) -------------------

def _triton(function: str) -> Callable:
    def call(*args):
        from . import triton_kernels
        return getattr(triton_kernels, function)(*args)
    return call


BACKENDS: Dict[str, Backend] = {
    'torch': _torch_in(torch.contiguous_format),
    'torch_channels_last': _torch_in(torch.channels_last),
    'fft': Backend({'forward': _fft_forward, 'grad_weight': _fft_grad_weight}),
    'triton': Backend({'forward': _triton('forward'), 'grad_weight': _triton('grad_weight')}, _triton('available')),
}


def _screening(args: Tuple, batched: int) -> Optional[Tuple]:
    """The first sample of a batch, or an eighth of the channels of a single sample (in its layout), None when
    it is that small already."""
    sample = first_sample(args, batched)
    if sample is not None:
        return sample
    channels = args[0].shape[1] // 8
    if channels == 0:
        return None
    layout = memory_format(args[0])
    return (*(a[:, :channels].contiguous(memory_format=layout) for a in args[:batched]),
            *(a[:channels].contiguous() if torch.is_tensor(a) else a for a in args[batched:]))


DEPTHWISE = Operator('depthwise convolution', ENV_VAR, BACKENDS, _screening)


# ---- the operator -----------------------------------------------------------------------------------------

@torch.library.custom_op('smpconv::depthwise_conv2d', mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if x.numel() == 0:
        return torch.empty_like(x, memory_format=memory_format(x))
    y = DEPTHWISE.compute('forward', x, weight, signature=tuple(weight.shape[-2:]))
    # in x's layout, as PyTorch's convolution and the fake below give it, whichever backend ran
    return y.contiguous(memory_format=memory_format(x))


@_forward.register_fake
def _(x, weight):
    return torch.empty_like(x, memory_format=memory_format(x))


@torch.library.custom_op('smpconv::depthwise_conv2d_grad_weight', mutates_args=())
def _grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_h: int, kernel_w: int) -> torch.Tensor:
    size = (kernel_h, kernel_w)
    if x.numel() == 0:
        return x.new_zeros((x.shape[1], kernel_h, kernel_w))
    return DEPTHWISE.compute('grad_weight', grad_y, x, size, batched=2, signature=size).contiguous()


@_grad_weight.register_fake
def _(grad_y, x, kernel_h, kernel_w):
    return x.new_empty((x.shape[1], kernel_h, kernel_w))


def _backward(ctx, grad_y):
    x, weight = ctx.saved_tensors
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:  # the forward pass with the kernel rotated by 180 degrees
        grad_x = _forward(grad_y, weight.flip(-2, -1))
    if ctx.needs_input_grad[1]:
        grad_w = _grad_weight(grad_y, x, weight.shape[-2], weight.shape[-1])
    return grad_x, grad_w


def _grad_weight_backward(ctx, grad_grad_w):
    """Second derivatives: dw is bilinear in dy and x, and each of its partial maps is a forward pass."""
    grad_y, x = ctx.saved_tensors
    grad_grad_y = grad_x = None
    if ctx.needs_input_grad[0]:
        grad_grad_y = _forward(x, grad_grad_w)
    if ctx.needs_input_grad[1]:
        grad_x = _forward(grad_y, grad_grad_w.flip(-2, -1))
    return grad_grad_y, grad_x, None, None


_forward.register_autograd(_backward, setup_context=save_inputs)
_grad_weight.register_autograd(_grad_weight_backward, setup_context=save_inputs)


@register_flop_formula(torch.ops.smpconv.depthwise_conv2d)
def _forward_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return tap_flops(x_shape, weight_shape[-2:])


@register_flop_formula(torch.ops.smpconv.depthwise_conv2d_grad_weight)
def _grad_weight_flops(grad_y_shape, x_shape, kernel_h, kernel_w, *args, out_shape=None, **kwargs) -> int:
    return tap_flops(x_shape, (kernel_h, kernel_w))


# ---- the function -----------------------------------------------------------------------------------------

def useful_window(kernel_size: List[int], height: int, width: int) -> List[int]:
    """The part of a kernel that touches an input of height x width: at most (2H - 1) x (2W - 1)."""
    return [max(1, min(kernel_size[0], 2 * height - 1)), max(1, min(kernel_size[1], 2 * width - 1))]


def _crop(weight: torch.Tensor, window: List[int]) -> torch.Tensor:
    kh, kw = weight.shape[-2:]
    top, left = (kh - window[0]) // 2, (kw - window[1]) // 2
    return weight[:, top:top + window[0], left:left + window[1]]


def _conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """PyTorch's own convolution, which TorchScript and FX can record and transforms differentiate or batch."""
    kernel_h, kernel_w = weight.shape[-2], weight.shape[-1]
    return F.conv2d(x, weight.unsqueeze(1), bias, padding=(kernel_h // 2, kernel_w // 2), groups=weight.shape[0])


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Stride-1, zero-padded 'same' cross-correlation of each channel of x [B, C, H, W] with weight [C, kh, kw]
    (odd sizes), plus an optional bias [C]; NCHW or channels_last."""
    if torch.jit.is_scripting() or recording_graph():
        return _conv2d(x, weight, bias)
    check_float('depthwise_conv2d', x=x, weight=weight)
    if x.dim() != 4 or weight.dim() != 3 or weight.shape[0] != x.shape[1]:
        raise ValueError(f'depthwise_conv2d takes x [B, C, H, W] and weight [C, kh, kw], got {tuple(x.shape)} '
                         f'and {tuple(weight.shape)}')
    check_odd(weight.shape[-2:])
    dtype = compute_dtype(x, weight)
    x, weight = x.to(dtype), weight.to(dtype)
    weight = _crop(weight, useful_window(list(weight.shape[-2:]), x.shape[-2], x.shape[-1]))
    # under a transform PyTorch's convolution: the operator has no forward-mode or batching rules
    y = _conv2d(x, weight, None) if transforming() else _forward(x, weight)
    return y if bias is None else y + bias.to(dtype).view(1, -1, 1, 1)
