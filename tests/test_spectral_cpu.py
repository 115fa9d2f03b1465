"""The C++ per-frequency products of the FFT convolution (smpconv_models/ops/spectral_cpu.py) against complex128
matrix products."""

import pytest
import torch

from smpconv_models import causal_conv1d
from smpconv_models.ops import spectral_cpu, use_backend


@pytest.fixture(scope='module')
def built() -> None:
    if not spectral_cpu.available(torch.zeros(1, dtype=torch.complex64)):
        pytest.skip('the C++ extension did not build on this machine (see the warning): the FFT convolution '
                    'multiplies its spectra with PyTorch')


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.einsum('mkf,knf->mnf', a.resolve_conj().to(torch.complex128), b.resolve_conj().to(torch.complex128))


def spectra(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed))


# M, K, N, F: whole and partial blocks of outputs and tiles of frequencies (4 x 3 outputs and 16 frequencies with
# AVX-512, 3 x 2 and 8 with AVX), single rows; tiles packed in groups (at most 512 bytes of a row: 8 tiles with
# AVX, 4 with AVX-512), the last group partial ([32, 30, 30, 541]), and groups of one tile where b's packed rows are
# large ([3, 110, 100, 40])
SHAPES = [(4, 3, 3, 16), (6, 2, 4, 8), (5, 7, 11, 37), (1, 1, 1, 1), (9, 30, 8, 100), (32, 30, 30, 541),
          (3, 110, 100, 40)]


@pytest.mark.parametrize('m, k, n, frequencies', SHAPES)
@pytest.mark.parametrize('transposed', ['neither', 'a', 'b', 'both'])
@pytest.mark.parametrize('conjugate', [False, True])
def test_products_match_the_complex128_products(built, m, k, n, frequencies, transposed, conjugate):
    """Every operand as the FFT convolution passes it: laid out [M, K, F] or a transposed view of [K, M, F] (the
    weight gradient's output gradient), each possibly a conjugate view."""
    a = spectra(k, m, frequencies, seed=0).transpose(0, 1) if transposed in ('a', 'both') else \
        spectra(m, k, frequencies, seed=0)
    b = spectra(n, k, frequencies, seed=1).transpose(0, 1) if transposed in ('b', 'both') else \
        spectra(k, n, frequencies, seed=1)
    if conjugate:
        a, b = a.conj(), b.conj()
    out = spectral_cpu.products(a, b)
    assert out.shape == (m, n, frequencies) and not out.is_conj()
    # rows of contiguous frequencies, each starting on a 64-byte cache line (the extension streams whole lines)
    assert out.stride(2) == 1 and out.stride(1) % 8 == 0 and out.stride(0) == n * out.stride(1)
    assert out.data_ptr() % 64 == 0
    # float32 sums of K products of O(1) complex numbers: rounding ~1e-7 K relative to sums of size ~sqrt(K)
    torch.testing.assert_close(out.to(torch.complex128), reference(a, b), rtol=0, atol=2e-6 * k)


def test_rows_with_frequencies_apart_are_read_through_a_copy(built):
    a, b = spectra(3, 4, 40, seed=2)[..., ::2], spectra(4, 5, 20, seed=3)
    torch.testing.assert_close(spectral_cpu.products(a, b).to(torch.complex128), reference(a, b), rtol=0, atol=1e-5)


def test_empty_sums_and_shapes(built):
    assert torch.equal(spectral_cpu.products(spectra(3, 0, 20, seed=0), spectra(0, 2, 20, seed=0)),
                       torch.zeros(3, 2, 20, dtype=torch.complex64))
    assert spectral_cpu.products(spectra(3, 4, 0, seed=0), spectra(4, 2, 0, seed=0)).shape == (3, 2, 0)
    assert spectral_cpu.products(spectra(0, 4, 9, seed=0), spectra(4, 2, 9, seed=0)).shape == (0, 2, 9)


@pytest.mark.parametrize('frequencies', [1000, 100])
def test_results_do_not_depend_on_the_number_of_threads(built, frequencies):
    """Nor on the tiles a group (100 frequencies: fewer a group with more threads, each thread getting 4 groups)."""
    a, b = spectra(8, 30, frequencies, seed=4), spectra(30, 9, frequencies, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = spectral_cpu.products(a, b)
        torch.set_num_threads(max(2, threads))
        together = spectral_cpu.products(a, b)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(alone, together)


def test_bad_operands_are_named(built):
    products = spectral_cpu.EXTENSION.module().products
    a = spectra(2, 3, 8, seed=0)
    with pytest.raises(RuntimeError, match='complex64'):
        products(a.to(torch.complex128), a.transpose(0, 1).to(torch.complex128), False, False)
    with pytest.raises(RuntimeError, match=r'a \[M, K, F\] and b \[K, N, F\]'):
        products(a, a, False, False)
    assert not spectral_cpu.available(a.to(torch.complex128))
    assert not spectral_cpu.available(torch.zeros(1, dtype=torch.complex64, device='meta'))


def test_a_failed_build_warns_once_and_the_convolution_multiplies_with_pytorch(without_compiler,
                                                                               twice_with_warnings):
    without_compiler(spectral_cpu)
    generator = torch.Generator().manual_seed(6)
    x, weight = torch.randn(2, 3, 50, generator=generator), torch.randn(4, 3, 20, generator=generator)
    with use_backend('fft'):
        y, messages = twice_with_warnings(lambda: causal_conv1d(x, weight))
    assert messages == ['the C++ spectral products did not build (no C++ compiler found): it computes with PyTorch']
    expected = torch.nn.functional.conv1d(torch.nn.functional.pad(x.double(), (19, 0)), weight.double())
    # float32 sums of 60 products of O(1) numbers
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=1e-4)
