"""The parallel kernels' pair of batch norms, summed and activated on the C++ extension
(smpconv_models/ops/batch_norms.py), against PyTorch's batch norms in float64."""
from typing import List, Tuple

import pytest
import timm
import torch
import torch.nn as nn
from torch.autograd import forward_ad

from smpconv_models.layers.ckconv import LargeSmallConv
from smpconv_models.ops import batch_norms
from smpconv_models.ops.batch_norms import summed_batch_norms


@pytest.fixture(scope='module')
def built() -> None:
    if batch_norms.EXTENSION.module() is None:
        pytest.skip('the C++ extension did not build on this machine (see the warning): the pairs compute with '
                    'PyTorch')


@pytest.fixture
def fused_calls(monkeypatch) -> List[int]:
    """Counts the pairs the extension computes."""
    calls = []
    apply = batch_norms._SummedBatchNorms.apply
    monkeypatch.setattr(batch_norms._SummedBatchNorms, 'apply', lambda *args: calls.append(1) or apply(*args))
    return calls


def norms(shape, momentum=0.1, seed: int = 0) -> Tuple[nn.Module, nn.Module]:
    generator = torch.Generator().manual_seed(seed)
    norm_type = nn.BatchNorm1d if len(shape) == 3 else nn.BatchNorm2d
    pair = tuple(norm_type(shape[1], momentum=momentum) for _ in range(2))
    for norm in pair:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2, generator=generator)
            norm.bias.normal_(generator=generator)
    return pair


