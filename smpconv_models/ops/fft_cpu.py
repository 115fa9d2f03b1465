"""The real FFTs of the long convolution's FFT backend on CPUs, 1-D and 2-D, a C++ extension (csrc/fft_cpu.cpp,
built by `native`): the spectra of signals zero-padded to the period, and the first samples of the inverse
transform, as the convolution needs them. PyTorch's rfftn and irfftn copy the spectra between layouts around their
column transforms, and its 1-D transforms need x padded and the inverse cropped by copies of their own; these
transform groups of 8 signals together, one per lane of a vector (1-D signals two to a lane), and read and write
each signal once. On a 2-core AVX2 EPYC, the CIFAR-10 model's [64, 24 | 36 | 48, 32, 32] on periods of 36 x 36 and
40 x 40: spectra 2.2-4.0x as fast as `torch.fft.rfftn` of the padded signals, the cropped inverse 3.4-3.7x as fast
as `irfftn` and the crop; sMNIST's [64, 30, 784] on periods of 1080 and 1152: 1.6x and 1.4x. Where they are used
is the dispatcher's choice (`ffts`).

float32 only (complex64 spectra): the FFT backend computes float64 with PyTorch.
"""
from typing import Sequence, Tuple

import torch

from .native import NativeExtension

__all__ = ['available', 'rfft', 'irfft']

EXTENSION = NativeExtension('smpconv_fft_cpu', 'fft_cpu.cpp', 'the C++ FFTs')


def available(t: torch.Tensor) -> bool:
    """Whether the transforms of t run here: CPU signals that the FFT backend computes in float32 (float32 and the
    half precisions) or complex64 spectra, and the extension built."""
    return (t.device.type == 'cpu' and t.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.complex64)
            and EXTENSION.module() is not None)


def _as_2d(sizes: Sequence[int]) -> Tuple[int, int]:
    """The extension's 2-D form of a 1-D or 2-D size: a 1-D signal is one row."""
    return (1, *sizes) if len(sizes) == 1 else tuple(sizes)


def rfft(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """The half spectra [B, C, F] of x [B, C, *N] zero-padded to `sizes` (P1 or P0, P1): F = P1 // 2 + 1, or
    P0 (P1 // 2 + 1)."""
    spectra = EXTENSION.module().rfft(x.float().contiguous().view(-1, *_as_2d(x.shape[2:])), *_as_2d(sizes))
    return spectra.view(*x.shape[:2], spectra.shape[1] * spectra.shape[2])


def irfft(spectra: torch.Tensor, sizes: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """The first `size` (N1 or N0, N1) samples [P, Q, *size] of the signals on the period `sizes` whose half spectra
    are `spectra` [P, Q, F] (rows of contiguous frequencies), as `torch.fft.irfftn` has them."""
    signals = EXTENSION.module().irfft(spectra.flatten(0, 1), *_as_2d(sizes), *_as_2d(size))
    return signals.view(*spectra.shape[:2], *size)
