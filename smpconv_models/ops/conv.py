"""Full (not depthwise) convolutions with long kernels, as a custom operator: the causal 1D convolution of the
sequence models, whose kernels are as long as the sequence (16,000 taps for raw audio), and the 'same' 2D
convolution of the CIFAR-10 model (33 x 33 kernels).

    y[b, o, t] = sum_c sum_j  w[o, c, j] * x[b, c, t - p + j]        (zero outside x; t, j in 1D or 2D)

with p the taps before the current position, per axis: L - 1 for a causal kernel (it sees the current step,
its last tap, and the L - 1 before it), L // 2 for a 'same' kernel. The output has the size of x. Each pass
(output, input gradient, weight gradient) runs on the faster of two backends for its shape, chosen by the
dispatcher (`dispatch`) or forced with SMPCONV_CONV_BACKEND or `use_backend`:

- `torch`: PyTorch's convolution, direct: its cost grows with the taps;
- `cpp` (1-D, CPUs): the same direct convolution on a C++ extension (`conv1d_cpu`), which runs the sequence models'
  small kernels (5 taps of 30 channels) 1.3-1.6x as fast as oneDNN;
- `fft`: FFT convolution over a period of at least N + max(p, L - 1 - p) per axis, rounded up to a size
  FFT libraries transform fast, computed in float32 or wider: its cost grows with N log N, whatever L. A training
  step whose passes run faster on it (timed together, `conv.step`) keeps the spectra of x and of the kernel
  for the backward pass, which then transforms the output gradient once for both gradients (`FFTConvolution`).
  On the CPU the spectra's per-frequency products run on a C++ extension that reads them as rfft lays them out
  (`spectral_cpu`), the signals are transformed by another where the dispatcher times it faster than PyTorch's
  FFTs (`ffts`, `fft_cpu`: x padded and the output cropped as they are transformed, no layout copies), and the
  kernel's spectra and the weight gradient's taps of a small 2-D box are products with DFT matrices rather than
  transforms of the whole period (`_box_dft_pays`).

Taps that never meet the input (a kernel longer than the sequence) are cropped first: the result is exactly
the same. The output's dtype follows F.conv's under autocast (see `dispatch.compute_dtype`).
"""
import math
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from . import conv1d_cpu, ffts, spectral_cpu
from .dispatch import (Backend, Operator, capturing_graph, check_float, check_odd, compute_dtype, conv_grad_weight,
                       fft_dtype, fft_sizes, recording_graph, save_inputs, spatial_dims, tap_flops,
                       transforming)

__all__ = ['causal_conv1d', 'conv2d_same', 'conv_taps', 'CONV_BACKENDS']


def _conv_function(ndim: int):
    return F.conv1d if ndim == 1 else F.conv2d


def _paddings(kernel_size: Sequence[int], pad: Sequence[int]) -> List[int]:
    """F.pad's (last axis first) zeros before and after every spatial axis for taps `pad` before the centre."""
    amounts = []
    for k, p in reversed(list(zip(kernel_size, pad))):
        amounts += [p, k - 1 - p]
    return amounts


# ---- PyTorch's convolution ---------------------------------------------------------------------------

def _torch_forward(x: torch.Tensor, weight: torch.Tensor, pad: List[int]) -> torch.Tensor:
    kernel_size = weight.shape[2:]
    if all(2 * p == k - 1 for k, p in zip(kernel_size, pad)):  # symmetric: the convolution pads itself
        return _conv_function(len(pad))(x, weight, padding=tuple(pad))
    return _conv_function(len(pad))(F.pad(x, _paddings(kernel_size, pad)), weight)


def _torch_grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size: List[int], pad: List[int]
                       ) -> torch.Tensor:
    padded = F.pad(x, _paddings(kernel_size, pad))
    return conv_grad_weight(grad_y, padded, (grad_y.shape[1], x.shape[1], *kernel_size), [0] * len(pad), 1)