def inputs(shape, seed: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # a's channels far from zero mean: its statistics must not cancel
    a = torch.randn(*shape, generator=generator) * 3 + 5
    c = torch.randn(*shape, generator=generator)
    return a.requires_grad_(), c.requires_grad_(), torch.randn(*shape, generator=generator)


def input_gradient_scale(x: torch.Tensor, norm: nn.Module, grad_y: torch.Tensor) -> torch.Tensor:
    """The largest term weight / std dy of a batch norm's input gradient."""
    dims = [0, *range(2, x.dim())]
    invstd = (x.detach().var(dims, unbiased=False) + norm.eps).rsqrt()
    return (norm.weight.detach().abs() * invstd).max() * grad_y.abs().max()


def gradients(*tensors: torch.Tensor) -> List[torch.Tensor]:
    return [t.grad for t in tensors]


# rows shorter than a block of float32 sums (256 elements) and rows of blocks and a part ([64, 30, 784], sMNIST's;
# [2, 3, 16000], raw Speech Commands')
@pytest.mark.parametrize('shape', [(8, 5, 37), (4, 6, 9, 11), (1, 3, 2), (64, 30, 784), (2, 3, 16000)])
@pytest.mark.parametrize('act', [nn.ReLU, nn.Identity])
@pytest.mark.parametrize('momentum', [0.1, None])
def test_the_pair_is_two_batch_norms_summed_and_activated(built, fused_calls, shape, act, momentum):
    """Outputs, the gradients of the inputs and of the norms' parameters, and the running statistics over three
    steps (momentum None: their cumulative averages), against nn.BatchNorm in float64."""
    norm_a, norm_c = norms(shape, momentum)
    norm_a64, norm_c64 = (norm.double() for norm in norms(shape, momentum))
    for step in range(3):
        a, c, grad_y = inputs(shape, seed=step)
        y = summed_batch_norms(a, c, norm_a, norm_c, act())
        y.backward(grad_y)
        a64, c64 = (t.detach().double().requires_grad_() for t in (a, c))
        y64 = act()(norm_a64(a64) + norm_c64(c64))
        y64.backward(grad_y.double())
        assert len(fused_calls) == step + 1 and y.dtype == torch.float32 and y.is_contiguous()
        # float32 rounding of outputs of order 1 (the statistics' sums of up to 50,000 values in float64)
        torch.testing.assert_close(y.double(), y64, rtol=0, atol=1e-5)
        parameters = [norm_a.weight, norm_a.bias, norm_c.weight, norm_c.bias]
        parameters64 = [norm_a64.weight, norm_a64.bias, norm_c64.weight, norm_c64.bias]
        # float32 rounding of O(1) terms: an input gradient's terms are weight / std dy (large where a channel's few
        # values lie close together: they cancel to zero with two values a channel); the parameters' gradients are
        # sums over a channel's n values of dy xhat, whose roundings add up like a random walk's steps
        scales = [input_gradient_scale(x, norm, grad_y) for x, norm in ((a64, norm_a64), (c64, norm_c64))]
        scales += [grad_y.abs().max() * (grad_y.numel() / grad_y.shape[1]) ** .5] * 4
        for ours, expected, scale in zip(gradients(a, c, *parameters), gradients(a64, c64, *parameters64), scales):
            torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-5 * float(scale))
        for name in ('running_mean', 'running_var', 'num_batches_tracked'):
            ours, expected = getattr(norm_a, name), getattr(norm_a64, name)
            torch.testing.assert_close(ours.double(), expected.double(), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(getattr(norm_c, name).double(), getattr(norm_c64, name).double(),
                                       rtol=1e-6, atol=1e-6)
        for parameter in parameters + parameters64:
            parameter.grad = None


def test_the_relu_passes_no_gradient_where_its_input_is_zero(built, fused_calls):
    """As PyTorch's ReLU: a sum of exactly zero (zero scales, opposite shifts) passes nothing."""
    shape = (4, 3, 10)
    norm_a, norm_c = norms(shape)
    with torch.no_grad():
        norm_a.weight.zero_()
        norm_c.weight.zero_()
        norm_c.bias.copy_(-norm_a.bias)
    a, c, grad_y = inputs(shape, seed=0)
    y = summed_batch_norms(a, c, norm_a, norm_c, nn.ReLU())
    y.backward(grad_y)
    assert fused_calls and torch.equal(y, torch.zeros(shape))
    for t in (a, c, norm_a.weight, norm_a.bias, norm_c.weight, norm_c.bias):
        assert torch.equal(t.grad, torch.zeros_like(t))


def test_second_derivatives_are_pytorchs(built, fused_calls):
    """create_graph: the backward pass computes the gradients with PyTorch's batch norm, differentiable again."""
    shape = (6, 4, 15)
    grads = []
    for fused in (True, False):
        norm_a, norm_c = norms(shape)
        a, c, grad_y = inputs(shape, seed=1)
        if fused:
            y = summed_batch_norms(a, c, norm_a, norm_c, nn.ReLU())
        else:
            y = torch.relu(norm_a(a) + norm_c(c))
        grad_a, grad_weight = torch.autograd.grad(y, (a, norm_c.weight), grad_y, create_graph=True)
        grads.append(torch.autograd.grad(grad_a.square().sum() + grad_weight.sum(), (c, norm_a.bias)))
    assert len(fused_calls) == 1
    for ours, expected in zip(*grads):
        # float32 rounding of sums over the batch of O(1) terms
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_results_do_not_depend_on_the_number_of_threads(built):
    shape = (16, 7, 300)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            norm_a, norm_c = norms(shape)
            a, c, grad_y = inputs(shape, seed=2)
            y = summed_batch_norms(a, c, norm_a, norm_c, nn.ReLU())
            y.backward(grad_y)
            results.append([y, *gradients(a, c, norm_a.weight, norm_c.bias), norm_a.running_var])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(alone, together) for alone, together in zip(*results))


@pytest.mark.parametrize('case', ['eval', 'leaky_relu', 'float64', 'bfloat16', 'strided', 'one_value', 'no_affine',
                                  'layer_norm', 'empty', 'wrong_rank', 'float64_norm', 'forward_ad'])
