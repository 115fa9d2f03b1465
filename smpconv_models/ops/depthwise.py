"""Depthwise 'same' convolution with one odd-sized filter per channel, as a custom operator.

`depthwise_conv2d(x, weight, bias)` is the operator `smpconv::depthwise_conv2d`, with first and second
derivatives and FLOP counts (torch.utils.flop_counter): torch.compile keeps it in one graph, and each pass
runs on the fastest backend for its shape (see `dispatch`). TorchScript, FX, torch.export and ONNX export
record PyTorch's own convolution instead.

Taps farther than H - 1 rows (W - 1 columns) from the centre never meet a pixel of an H x W input, so the
kernel is cropped to its central (2H - 1) x (2W - 1) window first: the result is exactly the same.

The output's dtype is F.conv2d's under autocast, whichever backend computes it: inside an autocast region
for x's device, float32 and lower-precision inputs are computed in the autocast dtype; elsewhere x and weight
are computed in their promoted dtype. An empty input gives an empty output, as F.conv2d's does.
"""
from functools import partial
from typing import Callable, List, Optional

import torch
import torch.fx
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from .backends import BACKENDS, flops, memory_format
from .dispatch import choose

__all__ = ['depthwise_conv2d', 'compute_dtype', 'recording_graph', 'useful_window']


def useful_window(kernel_size: List[int], height: int, width: int) -> List[int]:
    """The part of a kernel that touches an input of height x width: at most (2H - 1) x (2W - 1)."""
    return [max(1, min(kernel_size[0], 2 * height - 1)), max(1, min(kernel_size[1], 2 * width - 1))]


def _crop(weight: torch.Tensor, window: List[int]) -> torch.Tensor:
    kh, kw = weight.shape[-2:]
    top, left = (kh - window[0]) // 2, (kw - window[1]) // 2
    return weight[:, top:top + window[0], left:left + window[1]]


def _screening(tensors: List[torch.Tensor]) -> Optional[List[torch.Tensor]]:
    """A smaller problem of a pass over `tensors` (x, and grad_y or the weight) with its cost in proportion: the
    first sample of a batch, or an eighth of the channels of a single sample (in its layout), None when it is
    that small already."""
    x = tensors[0]
    if x.shape[0] > 1:
        return [t[:1] if t.dim() == 4 else t for t in tensors]
    channels = x.shape[1] // 8
    if channels == 0:
        return None
    layout = memory_format(x)
    return [t[:, :channels].contiguous(memory_format=layout) if t.dim() == 4 else t[:channels].contiguous()
            for t in tensors]


def _timed_call(pass_: Callable, tensors: List[torch.Tensor], *args) -> Callable[[str, bool], Optional[Callable]]:
    """`run` of the dispatcher's `choose`: a call of `pass_` of a backend on `tensors`, or on a screening problem."""
    screening = _screening(tensors)

    def run(name: str, screen: bool) -> Optional[Callable]:
        if screen and screening is None:
            return None
        return partial(pass_(BACKENDS[name]), *(screening if screen else tensors), *args)
    return run


@torch.library.custom_op('smpconv::depthwise_conv2d', mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if x.numel() == 0:
        return torch.empty_like(x, memory_format=memory_format(x))
    name = choose('forward', x, weight.shape[-2:], _timed_call(lambda b: b.forward, [x, weight]))
    # in x's layout, as PyTorch's convolution and the fake below give it, whichever backend ran
    return BACKENDS[name].forward(x, weight).contiguous(memory_format=memory_format(x))


@_forward.register_fake
def _(x, weight):
    return torch.empty_like(x, memory_format=memory_format(x))


@torch.library.custom_op('smpconv::depthwise_conv2d_grad_weight', mutates_args=())
def _grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_h: int, kernel_w: int) -> torch.Tensor:
    size = (kernel_h, kernel_w)
    if x.numel() == 0:
        return x.new_zeros((x.shape[1], kernel_h, kernel_w))
    name = choose('grad_weight', x, size, _timed_call(lambda b: b.grad_weight, [grad_y, x], size))
    return BACKENDS[name].grad_weight(grad_y, x, size).contiguous()


@_grad_weight.register_fake
def _(grad_y, x, kernel_h, kernel_w):
    return x.new_empty((x.shape[1], kernel_h, kernel_w))


def _save_tensors(ctx, inputs, output):
    ctx.save_for_backward(*(t for t in inputs if torch.is_tensor(t)))


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


_forward.register_autograd(_backward, setup_context=_save_tensors)
_grad_weight.register_autograd(_grad_weight_backward, setup_context=_save_tensors)


@register_flop_formula(torch.ops.smpconv.depthwise_conv2d)
def _forward_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return flops(x_shape, weight_shape[-2:])


@register_flop_formula(torch.ops.smpconv.depthwise_conv2d_grad_weight)
def _grad_weight_flops(grad_y_shape, x_shape, kernel_h, kernel_w, *args, out_shape=None, **kwargs) -> int:
    return flops(x_shape, (kernel_h, kernel_w))


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    for name, tensor in (('x', x), ('weight', weight)):
        if not tensor.is_floating_point():
            raise TypeError(f'depthwise_conv2d takes floating-point tensors (float16, bfloat16, float32, float64), '
                            f'got {name} of {tensor.dtype}')
    if x.dim() != 4 or weight.dim() != 3 or weight.shape[0] != x.shape[1]:
        raise ValueError(f'depthwise_conv2d takes x [B, C, H, W] and weight [C, kh, kw], got {tuple(x.shape)} '
                         f'and {tuple(weight.shape)}')
    if weight.shape[-2] % 2 == 0 or weight.shape[-1] % 2 == 0:
        raise ValueError(f"'same' depthwise convolution needs odd kernel sizes, got {tuple(weight.shape[-2:])}")


def recording_graph() -> bool:
    """Whether FX, torch.export or the ONNX exporter is recording the model: it gets PyTorch's own convolution,
    so that what they save runs anywhere, without this package."""
    return (torch.fx._symbolic_trace.is_fx_symbolic_tracing() or torch.compiler.is_exporting()
            or torch.onnx.is_in_onnx_export())


def _conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """PyTorch's own convolution, which TorchScript and FX can record."""
    kernel_h, kernel_w = weight.shape[-2], weight.shape[-1]
    return F.conv2d(x, weight.unsqueeze(1), bias, padding=(kernel_h // 2, kernel_w // 2), groups=weight.shape[0])


def compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype a convolution of x with weight computes and returns in, as F.conv2d's: the autocast dtype for
    float32 and lower-precision inputs inside an autocast region of x's device, else x's and weight's promoted."""
    dtype = torch.promote_types(x.dtype, weight.dtype)
    device_type = x.device.type  # 'meta' has no autocast
    if dtype != torch.float64 and torch.amp.is_autocast_available(device_type) and \
            torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Stride-1, zero-padded 'same' cross-correlation of each channel of x [B, C, H, W] with weight [C, kh, kw]
    (odd sizes), plus an optional bias [C]; NCHW or channels_last."""
    if torch.jit.is_scripting():  # apart from recording_graph(), which TorchScript cannot compile
        return _conv2d(x, weight, bias)
    if recording_graph():
        return _conv2d(x, weight, bias)
    _check(x, weight)
    dtype = compute_dtype(x, weight)
    x, weight = x.to(dtype), weight.to(dtype)
    y = _forward(x, _crop(weight, useful_window(list(weight.shape[-2:]), x.shape[-2], x.shape[-1])))
    return y if bias is None else y + bias.to(dtype).view(1, -1, 1, 1)
