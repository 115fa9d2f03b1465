"""The C++ backend of the depthwise resizing convolution (smpconv_models/ops/resize_cpu.py) against the plain
computation of its contract, `reference_taps` and `reference_grads`, in float64, float32 and bfloat16; its
`*_points` functions, which sample the bank from points' values and interpolation inside, against the same on the
bank they stand for.

Tolerances follow from the number of terms: a sum of n products computed in any order, with operands exact in
float64, is off by at most about n u times the sum of the |products| (Higham's bound, u the unit roundoff), so
each element is compared within `_bound`: 2 n eps (= 4 n u) times that sum, which covers the extension's rounding
and the reference's, plus one rounding of the result to bfloat16 where the output is bfloat16. In float64 that is
n 4e-16 times a sum of order 1 to 100: 1e-14 to 1e-11 here, errors measured at up to a third of it. A sum whose
terms are themselves sums of m products (the bank's values from P points, a point's gradient from T bank values)
is off by at most (n + m) u times the sum of all |products|: its terms count n + m.
"""
import warnings
from typing import List, Sequence, Tuple

import pytest
import torch

from smpconv_models.ops import resize_cpu
from smpconv_models.ops.resize import reference_grads, reference_taps, resize_geometry

Geometry = List[torch.Tensor]  # row_start, row_phase, col_start, col_phase


@pytest.fixture(scope='module')
def built() -> None:
    if not resize_cpu.available(torch.zeros(1)):
        pytest.skip('the C++ extension did not build on this machine (see the warning): the operator computes with '
                    'PyTorch')


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _geometry(in_size: Sequence[int], **resize) -> Tuple[Tuple[int, int, int, int], Geometry]:
    """The bank's [Py, ky, Px, kx] and the index tensors of the package's geometry for a 5 x 5 kernel."""
    rows, cols = resize_geometry(in_size, (5, 5), **resize)
    geometry = [torch.tensor(v) for v in (rows.start, rows.phase, cols.start, cols.phase)]
    return (rows.phases, rows.taps, cols.phases, cols.taps), geometry


# the package's geometries: an arbitrary scale, different per axis, rational ones (phases shared by several
# outputs, whose products add up in grad_bank), a 1 x 1 output (29 taps per axis: several vectors per column), an
# upscaling beyond 3x; the starts reach before and past the input at the borders
CASES = {
    '0.73': ((13, 11), dict(scale=0.73)),
    '(1.37, 0.6)': ((13, 11), dict(scale=(1.37, 0.6))),
    '0.5': ((12, 10), dict(scale=0.5)),
    '2.0': ((6, 5), dict(scale=2.0)),
    '3.0': ((4, 5), dict(scale=3.0)),
    '1x1': ((7, 9), dict(size=1)),
    '3x2 to 13x9': ((3, 2), dict(size=(13, 9))),
}


def _outside_geometry() -> Tuple[Tuple[int, int, int, int], Geometry, Tuple[int, int]]:
    """A geometry of the contract beyond what the package makes: outputs whose taps lie wholly before or past an
    8 x 6 input, starts out of order, phases shared in any order."""
    geometry = [torch.tensor([-9, -3, 2, 6, 11, 0]), torch.tensor([0, 1, 0, 2, 1, 2]),
                torch.tensor([4, -6, -1, 3, 9]), torch.tensor([1, 0, 1, 1, 0])]
    return (3, 4, 2, 3), geometry, (8, 6)


def _problem(case: str, dtype: torch.dtype, batch: int = 3, channels: int = 4):
    in_size, resize = CASES[case]
    shape, geometry = _geometry(in_size, **resize)
    x = torch.randn(batch, channels, *in_size, dtype=torch.float64).to(dtype)
    bank = torch.randn(channels, *shape, dtype=torch.float64).to(dtype)
    return x, bank, geometry


