"""The per-frequency matrix products of the FFT convolution on CPUs, a C++ extension (csrc/spectral_cpu.cpp, built
by `native`):

    out[m, n, f] = sum_k a[m, k, f] b[k, n, f]

for complex64 spectra laid out as rfft leaves them, each row's frequencies contiguous: no transposing copies to the
frequency-major layout a batched matrix product needs, and none back for the inverse transform. `a` and `b` may be
views (a transpose of their first two axes, a conjugate). The result does not depend on the number of threads; its
rows of F frequencies are contiguous and each starts on a cache line (a view of the first F of a whole number of
lines), which lets the extension write them past the caches.
"""
import torch

from .native import NativeExtension

__all__ = ['available', 'products']

EXTENSION = NativeExtension('smpconv_spectral_cpu', 'spectral_cpu.cpp', 'the C++ spectral products')


def available(spectra: torch.Tensor) -> bool:
    """Whether the products of `spectra` run here: complex64 CPU tensors, and the extension built."""
    return spectra.device.type == 'cpu' and spectra.dtype == torch.complex64 and EXTENSION.module() is not None


def _operand(spectra: torch.Tensor):
    """The tensor the extension reads for `spectra` (a conjugate view read through its conjugate, rows contiguous)
    and whether to conjugate it."""
    conjugate = spectra.is_conj()
    if conjugate:
        spectra = spectra.conj()
    return (spectra if spectra.stride(-1) == 1 else spectra.contiguous()), conjugate


def products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[M, N, F]: per frequency f, the matrix product of a [M, K, F] and b [K, N, F]."""
    (a, conj_a), (b, conj_b) = _operand(a), _operand(b)
    return EXTENSION.module().products(a, b, conj_a, conj_b)