# ---- FFT convolution ----------------------------------------------------------------------------------
#
# Spectra are kept as rfftn leaves them, [batch, channels, F] (F the frequencies of the period, flattened): a
# training step transforms x, the kernel and the output gradient once each and keeps their spectra for every
# product that needs them (`FFTConvolution`). The products per frequency run on the C++ extension on CPUs
# (`spectral_cpu`), which reads that layout as it is; elsewhere a batched matrix product reads the spectra
# frequency-major, [F, batch, channels], copied there and back around each product.

# PyTorch copies a large transposed matrix along its output's rows, reading the source a whole row apart for each
# element; taken in chunks of the source's rows, the rows read stay in cache. On a 2-core EPYC: [10801, 960]
# complex (a raw Speech Commands layer's spectra) 19.6 ms plainly, 8.8 ms in chunks of 512 rows; [960, 10801] 18.7
# and 7.9 ms; [541, 1920] (sMNIST) 0.86 and 0.47 ms. GPUs keep PyTorch's own transposing copy (not measured).
TRANSPOSE_CHUNK_ROWS = 512


def _transpose_copy(matrix: torch.Tensor) -> torch.Tensor:
    """The transpose [C, R] of `matrix` [R, C], contiguous."""
    return _frequency_major(matrix.unsqueeze(1)).squeeze(2)


def _frequency_major(spectra: torch.Tensor) -> torch.Tensor:
    """[M, K, F] -> [F, M, K], contiguous, from any strides (a transposed view's, a conjugate view conjugated), in
    chunks of `TRANSPOSE_CHUNK_ROWS` rows [m, k] on the CPU."""
    rows, per_row = spectra.shape[0], max(1, spectra.shape[1])
    chunk = max(1, TRANSPOSE_CHUNK_ROWS // per_row) if spectra.device.type == 'cpu' else max(1, rows)
    moved = spectra.new_empty(spectra.shape[2], *spectra.shape[:2])
    for start in range(0, rows, chunk):
        moved[:, start:start + chunk].copy_(spectra[start:start + chunk].permute(2, 0, 1))
    return moved


def _products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[M, N, F], each row's frequencies contiguous: per frequency f, the matrix product of a [M, K, F] and
    b [K, N, F] (either may be a transposed or conjugate view)."""
    if spectral_cpu.available(a):
        return spectral_cpu.products(a, b)
    products = torch.bmm(_frequency_major(a), _frequency_major(b))
    return _transpose_copy(products.flatten(1)).view(*products.shape[1:], -1)


def _conj_kernel_spectra(weight: torch.Tensor, pad: List[int], sizes: List[int]) -> torch.Tensor:
    """The conjugate spectra [O, C, F] of the kernel [O, C, *k] on the period, its tap `pad` at position 0: the taps
    from `pad` on, zeros, then the taps before `pad` (wrapped around), one concatenation per axis. Conjugate: the
    forward pass correlates."""
    weight = weight.to(fft_dtype(weight.dtype))
    if _box_dft_pays(weight.shape[2:], sizes, weight.device):
        return _conj_kernel_spectra_of_box(weight, pad, sizes)
    for axis, (p, size) in enumerate(zip(pad, sizes)):
        dim = axis - len(pad)
        taps = weight.shape[dim]
        zeros = list(weight.shape)
        zeros[dim] = size - taps
        weight = torch.cat([weight.narrow(dim, p, taps - p), weight.new_zeros(zeros), weight.narrow(dim, 0, p)], dim)
    return torch.fft.rfftn(weight, dim=spatial_dims(len(pad))).flatten(2).conj()


def _taps_of_lags(lags: torch.Tensor, kernel_size: Sequence[int], pad: Sequence[int]) -> torch.Tensor:
    """The taps [..., *k] of a correlation's lags over the period, tap j at lag j - pad: the last `pad` lags (the
    negative ones, wrapped around), then the first k - pad; the inverse of `_conj_kernel_spectra`'s wrap."""
    for axis, (k, p) in enumerate(zip(kernel_size, pad)):
        dim = axis - len(pad)
        period = lags.shape[dim]
        lags = torch.cat([lags.narrow(dim, period - p, p), lags.narrow(dim, 0, k - p)], dim)
    return lags


