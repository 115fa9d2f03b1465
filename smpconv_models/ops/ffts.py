"""The real FFTs of the FFT backends, as an operator: the spectra of signals zero-padded to a period, and the first
samples of the signals of half spectra, 1-D or 2-D, each on PyTorch's FFTs or on the C++ ones (`fft_cpu`, float32
on CPUs), whichever the dispatcher times faster for the shape (`dispatch`), or the one forced with
SMPCONV_FFT_BACKEND (`torch` or `cpp`) or `use_backend`.

Which is faster depends on the CPU as much as on the shape (`benchmarks/ffts.py`): the C++ FFTs transformed 1-D
periods of 8192 1.1-1.7x as fast as PyTorch's (MKL) and the copies around them on a 2-core AVX2 EPYC, 0.69-0.94x
as fast on a 2-core AVX-512 Xeon; the models' 2-D periods 1.3-3.5x as fast on both.
"""
from typing import List, Sequence

import torch

from . import fft_cpu
from .dispatch import Backend, Operator, fft_dtype, spatial_dims

__all__ = ['spectra', 'cropped_signals', 'signals', 'FFTS']


def _zero_padded(x: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    """x [B, C, *N] at the start of zeros [B, C, *sizes], contiguous, in float32 or wider. Only the zeros and x are
    written (F.pad fills the whole period, then copies x over it), x converted as it is copied; contiguous whatever
    x's layout (rfftn reads channels_last through its strides slower than the copy and a contiguous transform take:
    2-core EPYC, batch 32, smpconv_t's shapes, depthwise weight gradients 10-15% faster)."""
    padded = x.new_empty(*x.shape[:2], *sizes, dtype=fft_dtype(x.dtype))
    leading = (slice(None), slice(None))
    for n in x.shape[2:]:
        padded[leading + (slice(n, None),)].zero_()
        leading += (slice(0, n),)
    padded[leading].copy_(x)
    return padded


def signals(spectra: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """The signals [P, Q, *sizes] of the half spectra [P, Q, F] on the period `sizes`, by PyTorch's FFTs."""
    half = [*sizes[:-1], sizes[-1] // 2 + 1]
    return torch.fft.irfftn(spectra.unflatten(-1, half), s=list(sizes), dim=spatial_dims(len(sizes)))


def _torch_spectra(x: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    # padded first: faster than rfftn's `s`, which pads with F.pad
    return torch.fft.rfftn(_zero_padded(x, sizes), dim=spatial_dims(len(sizes))).flatten(2)


def _torch_cropped_signals(spectra: torch.Tensor, sizes: List[int], size: List[int], dtype: torch.dtype
                           ) -> torch.Tensor:
    cropped = signals(spectra, sizes)[(...,) + tuple(slice(0, n) for n in size)]
    return cropped.to(dtype, memory_format=torch.contiguous_format, copy=True)


def _cpp_spectra(x: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    return fft_cpu.rfft(x, sizes)


def _cpp_cropped_signals(spectra: torch.Tensor, sizes: List[int], size: List[int], dtype: torch.dtype
                         ) -> torch.Tensor:
    return fft_cpu.irfft(spectra, sizes, size).to(dtype)


def _any_tensor(t: torch.Tensor) -> bool:
    return True


# The C++ FFTs first: where another operator's backend is being timed, they are what it transforms with (see
# `Operator.choose`), as before they were timed themselves.
FFTS = Operator('real FFTs', 'SMPCONV_FFT_BACKEND', {
    'cpp': Backend({'fft.spectra': _cpp_spectra, 'fft.cropped_signals': _cpp_cropped_signals},
                   supports=fft_cpu.available),
    'torch': Backend({'fft.spectra': _torch_spectra, 'fft.cropped_signals': _torch_cropped_signals},
                     supports=_any_tensor),
})


def spectra(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """The half spectra [B, C, F] of x [B, C, *N] zero-padded to the period `sizes` (P1 or P0, P1), in float32 or
    wider: F = P1 // 2 + 1, or P0 (P1 // 2 + 1), in rfftn's order."""
    return FFTS.compute('fft.spectra', x, list(sizes), signature=tuple(sizes))


def cropped_signals(spectra: torch.Tensor, sizes: Sequence[int], size: Sequence[int], dtype: torch.dtype
                    ) -> torch.Tensor:
    """The first `size` (N1 or N0, N1) samples [P, Q, *size] of the signals on the period `sizes` whose half
    spectra are `spectra` [P, Q, F] (rows of contiguous frequencies), in `dtype`: a contiguous tensor of their own (a
    view would keep the whole period alive, and one returned by an autograd Function cannot be changed in place)."""
    return FFTS.compute('fft.cropped_signals', spectra, list(sizes), list(size), dtype,
                        signature=(*sizes, *size))
