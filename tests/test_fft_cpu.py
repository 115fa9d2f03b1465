"""The C++ real FFTs of the FFT convolution (smpconv_models/ops/fft_cpu.py), 2-D and 1-D, against complex128 and
float64 transforms, and the pairs' small 2-D kernels (`SameConv2d`) on the operator."""
import math
import os
from typing import Callable, List
from unittest import mock

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from smpconv_models import causal_conv1d, conv2d_same, depthwise_conv2d
from smpconv_models.layers.ckconv import SameConv2d
from smpconv_models.ops import choices, fft_cpu, restore_choices, use_backend


@pytest.fixture(scope='module')
def built() -> None:
    if not fft_cpu.available(torch.zeros(1)):
        pytest.skip('the C++ extension did not build on this machine (see the warning): the FFT convolution '
                    'transforms with PyTorch')


pytestmark = pytest.mark.usefixtures('fresh_choices')


# M, N0, N1, P0, P1: groups of 8 signals whole and partial (M = 1, 13, 16); rows odd and even in number (two rows
# per complex transform, the last alone); periods of radices 4, 2, 3 and 5, odd and even (the Nyquist frequency of
# the last axis), a prime (7, by its plain DFT) and 1; signals as large as the period; rows of fewer than 8 samples
# (a partial 8 x 8 block); the CIFAR-10 model's 32 x 32 on 36 x 36 and 40 x 40
SHAPES = [(13, 7, 5, 8, 9), (9, 5, 6, 7, 10), (16, 32, 32, 36, 36), (3, 32, 32, 40, 40), (2, 11, 13, 14, 14),
          (17, 1, 1, 1, 1), (5, 3, 4, 25, 30), (4, 15, 33, 15, 33), (1, 2, 3, 2, 3)]