def _forward_of_spectra(x_spectra: torch.Tensor, conj_kernel_spectra: torch.Tensor, sizes: List[int],
                        size: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """y = irfft(X conj(W)) per frequency, cropped to x's `size`."""
    return ffts.cropped_signals(_products(x_spectra, conj_kernel_spectra.transpose(0, 1)), sizes, size, dtype)


def _grad_input_of_spectra(grad_spectra: torch.Tensor, conj_kernel_spectra: torch.Tensor, sizes: List[int],
                           size: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """dx = irfft(dY W) per frequency, the adjoint of the forward's product."""
    return ffts.cropped_signals(_products(grad_spectra, conj_kernel_spectra.conj()), sizes, size, dtype)


def _grad_weight_of_spectra(grad_spectra: torch.Tensor, x_spectra: torch.Tensor, sizes: List[int],
                            kernel_size: Sequence[int], pad: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """dw[o, c, j] = sum_{b, t} dy[b, o, t] x[b, c, t - p + j]: the correlation of x with dy, summed over the
    batch per frequency, read at lags -p .. k - 1 - p."""
    lag_spectra = _products(grad_spectra.transpose(0, 1).conj(), x_spectra)
    if _box_dft_pays(kernel_size, sizes, lag_spectra.device):
        return _taps_of_lag_spectra(lag_spectra, sizes, kernel_size, pad).to(dtype)
    return _taps_of_lags(ffts.signals(lag_spectra, sizes), kernel_size, pad).to(dtype)


# A 2-D box of k0 x k1 taps needs only k0 x k1 of the period's values: the kernel's spectra and the weight
# gradient's taps are two products with DFT matrices each, which land in the layout wanted, with none of the
# period's transforms or copies. On the CPU they cost less than the FFTs up to boxes of about half the period a
# side (below); the CIFAR-10 model's boxes are 7 to 11 taps a side on periods of 36 and 40.

def _box_dft_pays(kernel_size: Sequence[int], sizes: Sequence[int], device: torch.device) -> bool:
    """Whether a 2-D box's transforms run faster as DFT matrix products than as FFTs over the period. The products
    take P0 k1 (k0 + F1) complex multiply-adds a filter (F1 = P1 // 2 + 1), the FFTs about P0 P1 log2(P0 P1)
    operations and copies. On a 2-core EPYC (48 channels, both transforms of a step): products faster up to
    k1 (k0 + F1) = 2 P1 log2(P0 P1): 9 x 9 taps on a 36 x 36 period 1.7 and 8.9 ms against 5.9 and 13.2 ms, 21 x 21
    on 48 x 48 8.3 and 18.8 against 11.6 and 23.8 ms; past it, 25 x 25 on 48 x 48, 16.5 and 22.0 against 11.5 and
    24.3 ms. GPUs keep the FFTs (not measured)."""
    if len(sizes) != 2 or device.type != 'cpu':
        return False
    (k0, k1), (period0, period1) = kernel_size, sizes
    return k1 * (k0 + period1 // 2 + 1) <= 2 * period1 * math.log2(period0 * period1)


def _dft_matrix(period: int, frequencies: int, lags: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """exp(2 pi i f l / period) [frequencies, lags] for f < frequencies, f l reduced modulo the period first (exact
    integers: the angles stay accurate however large f l)."""
    turns = (torch.arange(frequencies, device=lags.device).view(-1, 1) * lags.view(1, -1)).remainder(period)
    angles = turns.double() * (2 * math.pi / period)
    return torch.polar(torch.ones_like(angles), angles).to(dtype)


def _box_lags(kernel_size: Sequence[int], pad: Sequence[int], device: torch.device) -> List[torch.Tensor]:
    """The lag of each tap along each axis: tap j is lag j - p."""
    return [torch.arange(k, device=device) - p for k, p in zip(kernel_size, pad)]


def _conj_kernel_spectra_of_box(weight: torch.Tensor, pad: List[int], sizes: List[int]) -> torch.Tensor:
    """`_conj_kernel_spectra` of a 2-D box, [O, C, P0 F1]: the sum over its taps of w[i, j]
    exp(2 pi i (f0 (i - p0) / P0 + f1 (j - p1) / P1)), along the columns and then along the rows."""
    out_chs, in_chs, k0, k1 = weight.shape
    complex_dtype = torch.promote_types(weight.dtype, torch.complex64)
    lags0, lags1 = _box_lags(weight.shape[2:], pad, weight.device)
    rows = _dft_matrix(sizes[0], sizes[0], lags0, complex_dtype)  # [P0, k0]
    columns = _dft_matrix(sizes[1], sizes[1] // 2 + 1, lags1, complex_dtype)  # [F1, k1]
    by_columns = weight.reshape(out_chs * in_chs, k0, k1).to(complex_dtype) @ columns.t()  # [O C, k0, F1]
    return torch.matmul(rows, by_columns).view(out_chs, in_chs, -1)


def _taps_of_lag_spectra(spectra: torch.Tensor, sizes: List[int], kernel_size: Sequence[int], pad: Sequence[int]
                         ) -> torch.Tensor:
    """The taps [O, C, k0, k1] of a correlation whose lags have the half spectra `spectra` [O, C, P0 F1]: tap
    (i, j) is the lag (i - p0, j - p1) of irfftn, which reads each frequency of the last axis twice (its conjugate
    stands for the other half) but f1 = 0 and P1 / 2 once, and only their real parts."""
    out_chs, in_chs, _ = spectra.shape
    half = sizes[1] // 2 + 1
    lags0, lags1 = _box_lags(kernel_size, pad, spectra.device)
    counts = torch.full((half, 1), 2., dtype=torch.float64, device=spectra.device)
    counts[0] = 1.
    if sizes[1] % 2 == 0:
        counts[-1] = 1.
    rows = _dft_matrix(sizes[0], sizes[0], lags0, spectra.dtype).t() / sizes[0]  # [k0, P0]; columns [F1, k1]
    columns = (_dft_matrix(sizes[1], half, lags1, torch.complex128) * (counts / sizes[1])).to(spectra.dtype)
    by_rows = torch.matmul(rows, spectra.reshape(out_chs * in_chs, sizes[0], half))  # [O C, k0, F1]
    return (by_rows @ columns).real.view(out_chs, in_chs, *kernel_size)


def _fft_forward(x: torch.Tensor, weight: torch.Tensor, pad: List[int]) -> torch.Tensor:
    sizes = fft_sizes(x.shape[2:], weight.shape[2:], pad)
    return _forward_of_spectra(ffts.spectra(x, sizes), _conj_kernel_spectra(weight, pad, sizes), sizes, x.shape[2:],
                               x.dtype)


def _fft_grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size: List[int], pad: List[int]
                     ) -> torch.Tensor:
    sizes = fft_sizes(x.shape[2:], kernel_size, pad)
    return _grad_weight_of_spectra(ffts.spectra(grad_y, sizes), ffts.spectra(x, sizes), sizes, kernel_size, pad,
                                   x.dtype)


def _work(x_shape: Sequence[int], channels: int, kernel_size: Sequence[int], pad: Sequence[int]
          ) -> Dict[str, float]:
    """Each backend's operations for one pass over x [B, C, *N] with `channels` on the other side, roughly: the
    direct convolution's multiply-adds at every tap; the FFT's transforms (5 n log2 n per signal) and its
    complex products (4 real ones per frequency and channel pair)."""
    batch, in_channels, size = x_shape[0], x_shape[1], x_shape[2:]
    period = math.prod(fft_sizes(size, kernel_size, pad))
    signals = batch * (in_channels + channels) + in_channels * channels
    direct = batch * in_channels * channels * math.prod(size) * math.prod(kernel_size)
    return {
        'torch': direct,
        'cpp': direct,
        'fft': 5. * signals * period * math.log2(max(period, 2)) + 4. * batch * in_channels * channels * period / 2,
    }


def _transposed(weight: torch.Tensor) -> torch.Tensor:
    """The kernel of the input gradient: channels swapped, taps reversed."""
    return weight.transpose(0, 1).flip(spatial_dims(weight.dim() - 2))


def _opposite(kernel_size: Sequence[int], pad: Sequence[int]) -> List[int]:
    return [k - 1 - p for k, p in zip(kernel_size, pad)]


def _direct_step(forward: Callable, grad_weight: Callable, x: torch.Tensor, weight: torch.Tensor, pad: List[int],
                 needs: Tuple[bool, bool]) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """A training step's passes by a direct backend's `forward` and `grad_weight`, y standing in for the output
    gradient: (dx, dw), each where `needs` asks for it (the first layer's input, say, needs no gradient)."""
    y = forward(x, weight, pad)
    kernel_size = list(weight.shape[2:])
    needs_x, needs_w = needs
    return (forward(y, _transposed(weight), _opposite(kernel_size, pad)) if needs_x else None,
            grad_weight(y, x, kernel_size, pad) if needs_w else None)


def _torch_step(x: torch.Tensor, weight: torch.Tensor, pad: List[int], needs: Tuple[bool, bool]
                ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    return _direct_step(_torch_forward, _torch_grad_weight, x, weight, pad, needs)


def _cpp_step(x: torch.Tensor, weight: torch.Tensor, pad: List[int], needs: Tuple[bool, bool]
              ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    return _direct_step(conv1d_cpu.forward, conv1d_cpu.grad_weight, x, weight, pad, needs)


def _fft_step(x: torch.Tensor, weight: torch.Tensor, pad: List[int], needs: Tuple[bool, bool]
              ) -> Tuple[torch.Tensor, ...]:
    """A training step's passes by `FFTConvolution` itself, y standing in for the output gradient: the gradients
    `needs` asks for, of (x, weight)."""
    with torch.enable_grad():  # the dispatcher times without autograd
        x, weight = x.detach().requires_grad_(needs[0]), weight.detach().requires_grad_(needs[1])
        y = FFTConvolution.apply(x, weight, pad)
        return torch.autograd.grad(y, [t for t in (x, weight) if t.requires_grad], y.detach())


# `conv.step` decides how a training step convolves: by `FFTConvolution` (its three passes sharing spectra) or by
# the operator, each pass on its own backend. The forward pass's timing alone leaves out what the kept spectra save
# in the backward pass (a 48-channel 9x9 box at batch 64: the forward pass 2.2x faster on the FFT, the step 4.3x).
CONV_BACKENDS: Dict[str, Backend] = {
    'torch': Backend({'conv.forward': _torch_forward, 'conv.grad_weight': _torch_grad_weight,
                      'conv.step': _torch_step}),
    'fft': Backend({'conv.forward': _fft_forward, 'conv.grad_weight': _fft_grad_weight, 'conv.step': _fft_step}),
    'cpp': Backend({'conv.forward': conv1d_cpu.forward, 'conv.grad_weight': conv1d_cpu.grad_weight,
                    'conv.step': _cpp_step}, supports=conv1d_cpu.available),
}


def _no_screening(args: Tuple, batched: int) -> None:
    """No smaller problem in proportion: the FFT transforms all O x C filters of the kernel whatever the batch, so
    one sample favours the direct convolution (a 48-channel 9x9 box, forward pass: 4.9x slower on the FFT than
    direct at batch 1, where the dispatcher dropped it, and 2.2x faster at batch 64)."""
    return None


CONV = Operator('long convolution', 'SMPCONV_CONV_BACKEND', CONV_BACKENDS, _no_screening)


# ---- the operator ---------------------------------------------------------------------------------------


def _backend(pass_: str, x: torch.Tensor, weight: torch.Tensor, pad: List[int],
             needs: Optional[Tuple[bool, bool]] = None) -> str:
    """The backend of `pass_` of x with weight (both contiguous): 'conv.forward', or 'conv.step' timed on the
    gradients `needs` (of x, of the weight). A step that needs both keeps the signature it had before the others
    were told apart, so that the choices of training states saved then still apply."""
    args, signature = (x, weight, pad), (*weight.shape, *pad)
    if needs is not None:
        args += (needs,)
        signature += () if all(needs) else (needs,)
    return CONV.choose(pass_, args, 1, signature=signature,
                       work=partial(_work, x.shape, weight.shape[0], weight.shape[2:], pad))


@torch.library.custom_op('smpconv::conv', mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor, pad: List[int]) -> torch.Tensor:
    if x.numel() == 0 or weight.numel() == 0:
        return x.new_zeros((x.shape[0], weight.shape[0], *x.shape[2:]))
    x, weight = x.contiguous(), weight.contiguous()
    return CONV_BACKENDS[_backend('conv.forward', x, weight, pad)].passes['conv.forward'](x, weight, pad).contiguous()


@_forward.register_fake
def _(x, weight, pad):
    return x.new_empty((x.shape[0], weight.shape[0], *x.shape[2:]))


@torch.library.custom_op('smpconv::conv_grad_weight', mutates_args=())
def _grad_weight(grad_y: torch.Tensor, x: torch.Tensor, kernel_size: List[int], pad: List[int]) -> torch.Tensor:
    if x.numel() == 0 or grad_y.numel() == 0:
        return x.new_zeros((grad_y.shape[1], x.shape[1], *kernel_size))
    grad_y, x = grad_y.contiguous(), x.contiguous()
    return CONV.compute('conv.grad_weight', grad_y, x, kernel_size, pad, batched=2,
                        signature=(grad_y.shape[1], *kernel_size, *pad),
                        work=partial(_work, x.shape, grad_y.shape[1], kernel_size, pad)).contiguous()


@_grad_weight.register_fake
def _(grad_y, x, kernel_size, pad):
    return x.new_empty((grad_y.shape[1], x.shape[1], *kernel_size))


def _gradients(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, pad: List[int], needs_x: bool,
               needs_w: bool) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """dx and dw (where needed) by the operators, each pass on its own backend, differentiable again."""
    kernel_size = list(weight.shape[2:])
    grad_x = grad_w = None
    if needs_x:  # the correlation of dy with the transposed, reversed kernel
        grad_x = _forward(grad_y, _transposed(weight), _opposite(kernel_size, pad))
    if needs_w:
        grad_w = _grad_weight(grad_y, x, kernel_size, pad)
    return grad_x, grad_w


def _backward(ctx, grad_y):
    x, weight = ctx.saved_tensors
    (pad,) = ctx.args
    return *_gradients(grad_y, x, weight, pad, *ctx.needs_input_grad[:2]), None


def _grad_weight_backward(ctx, grad_grad_w):
    """Second derivatives: dw is bilinear in dy and x, and each of its partial maps is a forward pass."""
    grad_y, x = ctx.saved_tensors
    kernel_size, pad = ctx.args
    grad_grad_y = grad_x = None
    if ctx.needs_input_grad[0]:
        grad_grad_y = _forward(x, grad_grad_w, pad)
    if ctx.needs_input_grad[1]:
        grad_x = _forward(grad_y, _transposed(grad_grad_w), _opposite(kernel_size, pad))
    return grad_grad_y, grad_x, None, None


_forward.register_autograd(_backward, setup_context=save_inputs)
_grad_weight.register_autograd(_grad_weight_backward, setup_context=save_inputs)


class FFTConvolution(torch.autograd.Function):
    """The FFT backend's forward pass of a training step, which keeps the spectra of x and of the kernel for the
    backward pass; that transforms the output gradient once for both gradients (issue 21: three forward
    transforms a step where the passes on their own take six). Second derivatives go through the operators."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, pad: List[int]) -> torch.Tensor:
        sizes = fft_sizes(x.shape[2:], weight.shape[2:], pad)
        x_spectra, conj_kernel_spectra = ffts.spectra(x, sizes), _conj_kernel_spectra(weight, pad, sizes)
        # the spectra only the gradients asked for need
        ctx.save_for_backward(x, weight, x_spectra if ctx.needs_input_grad[1] else None,
                              conj_kernel_spectra if ctx.needs_input_grad[0] else None)
        ctx.pad, ctx.sizes = pad, sizes
        return _forward_of_spectra(x_spectra, conj_kernel_spectra, sizes, x.shape[2:], x.dtype)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight, x_spectra, conj_kernel_spectra = ctx.saved_tensors
        needs_x, needs_w = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # create_graph: gradients that can be differentiated again
            return *_gradients(grad_y, x, weight, ctx.pad, needs_x, needs_w), None
        grad_spectra = ffts.spectra(grad_y, ctx.sizes)
        grad_x = grad_w = None
        if needs_x:
            grad_x = _grad_input_of_spectra(grad_spectra, conj_kernel_spectra, ctx.sizes, x.shape[2:], x.dtype)
        if needs_w:
            grad_w = _grad_weight_of_spectra(grad_spectra, x_spectra, ctx.sizes, weight.shape[2:], ctx.pad,
                                             weight.dtype)
        return grad_x, grad_w, None


def _convolve(x: torch.Tensor, weight: torch.Tensor, pad: List[int]) -> torch.Tensor:
    """The convolution by the operator, or, in an eager training step whose passes (the forward and the gradients
    x and the weight require) run faster on the FFT (`conv.step`), by `FFTConvolution`, which keeps the spectra
    (the operator is what graphs record: it decides at run time). The operator's passes each take the faster
    backend, so where the direct step wins they cost at most its time."""
    if transforming():  # PyTorch's convolution (of the taps that meet x): the operator has no transform rules
        return _torch_forward(x, weight, pad)
    training = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if not training or capturing_graph() or x.device.type == 'meta' or x.numel() == 0 or weight.numel() == 0:
        return _forward(x, weight, pad)
    x, weight = x.contiguous(), weight.contiguous()
    if _backend('conv.step', x, weight, pad, (x.requires_grad, weight.requires_grad)) == 'fft':
        return FFTConvolution.apply(x, weight, pad)
    return _forward(x, weight, pad)


@register_flop_formula(torch.ops.smpconv.conv)
def _forward_flops(x_shape, weight_shape, pad, *args, out_shape=None, **kwargs) -> int:
    return tap_flops(x_shape, weight_shape[2:], weight_shape[0])


@register_flop_formula(torch.ops.smpconv.conv_grad_weight)
def _grad_weight_flops(grad_y_shape, x_shape, kernel_size, pad, *args, out_shape=None, **kwargs) -> int:
    return tap_flops(x_shape, kernel_size, grad_y_shape[1])


# ---- the functions ----------------------------------------------------------------------------------------

def useful_taps(kernel_size: Sequence[int], pad: Sequence[int], size: Sequence[int]) -> List[Tuple[int, int]]:
    """Per axis, the taps [start, stop) that meet an input of `size`: tap j reaches t - p + j for some t.

    Comparisons, not min and max: under torch.compile a size that changed between calls is a symbol, and taps
    cropped by its min and max have strides that Inductor cannot order, where a comparison guards the graph on
    its outcome (every size past the kernel's reach gives the whole kernel)."""
    return [(p - n + 1 if n <= p else 0, p + n if p + n < k else k) for k, p, n in zip(kernel_size, pad, size)]


def _check(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], ndim: int, name: str) -> None:
    check_float(name, x=x, weight=weight)
    if x.dim() != ndim + 2 or weight.dim() != ndim + 2 or weight.shape[1] != x.shape[1]:
        axes = 'L' if ndim == 1 else 'H, W'
        kernel = 'L' if ndim == 1 else 'kh, kw'
        raise ValueError(f'{name} takes x [B, C, {axes}] and weight [O, C, {kernel}], got {tuple(x.shape)} and '
                         f'{tuple(weight.shape)}')
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f'{name} takes a bias [O] = [{weight.shape[0]}], got {tuple(bias.shape)}')


def _plain_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], causal: bool) -> torch.Tensor:
    """PyTorch's own convolution, which TorchScript, FX, torch.export and the ONNX exporter record, so that what
    they save runs without this package."""
    if causal:
        return F.conv1d(F.pad(x, [weight.shape[-1] - 1, 0]), weight, bias)
    return F.conv2d(x, weight, bias, padding=[weight.shape[-2] // 2, weight.shape[-1] // 2])


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], pad: List[int]) -> torch.Tensor:
    """The convolution of the taps `weight` with `pad` taps before the current position per axis (within the
    kernel: 0 <= pad < its size), cropped to those that meet x."""
    dtype = compute_dtype(x, weight)
    x, weight = x.to(dtype), weight.to(dtype)
    taps = useful_taps(weight.shape[2:], pad, x.shape[2:])
    weight = weight[(slice(None), slice(None)) + tuple(slice(start, stop) for start, stop in taps)]
    y = _convolve(x, weight, [p - start for p, (start, _) in zip(pad, taps)])
    return y if bias is None else y + bias.to(dtype).view(1, -1, *([1] * len(pad)))


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Causal convolution of x [B, C, N] with weight [O, C, L] (plus a bias [O]): output step t sees steps
    t - L + 1 .. t of every input channel, weight[..., -1] the current one; for any N and L."""
    if torch.jit.is_scripting() or recording_graph():
        return _plain_conv(x, weight, bias, True)
    _check(x, weight, bias, 1, 'causal_conv1d')
    return _conv(x, weight, bias, [weight.shape[-1] - 1])


def conv2d_same(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Stride-1, zero-padded 'same' cross-correlation of x [B, C, H, W] with weight [O, C, kh, kw] (odd sizes),
    plus a bias [O]: F.conv2d(x, weight, bias, padding='same'), for any kernel and image size."""
    if torch.jit.is_scripting() or recording_graph():
        return _plain_conv(x, weight, bias, False)
    _check(x, weight, bias, 2, 'conv2d_same')
    check_odd(weight.shape[-2:])
    return _conv(x, weight, bias, [k // 2 for k in weight.shape[-2:]])


def conv_taps(x: torch.Tensor, weight: torch.Tensor, pad: Sequence[int], bias: Optional[torch.Tensor] = None
              ) -> torch.Tensor:
    """The convolution of x [B, C, N] or [B, C, H, W] with taps `weight` [O, C, *k], of which `pad` (per axis,
    0 <= pad < k) come before the current position: part of a longer kernel, as `causal_conv1d` (pad L - 1) or
    `conv2d_same` (pad k // 2) would apply it whole, where the rest of it is zero (`SMPKernel.nonzero_box`).
    Output of x's size; plus a bias [O]."""
    ndim = x.dim() - 2
    _check(x, weight, bias, ndim, 'conv_taps')
    if len(pad) != ndim or not all(0 <= p < k for p, k in zip(pad, weight.shape[2:])):
        raise ValueError(f'conv_taps takes 0 <= pad < taps per axis, got pad {list(pad)} for taps '
                         f'{list(weight.shape[2:])}')
    return _conv(x, weight, bias, list(pad))