def test_other_pairs_are_pytorchs(built, fused_calls, case):
    """What the extension does not compute runs as written, PyTorch's errors (one value per channel in training)
    and empty batches included."""
    shape = (0 if case == 'empty' else 1 if case == 'one_value' else 4, 3, 1 if case == 'one_value' else 8)
    norm_a, norm_c = norms(shape)
    act = nn.LeakyReLU() if case == 'leaky_relu' else nn.ReLU()
    a, c, _ = inputs(shape, seed=3)
    if case == 'eval':
        norm_a.eval()
    elif case in ('float64', 'bfloat16'):
        a, c = a.to(getattr(torch, case)), c.to(getattr(torch, case))
        norm_a, norm_c = norm_a.to(a.dtype), norm_c.to(a.dtype)
    elif case == 'strided':
        a = a.detach().transpose(0, 2).contiguous().transpose(0, 2)
    elif case == 'no_affine':
        norm_a = nn.BatchNorm1d(3, affine=False)
    elif case == 'layer_norm':
        norm_c = nn.GroupNorm(1, 3)
    elif case == 'float64_norm':
        norm_c = norm_c.double()
    if case == 'one_value':
        with pytest.raises(ValueError, match='Expected more than 1 value per channel'):
            summed_batch_norms(a, c, norm_a, norm_c, act)
    elif case == 'wrong_rank':
        with pytest.raises(ValueError, match=r'expected 4D input \(got 3D input\)'):
            summed_batch_norms(a, c, *norms((4, 3, 8, 1)), act)
    elif case == 'float64_norm':
        with pytest.raises(RuntimeError):
            summed_batch_norms(a, c, norm_a, norm_c, act)
    elif case == 'forward_ad':
        with forward_ad.dual_level():
            dual = forward_ad.make_dual(a.detach(), torch.ones(shape))
            tangent = forward_ad.unpack_dual(summed_batch_norms(dual, c, norm_a, norm_c, act)).tangent
            expected = forward_ad.unpack_dual(act(norm_a(dual) + norm_c(c))).tangent
        torch.testing.assert_close(tangent, expected, rtol=0, atol=0)
    else:
        y = summed_batch_norms(a, c, norm_a, norm_c, act)
        torch.testing.assert_close(y, act(norm_a(a) + norm_c(c)), rtol=0, atol=0)
    assert not fused_calls


def test_a_pair_of_kernels_fuses_its_norms_in_training_only(built, fused_calls):
    """The CIFAR-10 model's layer: the extension in training, PyTorch's batch norms in eval, TorchScript and FX
    (what those record runs anywhere), the same outputs."""
    torch.manual_seed(0)
    layer = LargeSmallConv(3, 4, 2, kernel_size=9, small_kernel_size=3, norm_layer=nn.BatchNorm2d,
                           act_layer=nn.ReLU, num_points=5, radius=0.3, position_std=0.3)
    x = torch.randn(2, 3, 10, 10)
    y = layer(x)
    assert len(fused_calls) == 1
    scripted, traced = torch.jit.script(layer), torch.fx.symbolic_trace(layer)
    assert len(fused_calls) == 1
    # the same float32 statistics and sums, rounded differently: outputs of order 1
    torch.testing.assert_close(scripted(x), y, rtol=0, atol=1e-5)
    torch.testing.assert_close(traced(x), y, rtol=0, atol=1e-5)
    layer.eval()
    layer(x)
    assert len(fused_calls) == 1


def test_a_tcn_step_trains_as_with_pytorchs_batch_norms(built, fused_calls, monkeypatch):
    """The sMNIST model's training step: the same loss, gradients and running statistics with the pairs on the
    extension as with PyTorch's batch norms."""
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(batch_norms, '_fusable', lambda *args: False)
        torch.manual_seed(0)
        model = timm.create_model('smpconv_tcn_smnist', depth=2, width=8, kernel_size=100)
        x = torch.randn(4, 1, 100, generator=torch.Generator().manual_seed(0))
        loss = model(x).logsumexp(1).sum()
        loss.backward()
        results.append([loss, *(p.grad for p in model.parameters()), *model.buffers()])
        assert len(fused_calls) == 4  # two blocks of two pairs, then none
    for ours, expected in zip(*results):
        # float32: the statistics' and the sums' rounding, carried through two blocks
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_a_failed_build_warns_once_and_the_pairs_compute_with_pytorch(without_compiler, twice_with_warnings):
    without_compiler(batch_norms)
    shape = (4, 3, 8)
    norm_a, norm_c = norms(shape)
    a, c, _ = inputs(shape, seed=4)
    y, messages = twice_with_warnings(lambda: summed_batch_norms(a, c, norm_a, norm_c, nn.ReLU()))
    assert messages == ['the C++ batch norms did not build (no C++ compiler found): it computes with PyTorch']
    torch.testing.assert_close(y, torch.relu(norm_a(a) + norm_c(c)), rtol=0, atol=1e-6)


def test_bad_operands_are_named(built):
    extension = batch_norms.EXTENSION.module()
    a = torch.zeros(2, 3, 4)
    with pytest.raises(RuntimeError, match='contiguous float32 CPU tensor'):
        extension.moments(a.double())
    with pytest.raises(RuntimeError, match="must have a's shape"):
        extension.scale_shift_sum(a, torch.zeros(2, 3, 5), torch.zeros(3, 3), True)
    with pytest.raises(RuntimeError, match='affine must be a contiguous float32 CPU tensor of 9 values'):
        extension.scale_shift_sum(a, a, torch.zeros(3, 2), True)
