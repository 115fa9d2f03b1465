"""Mel-frequency cepstral coefficients, computed in torch as torchaudio's `MFCC` computes them.

The authors' Speech Commands model takes `torchaudio.transforms.MFCC(log_mels=True, n_mfcc=20,
melkwargs=dict(n_fft=200, n_mels=64))` of 16 kHz clips; no torchaudio release matches the PyTorch this package
is tested with, so the same computation is written out here:

1. power spectrogram: |STFT|^2, Hann window (periodic) of n_fft samples, hop n_fft // 2, frames centred
   (the clip padded by n_fft // 2 on each side, reflected);
2. mel spectrogram: a bank of triangular filters between 0 Hz and the Nyquist frequency, equally spaced on the
   HTK mel scale (mel = 2595 log10(1 + f / 700)), not area-normalised;
3. log(mel + 1e-6), then the orthonormal DCT-II over the mel bands, keeping the first n_mfcc coefficients.

A 1 s clip of 16,000 samples gives 20 x 161. (With n_fft=200 there are only 101 frequency bins for 64 mel
bands, so two of the lowest filters are empty; their coefficients come from log(1e-6), as in torchaudio.)
The result equals torchaudio 2.9.1's (tests/data/torchaudio).
"""
import math

import torch

__all__ = ['mel_filterbank', 'dct_matrix', 'mfcc']


def _hz_to_mel(frequency: float) -> float:
    return 2595. * math.log10(1. + frequency / 700.)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700. * (10. ** (mel / 2595.) - 1.)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular filters [n_freqs, n_mels] over the STFT bins 0 .. sample_rate / 2, on the HTK mel scale."""
    frequencies = torch.linspace(0, sample_rate // 2, n_freqs)
    mels = torch.linspace(_hz_to_mel(0.), _hz_to_mel(sample_rate / 2), n_mels + 2)
    points = _mel_to_hz(mels)  # the filters' feet and peaks
    widths = points[1:] - points[:-1]
    slopes = points[None, :] - frequencies[:, None]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.)


def dct_matrix(n_coefficients: int, n_bands: int) -> torch.Tensor:
    """The orthonormal DCT-II [n_bands, n_coefficients] (first coefficients only)."""
    bands = torch.arange(float(n_bands))
    k = torch.arange(float(n_coefficients))[:, None]
    dct = torch.cos(math.pi / n_bands * (bands + 0.5) * k)
    dct[0] *= 1. / math.sqrt(2.)
    return (dct * math.sqrt(2. / n_bands)).t()


def mfcc(waveform: torch.Tensor, sample_rate: int = 16000, n_mfcc: int = 20, n_fft: int = 200,
         n_mels: int = 64) -> torch.Tensor:
    """MFCCs [..., n_mfcc, frames] of waveforms [..., samples]: torchaudio's MFCC(log_mels=True)."""
    shape = waveform.shape
    frames = torch.stft(waveform.reshape(-1, shape[-1]), n_fft, hop_length=n_fft // 2, win_length=n_fft,
                        window=torch.hann_window(n_fft, dtype=waveform.dtype, device=waveform.device), center=True,
                        pad_mode='reflect', normalized=False, onesided=True, return_complex=True)
    power = frames.abs().pow(2.)
    filters = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate).to(power)
    mel = torch.log(torch.matmul(power.transpose(-1, -2), filters) + 1e-6)
    coefficients = torch.matmul(mel, dct_matrix(n_mfcc, n_mels).to(mel)).transpose(-1, -2)
    return coefficients.reshape(*shape[:-1], n_mfcc, coefficients.shape[-1])