def signals(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def half_spectra(m: int, period0: int, period1: int, seed: int) -> torch.Tensor:
    """Random half spectra [M, P0 F1], not the spectra of real signals: the imaginary parts of the frequencies 0 and
    P1 / 2 of the last axis are not zero, and irfftn ignores them."""
    return torch.randn(m, period0 * (period1 // 2 + 1), dtype=torch.complex64,
                       generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('m, rows, cols, period0, period1', SHAPES)
def test_2d_spectra_are_those_of_the_zero_padded_signals(built, m, rows, cols, period0, period1):
    x = signals(m, 2, rows, cols, seed=1)
    expected = torch.fft.rfftn(x.double(), s=(period0, period1)).flatten(2)
    # float32 transforms of at most 40 x 40 samples of O(1): rounding errors of about eps log2(P) |X|, |X| <= 40
    torch.testing.assert_close(fft_cpu.rfft(x, [period0, period1]).to(torch.complex128), expected, rtol=0,
                               atol=2e-5 * expected.abs().max().item())


@pytest.mark.parametrize('m, rows, cols, period0, period1', SHAPES)
def test_2d_inverse_is_the_first_samples_of_irfftn(built, m, rows, cols, period0, period1):
    spectra = half_spectra(2 * m, period0, period1, seed=2).view(m, 2, -1)
    expected = torch.fft.irfftn(spectra.to(torch.complex128).unflatten(-1, (period0, period1 // 2 + 1)),
                                s=(period0, period1))[..., :rows, :cols]
    got = fft_cpu.irfft(spectra, [period0, period1], [rows, cols])
    assert got.shape == (m, 2, rows, cols) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-6 * max(1., expected.abs().max().item()))


def test_the_2d_inverse_reads_rows_apart_as_the_products_leave_them(built):
    """The spectral products return rows of F frequencies a whole number of cache lines apart (a view)."""
    stored = half_spectra(6, 36, 36, seed=3)
    padded = torch.zeros(6, 700, dtype=torch.complex64)
    padded[:, :684] = stored
    view = padded[:, :684].view(2, 3, 684)
    assert not view.is_contiguous()
    torch.testing.assert_close(fft_cpu.irfft(view, [36, 36], [32, 32]),
                               fft_cpu.irfft(stored.view(2, 3, 684), [36, 36], [32, 32]), rtol=0, atol=0)


# M, N, P (1-D; 3 M signals, two to a lane, 16 to a group): groups whole and partial (48 and 51 signals), an odd
# number of signals (the last without a partner: 3, 45, 51, 99), periods of radices 4, 2, 3 and 5, odd and even (the
# Nyquist frequency), a prime (13, by its plain DFT) and 1; signals as long as the period, of one sample, of fewer
# than 8 (a partial 8 x 8 block); sMNIST's 784 on 1080
SHAPES_1D = [(1, 5, 8), (15, 7, 9), (16, 30, 30), (17, 12, 13), (33, 1, 1), (6, 40, 40), (4, 1, 45), (5, 784, 1080)]


@pytest.mark.parametrize('m, length, period', SHAPES_1D)
def test_1d_spectra_are_those_of_the_zero_padded_signals(built, m, length, period):
    x = signals(m, 3, length, seed=12)
    expected = torch.fft.rfft(x.double(), n=period)
    # float32 transforms of at most 1080 samples of O(1): rounding errors of about eps log2(P) |X|, |X| <= 784
    torch.testing.assert_close(fft_cpu.rfft(x, [period]).to(torch.complex128), expected, rtol=0,
                               atol=2e-5 * expected.abs().max().item())


@pytest.mark.parametrize('m, length, period', SHAPES_1D)
def test_1d_inverse_is_the_first_samples_of_irfft(built, m, length, period):
    spectra = half_spectra(3 * m, 1, period, seed=13).view(m, 3, -1)
    expected = torch.fft.irfft(spectra.to(torch.complex128), n=period)[..., :length]
    got = fft_cpu.irfft(spectra, [period], [length])
    assert got.shape == (m, 3, length) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-6 * max(1., expected.abs().max().item()))


def test_the_1d_inverse_reads_rows_apart_as_the_products_leave_them(built):
    """Two signals a lane: the two rows of a pair are read a padded row apart too."""
    stored = half_spectra(5, 1, 1080, seed=14)
    padded = torch.zeros(5, 544, dtype=torch.complex64)
    padded[:, :541] = stored
    view = padded[:, :541].view(5, 1, 541)
    assert not view.is_contiguous()
    torch.testing.assert_close(fft_cpu.irfft(view, [1080], [784]),
                               fft_cpu.irfft(stored.view(5, 1, 541), [1080], [784]), rtol=0, atol=0)


@pytest.mark.parametrize('size, period', [((32, 32), (36, 40)), ((784,), (1080,))])
def test_the_transforms_round_trip_and_take_empty_batches(built, size, period):
    x = signals(3, 5, *size, seed=4)
    torch.testing.assert_close(fft_cpu.irfft(fft_cpu.rfft(x, period), period, size), x, rtol=0, atol=1e-5)
    frequencies = math.prod(period[:-1]) * (period[-1] // 2 + 1)
    assert fft_cpu.rfft(x[:0], period).shape == (0, 5, frequencies)
    assert fft_cpu.irfft(fft_cpu.rfft(x[:0], period), period, size).shape == (0, 5, *size)


def test_half_precisions_are_transformed_in_float32(built):
    x = signals(2, 3, 9, 9, seed=5).to(torch.bfloat16)
    spectra = fft_cpu.rfft(x, [12, 12])
    assert spectra.dtype == torch.complex64
    torch.testing.assert_close(spectra, torch.fft.rfftn(x.float(), s=(12, 12)).flatten(2), rtol=0, atol=1e-4)


@pytest.mark.parametrize('size, period', [((32, 32), (36, 36)), ((784,), (1080,))])
def test_results_do_not_depend_on_the_number_of_threads(built, size, period):
    """Each group of 8 lanes is transformed by one thread, in one order."""
    x = signals(64, 3, *size, seed=6)
    spectra = half_spectra(64 * 3, math.prod(period[:-1]), period[-1], seed=7).view(64, 3, -1)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append((fft_cpu.rfft(x, period), fft_cpu.irfft(spectra, period, size)))
    finally:
        torch.set_num_threads(threads)
    for spectra_n, signals_n in results[1:]:
        assert torch.equal(spectra_n, results[0][0]) and torch.equal(signals_n, results[0][1])


def test_bad_inputs_are_named(built):
    extension = fft_cpu.EXTENSION.module()
    with pytest.raises(RuntimeError, match='no larger than the period 8 x 8, got 9 x 4'):
        extension.rfft(torch.zeros(2, 9, 4), 8, 8)
    with pytest.raises(RuntimeError, match='takes a contiguous float32'):
        extension.rfft(torch.zeros(2, 4, 4, dtype=torch.float64), 8, 8)
    with pytest.raises(RuntimeError, match='takes 40 frequencies a signal, got 41'):
        extension.irfft(torch.zeros(2, 41, dtype=torch.complex64), 8, 8, 4, 4)
    with pytest.raises(RuntimeError, match='positive periods'):
        extension.irfft(torch.zeros(2, 0, dtype=torch.complex64), 0, 8, 0, 4)


@pytest.fixture
def transform_calls(monkeypatch) -> List[str]:
    """The names of the extension's transforms, in the order the code under test calls them."""
    calls = []
    for name in ('rfft', 'irfft'):
        original = getattr(fft_cpu, name)
        monkeypatch.setattr(fft_cpu, name, lambda *args, _f=original, _n=name: calls.append(_n) or _f(*args))
    return calls


def float32_against_float64(convolve: Callable, reference: Callable, x: torch.Tensor, weight: torch.Tensor
                             ) -> torch.Tensor:
    """`convolve` on the FFT backend and the C++ FFTs in float32, its output and both gradients against `reference`
    in float64 (x and weight float64 O(1) numbers, as sums of up to 800 of their products); its output."""
    x, weight = x.requires_grad_(), weight.requires_grad_()
    expected = reference(x, weight)
    grads = torch.autograd.grad(expected, (x, weight), torch.ones_like(expected))
    with use_backend('fft'), mock.patch.dict(os.environ, SMPCONV_FFT_BACKEND='cpp'):
        y = convolve(x.float(), weight.float())
        got = torch.autograd.grad(y, (x, weight), torch.ones_like(y))
    # float32 sums of up to 240 products of O(1) numbers, through transforms of at most 288 samples or 24 x 24
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=1e-4)
    for g, e in zip(got, grads):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-3)  # sums of up to 800 such products
    return y


@pytest.mark.parametrize('convolve, reference, x_shape, weight_shape', [
    (conv2d_same, lambda x, w: F.conv2d(x, w, padding=3), (2, 3, 20, 20), (4, 3, 7, 7)),
    (causal_conv1d, lambda x, w: F.conv1d(F.pad(x, (59, 0)), w), (3, 4, 200), (5, 4, 60)),
], ids=['2d', '1d'])
def test_the_fft_convolution_runs_on_them(built, transform_calls, convolve, reference, x_shape, weight_shape):
    """The FFT backend's transforms are these on the CPU, in float32 (x and dy transformed, y and dx cropped);
    float64 keeps PyTorch's."""
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(*x_shape, dtype=torch.float64, generator=generator)
    weight = torch.randn(*weight_shape, dtype=torch.float64, generator=generator)
    with use_backend('fft'):
        convolve(x, weight)
    assert not transform_calls  # float64: PyTorch's
    float32_against_float64(convolve, reference, x, weight)
    assert transform_calls.count('rfft') == 2 and transform_calls.count('irfft') == 2  # x and dy; y and dx


def test_the_depthwise_fft_convolution_runs_on_them(built, transform_calls):
    """The depthwise operator's FFT backend transforms x and dy (and crops y) with them on the CPU in float32."""
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(2, 5, 14, 14, dtype=torch.float64, generator=generator)
    weight = torch.randn(5, 9, 9, dtype=torch.float64, generator=generator)
    y = float32_against_float64(
        lambda x32, w: depthwise_conv2d(x32.contiguous(memory_format=torch.channels_last), w),
        lambda x64, w: F.conv2d(x64, w.unsqueeze(1), padding=4, groups=5), x, weight)
    assert transform_calls.count('rfft') >= 2 and transform_calls.count('irfft') >= 1
    assert y.is_contiguous(memory_format=torch.channels_last)  # x's layout, whichever backend ran


def test_the_dispatcher_chooses_them_or_pytorchs(built, transform_calls, monkeypatch):
    """Which transforms the FFT backend takes is the dispatcher's choice, timed and kept per shape like a
    convolution's backend, forced by SMPCONV_FFT_BACKEND, and restored with the other choices."""
    generator = torch.Generator().manual_seed(12)
    x, weight = torch.randn(3, 4, 200, generator=generator), torch.randn(5, 4, 60, generator=generator)
    expected = F.conv1d(F.pad(x.double(), (59, 0)), weight.double())

    def convolve() -> torch.Tensor:
        transform_calls.clear()
        with use_backend('fft'), torch.no_grad():
            y = causal_conv1d(x, weight)
        # float32 sums of 240 products of O(1) numbers, through transforms of 288 samples
        torch.testing.assert_close(y.double(), expected, rtol=0, atol=1e-4)
        return y

    convolve()
    chosen = {key[0]: name for key, name in choices().items()}
    assert set(chosen) == {'fft.spectra', 'fft.cropped_signals'} and set(chosen.values()) <= {'cpp', 'torch'}
    monkeypatch.setenv('SMPCONV_FFT_BACKEND', 'torch')
    convolve()
    assert transform_calls == []
    monkeypatch.setenv('SMPCONV_FFT_BACKEND', 'cpp')
    convolve()
    assert transform_calls == ['rfft', 'irfft']
    monkeypatch.delenv('SMPCONV_FFT_BACKEND')
    restore_choices({key: 'torch' for key in choices()})
    convolve()
    assert transform_calls == []


def test_a_failed_build_warns_once_and_the_convolution_transforms_with_pytorch(without_compiler,
                                                                               twice_with_warnings):
    without_compiler(fft_cpu)
    generator = torch.Generator().manual_seed(9)
    x, weight = torch.randn(2, 3, 16, 16, generator=generator), torch.randn(4, 3, 5, 5, generator=generator)
    with use_backend('fft'):
        y, messages = twice_with_warnings(lambda: conv2d_same(x, weight))
    assert messages == ['the C++ FFTs did not build (no C++ compiler found): it computes with PyTorch']
    # float32 sums of 75 products of O(1) numbers
    torch.testing.assert_close(y.double(), F.conv2d(x.double(), weight.double(), padding=2), rtol=0, atol=1e-5)


def test_the_pairs_small_2d_kernels_are_the_same_convolution_on_the_operator():
    """`SameConv2d` computes through the operator (its backend forced or chosen), loads nn.Conv2d's weights, and
    names an even kernel."""
    torch.manual_seed(10)
    layer = SameConv2d(3, 4, 3, bias=True).double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    expected = F.conv2d(x, layer.weight, layer.bias, padding=1)
    for backend in ('torch', 'fft', None):
        with use_backend(backend):
            torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)  # float64 sums of 27 products
    assert any(key[0] == 'conv.forward' for key in choices())
    plain = nn.Conv2d(3, 4, 3, padding=1, bias=True).double()
    layer.load_state_dict(plain.state_dict())
    torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="'same' 2D convolution needs an odd kernel size, got 4"):
        SameConv2d(3, 4, 4)
