"""The sequence and CIFAR-10 blocks' dropout (smpconv_models/layers/dropout.py): CPU masks from 16-bit lanes."""
import pytest
import timm
import torch

import smpconv_models  # noqa: F401  registers the models
from smpconv_models.layers.dropout import Dropout


def scale_of(p: float) -> float:
    """The inverse of the keep probability the lanes draw: p rounded to a multiple of 2^-16."""
    return 65536 / (65536 - round(p * 65536))


@pytest.mark.parametrize('p', [0.1, 0.5, 0.9])
def test_every_lane_keeps_elements_with_probability_one_minus_p(p):
    """Each 64-bit draw gives four lanes, and each lane position keeps 1 - p of its elements (a lane from the
    draws' sign bits alone would keep all or none)."""
    torch.manual_seed(0)
    out = Dropout(p).train()(torch.ones(4 * 250_000))
    kept = (out != 0).view(-1, 4).double()
    # binomial: 250,000 elements per lane position, standard deviation <= 0.001; 5 of them
    torch.testing.assert_close(kept.mean(0), torch.full((4,), 1 - p, dtype=torch.float64), rtol=0, atol=5e-3)


@pytest.mark.parametrize('shape', [(3, 7, 5), (1,), (0, 4), (2, 3, 4, 5)])
def test_kept_elements_are_scaled_and_gradients_follow_the_mask(shape):
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    out = Dropout(0.2).train()(x)
    keep = out != 0
    assert out.shape == x.shape
    torch.testing.assert_close(out, x.detach() * keep * scale_of(0.2), rtol=0, atol=0)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, keep * torch.tensor(scale_of(0.2)), rtol=0, atol=0)


def test_gradcheck_and_the_expectation():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    dropout = Dropout(0.3).train()

    def with_one_mask(t):
        torch.manual_seed(1)
        return dropout(t)
    assert torch.autograd.gradcheck(with_one_mask, (x,))
    assert torch.autograd.gradgradcheck(with_one_mask, (x,))
    torch.manual_seed(2)
    # the scale is exact for the drawn keep probability: the mean of 10^6 kept-or-dropped ones is 1 within
    # 5 standard deviations (sqrt(p / (1 - p) / n) = 6.5e-4)
    assert abs(dropout(torch.ones(10 ** 6, dtype=torch.float64)).mean().item() - 1) < 3.3e-3


def test_seeded_masks_repeat_and_eval_p0_p1():
    x = torch.randn(100)
    dropout = Dropout(0.5).train()
    torch.manual_seed(3)
    first = dropout(x)
    torch.manual_seed(3)
    assert torch.equal(dropout(x), first)
    assert torch.equal(Dropout(1.).train()(x), torch.zeros_like(x))
    assert Dropout(0.).train()(x) is x
    assert dropout.eval()(x) is x


def test_sequence_and_cifar_blocks_use_it():
    for name in ('smpconv_tcn_smnist', 'smpconv_resnet_cifar10'):
        model = timm.create_model(name)
        assert all(isinstance(block.drop, Dropout) for block in model.blocks), name


def test_scripted_and_traced_models_record_pytorchs_dropout():
    """TorchScript, FX (timm's own suite scripts and traces the CIFAR-10 model) record F.dropout."""
    dropout = Dropout(0.5).train()
    scripted, traced = torch.jit.script(dropout), torch.fx.symbolic_trace(dropout)
    assert 'dropout' in traced.code
    x = torch.ones(1000)
    for recorded in (scripted, traced):
        kept = recorded(x)
        assert set(kept.unique().tolist()) <= {0., 2.} and 0 < (kept != 0).sum() < 1000