def _bound(value: torch.Tensor, magnitude: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """The largest error allowed per element of `value`: see the module docstring."""
    accumulation = torch.promote_types(value.dtype, torch.float32)  # bfloat16 accumulates in float32
    bound = 2 * terms * torch.finfo(accumulation).eps * magnitude
    if value.dtype == torch.bfloat16:
        bound = bound + torch.finfo(torch.bfloat16).eps * magnitude
    return bound


def _assert_close(value: torch.Tensor, expected: torch.Tensor, magnitude: torch.Tensor, terms: torch.Tensor):
    error = (value.double() - expected).abs()
    bound = _bound(value, magnitude, terms)
    assert (error <= bound).all(), f'error {error.max():.3g} where {bound.flatten()[error.argmax()]:.3g} is allowed'


def _check_all_passes(x: torch.Tensor, bank: torch.Tensor, geometry: Geometry) -> None:
    """forward, grad_input and grad_bank against the float64 reference of the same (exactly widened) inputs."""
    x64, bank64 = x.double(), bank.double()
    y = resize_cpu.forward(x, bank, *geometry)
    grad_y = torch.randn(y.shape, dtype=torch.float64).to(x.dtype)
    grad_y64 = grad_y.double()
    grad_x = resize_cpu.grad_input(grad_y, bank, *geometry, *x.shape[2:])
    grad_bank = resize_cpu.grad_bank(grad_y, x, *geometry, bank.shape)
    # the sums of |products| and the numbers of terms, by the reference on |operands| and on ones
    magnitudes = (reference_taps(x64.abs(), bank64.abs(), *geometry),
                  *reference_grads(grad_y64.abs(), x64.abs(), bank64.abs(), *geometry))
    ones = torch.ones_like
    terms = (reference_taps(ones(x64), ones(bank64), *geometry),
             *reference_grads(ones(grad_y64), ones(x64), ones(bank64), *geometry))
    expected = (reference_taps(x64, bank64, *geometry), *reference_grads(grad_y64, x64, bank64, *geometry))
    for value, want, magnitude, count in zip((y, grad_x, grad_bank), expected, magnitudes, terms):
        assert value.shape == want.shape and value.dtype == x.dtype and value.is_contiguous()
        _assert_close(value, want, magnitude, count)


def _points(bank: torch.Tensor, num_points: int = 3) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random points' values [C, P] and interpolation [P, Py, ky, Px, kx] of the bank's shape and dtype."""
    weights = torch.randn(bank.shape[0], num_points, dtype=torch.float64).to(bank.dtype)
    interp = torch.rand(num_points, *bank.shape[1:], dtype=torch.float64).to(bank.dtype)
    return weights, interp


def _check_points_passes(x: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor, geometry: Geometry) -> None:
    """forward_points, grad_input_points and grad_points against the float64 reference on the bank they stand
    for, bank[c] = sum_q weights[c, q] interp[q]."""
    x64, weights64, interp64 = x.double(), weights.double(), interp.double()
    num_points, taps = interp.shape[0], interp[0].numel()
    bank64 = (weights64 @ interp64.flatten(1)).view(-1, *interp.shape[1:])
    abs_bank64 = (weights64.abs() @ interp64.abs().flatten(1)).view_as(bank64)
    y = resize_cpu.forward_points(x, weights, interp, *geometry)
    grad_y = torch.randn(y.shape, dtype=torch.float64).to(x.dtype)
    grad_y64 = grad_y.double()
    grad_x = resize_cpu.grad_input_points(grad_y, weights, interp, *geometry, *x.shape[2:])
    grad_weights, grad_interp = resize_cpu.grad_points(grad_y, x, weights, interp, *geometry)
    ones = torch.ones_like
    grad_x64, grad_bank64 = reference_grads(grad_y64, x64, bank64, *geometry)
    abs_grad_x64, abs_grad_bank64 = reference_grads(grad_y64.abs(), x64.abs(), abs_bank64, *geometry)
    terms_x, terms_bank = reference_grads(ones(grad_y64), ones(x64), ones(bank64), *geometry)
    checks = (
        (y, reference_taps(x64, bank64, *geometry), reference_taps(x64.abs(), abs_bank64, *geometry),
         reference_taps(ones(x64), ones(bank64), *geometry) + num_points),
        (grad_x, grad_x64, abs_grad_x64, terms_x + num_points),
        (grad_weights, grad_bank64.flatten(1) @ interp64.flatten(1).T,
         abs_grad_bank64.flatten(1) @ interp64.abs().flatten(1).T, terms_bank.max() + taps),
        (grad_interp, (weights64.T @ grad_bank64.flatten(1)).view_as(interp),
         (weights64.abs().T @ abs_grad_bank64.flatten(1)).view_as(interp), terms_bank.max() + len(weights)))
    for value, want, magnitude, count in checks:
        assert value.shape == want.shape and value.dtype == x.dtype and value.is_contiguous()
        _assert_close(value, want, magnitude, count)


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_passes_match_the_reference(built, case: str, dtype: torch.dtype):
    _check_all_passes(*_problem(case, dtype))


@pytest.mark.parametrize('case', ['0.73', '0.5'])
def test_bfloat16_accumulates_in_float32(built, case: str):
    _check_all_passes(*_problem(case, torch.bfloat16))


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_points_passes_match_the_reference(built, case: str, dtype: torch.dtype):
    x, bank, geometry = _problem(case, dtype)
    _check_points_passes(x, *_points(bank), geometry)


@pytest.mark.parametrize('case', ['0.73', '0.5'])
def test_points_passes_in_bfloat16(built, case: str):
    x, bank, geometry = _problem(case, torch.bfloat16)
    _check_points_passes(x, *_points(bank), geometry)


def test_points_of_more_channels_than_gradient_blocks(built):
    """grad_points sums the points' interpolation gradients per block of channels (8 blocks, 3 channels each
    here, the last one short), then the blocks."""
    x, bank, geometry = _problem('0.73', torch.float64, channels=23)
    _check_points_passes(x, *_points(bank, num_points=5), geometry)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_taps_wholly_outside_the_input(built, dtype: torch.dtype):
    shape, geometry, in_size = _outside_geometry()
    x = torch.randn(2, 3, *in_size, dtype=dtype)
    _check_all_passes(x, torch.randn(3, *shape, dtype=dtype), geometry)


def test_empty_batch(built):
    x, bank, geometry = _problem('0.73', torch.float32, batch=0)
    y = resize_cpu.forward(x, bank, *geometry)
    assert y.shape == (0, 4, 9, 8)
    assert resize_cpu.grad_input(y, bank, *geometry, 13, 11).shape == (0, 4, 13, 11)
    grad_bank = resize_cpu.grad_bank(y, x, *geometry, bank.shape)
    assert grad_bank.shape == bank.shape and not grad_bank.any()
    weights, interp = _points(bank)
    assert resize_cpu.forward_points(x, weights, interp, *geometry).shape == (0, 4, 9, 8)
    assert resize_cpu.grad_input_points(y, weights, interp, *geometry, 13, 11).shape == (0, 4, 13, 11)
    grads = resize_cpu.grad_points(y, x, weights, interp, *geometry)
    assert [g.shape for g in grads] == [weights.shape, interp.shape] and not any(g.any() for g in grads)


def test_any_memory_layout(built):
    """channels_last and strided views give the results of contiguous tensors, in contiguous NCHW."""
    x, bank, geometry = _problem('0.73', torch.float32, channels=5)
    grad_y = torch.randn(3, 5, 9, 8)
    strided_x = x.contiguous(memory_format=torch.channels_last)
    strided_bank = bank.permute(4, 3, 2, 1, 0).contiguous().permute(4, 3, 2, 1, 0)
    strided_grad_y = grad_y.transpose(2, 3).contiguous().transpose(2, 3)
    strided_geometry = [torch.stack([g, g], 1)[:, 0] for g in geometry]
    for plain, strided in (
            (resize_cpu.forward(x, bank, *geometry), resize_cpu.forward(strided_x, strided_bank, *strided_geometry)),
            (resize_cpu.grad_input(grad_y, bank, *geometry, 13, 11),
             resize_cpu.grad_input(strided_grad_y, strided_bank, *strided_geometry, 13, 11)),
            (resize_cpu.grad_bank(grad_y, x, *geometry, bank.shape),
             resize_cpu.grad_bank(strided_grad_y, strided_x, *strided_geometry, bank.shape))):
        assert strided.is_contiguous() and torch.equal(plain, strided)


@pytest.mark.parametrize('case', ['0.73', '0.5'])
def test_results_do_not_depend_on_the_thread_count(built, case: str):
    """Bitwise: every element is summed by one thread in one order, whatever the number of threads."""
    in_size, resize = (32, 30), CASES[case][1]
    shape, geometry = _geometry(in_size, **resize)
    x, bank = torch.randn(2, 24, *in_size), torch.randn(24, *shape)
    weights, interp = _points(bank)
    grad_y = torch.randn(2, 24, *(len(g) for g in geometry[::2]))
    threads = torch.get_num_threads()

    def passes() -> Tuple[torch.Tensor, ...]:
        return (resize_cpu.forward(x, bank, *geometry), resize_cpu.grad_input(grad_y, bank, *geometry, *in_size),
                resize_cpu.grad_bank(grad_y, x, *geometry, bank.shape),
                resize_cpu.forward_points(x, weights, interp, *geometry),
                resize_cpu.grad_input_points(grad_y, weights, interp, *geometry, *in_size),
                *resize_cpu.grad_points(grad_y, x, weights, interp, *geometry))

    try:
        results = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(passes())
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_bad_geometry_is_a_one_line_error(built):
    x, bank, geometry = _problem('0.73', torch.float32)
    geometry[3] = geometry[3].clone()
    geometry[3][2] = bank.shape[3]
    with pytest.raises(RuntimeError, match=r'col_phase\[2\] = 8 is not one of the 8 phases'):
        resize_cpu.forward(x, bank, *geometry)
    with pytest.raises(RuntimeError, match=r'x must be a \[B, C, H, W\] CPU tensor'):
        resize_cpu.forward(x[0], bank, *geometry)
    weights, interp = _points(bank)
    with pytest.raises(RuntimeError, match=r"the points' values must be \[C, P\] and their interpolation "
                                           r"\[P, Py, ky, Px, kx\], got \[4, 3\] and \[2, "):
        resize_cpu.forward_points(x, weights, interp[:2], *geometry)


def test_available_for_cpu_floats_only(built):
    assert all(resize_cpu.available(torch.zeros(1, dtype=dtype))
               for dtype in (torch.float32, torch.float64, torch.bfloat16))
    assert not resize_cpu.available(torch.zeros(1, dtype=torch.float16))
    assert not resize_cpu.available(torch.zeros(1, dtype=torch.int64))
    assert not resize_cpu.available(torch.zeros(1, device='meta'))


def test_a_failed_build_warns_once_and_falls_back(without_compiler):
    without_compiler(resize_cpu)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert not resize_cpu.available(torch.zeros(1))
        assert not resize_cpu.available(torch.zeros(1, dtype=torch.float64))
    assert [str(w.message) for w in caught] == [
        'the C++ resizing convolution did not build (no C++ compiler found): it computes with PyTorch']
