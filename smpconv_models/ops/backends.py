"""The ways to compute a depthwise 'same' convolution and its gradients: PyTorch's own (oneDNN on CPUs,
cuDNN or PyTorch's kernels on GPUs) in either memory layout, FFT convolution, and this package's Triton
kernels. Every backend computes the same thing exactly (up to floating-point rounding):

    y[b, c, i, j] = sum_{u, v} w[c, u, v] * x[b, c, i + u - kh // 2, j + v - kw // 2]   (zero outside x)

for odd kernels no larger than (2H - 1) x (2W - 1), the taps that can meet a pixel (`depthwise_conv2d` crops
larger ones). Each provides `forward(x, w)` and `grad_weight(grad_y, x, kernel_size)`, outputs in any memory
layout; the input gradient is the forward pass of the output gradient with the kernel rotated by 180
degrees, which every backend shares.
"""
import math
from typing import Callable, Dict, NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['Backend', 'BACKENDS', 'memory_format', 'flops']


class Backend(NamedTuple):
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    grad_weight: Callable[[torch.Tensor, torch.Tensor, Sequence[int]], torch.Tensor]
    supports: Callable[[torch.Tensor], bool]  # can it run on this input (device, dtype)?


# ---- PyTorch's convolution, in the layout it is given ------------------------------------------------

def _torch_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    kh, kw = weight.shape[-2:]
    return F.conv2d(x, weight.unsqueeze(1), padding=(kh // 2, kw // 2), groups=weight.shape[0])


def _torch_grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    kh, kw = kernel_size
    channels = x.shape[1]
    weight = x.new_empty((channels, 1, kh, kw))
    _, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_y, x, weight, None, (1, 1), (kh // 2, kw // 2), (1, 1), False, (0, 0), channels, (False, True, False))
    return grad_weight[:, 0]


def _in_layout(layout: torch.memory_format, function: Callable) -> Callable:
    """`function` on its tensor arguments converted to `layout` first."""
    def converted(*args):
        return function(*(a.contiguous(memory_format=layout) if torch.is_tensor(a) and a.dim() == 4 else a
                          for a in args))
    return converted


# ---- FFT convolution ----------------------------------------------------------------------------------

def _smooth_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: sizes FFT libraries transform fast."""
    size = n
    while True:
        rest = size
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return size
        size += 1


def _fft_sizes(height: int, width: int, kernel_size: Sequence[int]) -> Tuple[int, int]:
    """Periods long enough that the circular correlation equals the zero-padded one on the output: the
    taps reach kernel // 2 pixels past the border, where the padded input must be zero."""
    if kernel_size[0] > 2 * height - 1 or kernel_size[1] > 2 * width - 1:
        raise ValueError(f'FFT convolution takes kernels up to (2H - 1) x (2W - 1) = {2 * height - 1} x '
                         f'{2 * width - 1}, got {tuple(kernel_size)}: crop the taps that never meet a pixel')
    return _smooth_size(height + kernel_size[0] // 2), _smooth_size(width + kernel_size[1] // 2)


def _place_kernel(weight: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """The kernel on a size[0] x size[1] period, its centre tap at (0, 0)."""
    kh, kw = weight.shape[-2:]
    placed = weight.new_zeros((weight.shape[0], *size))
    placed[:, :kh, :kw] = weight
    return placed.roll((-(kh // 2), -(kw // 2)), dims=(-2, -1))


def _fft_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    height, width = x.shape[-2:]
    size = _fft_sizes(height, width, weight.shape[-2:])
    compute = torch.promote_types(x.dtype, torch.float32)  # half-precision FFTs lose too much
    spectrum = torch.fft.rfft2(x.to(compute), s=size)
    kernel = torch.fft.rfft2(_place_kernel(weight.to(compute), size))
    # conj_physical, not a lazy conj() view: inside a compiled graph (torch 2.14) the conjugate bit of a view
    # made in a custom operator is dropped and the result silently wrong
    y = torch.fft.irfft2(spectrum * kernel.conj_physical(), s=size)[..., :height, :width]
    return y.to(x.dtype)


def _fft_grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    """dw[c, u, v] = sum_{b, i, j} dy[b, c, i, j] x[b, c, i + u - kh//2, j + v - kw//2]: the correlation of x
    with dy, summed over the batch in the frequency domain and read at lags -k//2 .. k//2."""
    height, width = x.shape[-2:]
    kh, kw = kernel_size
    size = _fft_sizes(height, width, kernel_size)
    compute = torch.promote_types(x.dtype, torch.float32)
    spectrum_x = torch.fft.rfft2(x.to(compute), s=size)
    cross = (spectrum_x * torch.fft.rfft2(grad_y.to(compute), s=size).conj_physical()).sum(0)  # see _fft_forward
    lags = torch.fft.irfft2(cross, s=size).roll((kh // 2, kw // 2), dims=(-2, -1))
    return lags[:, :kh, :kw].to(x.dtype)


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels-last tensor that is not also plainly contiguous (1x1 images are both)."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format


def _float_on_any_device(x: torch.Tensor) -> bool:
    return x.is_floating_point()


def _triton_available(x: torch.Tensor) -> bool:
    from . import triton_kernels
    return triton_kernels.available(x)


def _triton_forward(x, weight):
    from . import triton_kernels
    return triton_kernels.forward(x, weight)


def _triton_grad_weight(grad_y, x, kernel_size):
    from . import triton_kernels
    return triton_kernels.grad_weight(grad_y, x, kernel_size)


BACKENDS: Dict[str, Backend] = {
    'torch': Backend(_in_layout(torch.contiguous_format, _torch_forward),
                     _in_layout(torch.contiguous_format, _torch_grad_weight), _float_on_any_device),
    'torch_channels_last': Backend(_in_layout(torch.channels_last, _torch_forward),
                                   _in_layout(torch.channels_last, _torch_grad_weight), _float_on_any_device),
    'fft': Backend(_fft_forward, _fft_grad_weight, _float_on_any_device),
    'triton': Backend(_triton_forward, _triton_grad_weight, _triton_available),
}


def flops(x_shape: Sequence[int], kernel_size: Sequence[int]) -> int:
    """Multiply-adds x2 of one pass at every tap ('same'), the usual count."""
    return 2 * math.prod(x_shape) * math.prod(kernel_size)
