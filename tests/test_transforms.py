"""torch.func transforms and forward-mode AD on the models: they compute with PyTorch's own operations there
(`ops.dispatch.transforming`), since the package's operators have no batching or forward-mode rules."""
from functools import partial

import pytest
import timm
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, stack_module_state, vmap

import smpconv_models  # noqa: F401  registers the models
from smpconv_models.ops import causal_conv1d, conv2d_same, conv_taps, depthwise_conv2d
from smpconv_models.ops.dispatch import transforming

# one model of each family: the TCN's long causal kernels, the ResNet's 2-D boxes, the ImageNet network's depthwise
# kernels, and continuous resizing layers
MODELS = [('smpconv_tcn_smnist', (3, 1, 60)), ('smpconv_resnet_cifar10', (3, 3, 12, 12)),
          ('smpconv_nano', (3, 3, 64, 64)), ('smpconv_nano_cc', (3, 3, 64, 64))]

# float64 throughout: both sides compute the same sums in another order (FFTs and this package's backends against
# PyTorch's direct convolutions), which float64 leaves at ~1e-13 of the values; 1e-8 fails any wrong gradient
TOLERANCE = dict(rtol=1e-8, atol=1e-10)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=4).double().eval()


def _assert_per_sample_gradients_match_autograd(model: torch.nn.Module, x: torch.Tensor) -> None:
    """vmap(grad) of each sample's loss against autograd's gradients, one sample at a time."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, sample):
        return functional_call(model, p, (sample[None],)).square().sum()

    per_sample = vmap(grad(loss), (None, 0))(params, x)
    for i in range(x.shape[0]):
        expected = torch.autograd.grad(loss(dict(model.named_parameters()), x[i]), list(model.parameters()))
        for (key, got), want in zip(per_sample.items(), expected):
            torch.testing.assert_close(got[i], want, **TOLERANCE, msg=lambda m: f'{key}: {m}')


@pytest.mark.parametrize('name, shape', MODELS)
def test_per_sample_gradients_match_autograd(name, shape):
    _assert_per_sample_gradients_match_autograd(_model(name), torch.randn(shape, dtype=torch.float64))


@pytest.mark.parametrize('name, shape', MODELS)
def test_vmap_over_samples_matches_the_batch(name, shape):
    model = _model(name)
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(vmap(model)(x[:, None])[:, 0], model(x), **TOLERANCE)


def test_per_sample_gradients_in_training_mode():
    """Training mode: batch norms without running statistics (PyTorch's `replace_all_batch_norm_modules_`, as
    torch.func asks), each sample normalised by its own statistics over its steps."""
    model = _model('smpconv_tcn_smnist').train()
    torch.func.replace_all_batch_norm_modules_(model)
    _assert_per_sample_gradients_match_autograd(model, torch.randn(3, 1, 60, dtype=torch.float64))


def test_ensemble_by_vmap_over_parameters():
    """Stacked parameters of several TCNs under vmap: the points' kernels are then sampled for each model."""
    models = [timm.create_model('smpconv_tcn_smnist', num_classes=4).double().eval() for _ in range(3)]
    params, buffers = stack_module_state(models)
    x = torch.randn(2, 1, 50, dtype=torch.float64)
    outputs = vmap(lambda p, b: functional_call(models[0], (p, b), (x,)))(params, buffers)
    for model, got in zip(models, outputs):
        torch.testing.assert_close(got, model(x), **TOLERANCE)


@pytest.mark.parametrize('name, shape', MODELS)
def test_forward_mode_ad_is_the_adjoint_of_reverse_mode(name, shape):
    """<J v, u> = <v, J^T u>: forward-mode AD's tangent against autograd's gradient, in training mode (batch
    statistics) too; without dropout, whose masks PyTorch's dropout draws under the transform and this package's
    outside it."""
    model = _model(name).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.
    x, tangent = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    with fwAD.dual_level():
        assert transforming()
        jvp = fwAD.unpack_dual(model(fwAD.make_dual(x, tangent))).tangent
    assert not transforming()
    cotangent = torch.randn_like(jvp)
    x.requires_grad_()
    (vjp,) = torch.autograd.grad(model(x), x, cotangent)
    torch.testing.assert_close((jvp * cotangent).sum(), (tangent * vjp).sum(), **TOLERANCE)


@pytest.mark.parametrize('op, x_shape, w_shape', [
    (causal_conv1d, (2, 3, 40), (4, 3, 40)), (conv2d_same, (2, 3, 10, 10), (4, 3, 9, 9)),
    (partial(conv_taps, pad=[4, 1]), (2, 3, 10, 10), (4, 3, 7, 5)), (depthwise_conv2d, (2, 3, 12, 12), (3, 11, 11))])
def test_operators_under_jvp_and_vmap(op, x_shape, w_shape):
    x, w = torch.randn(x_shape, dtype=torch.float64), torch.randn(w_shape, dtype=torch.float64)
    dx, dw = torch.randn_like(x), torch.randn_like(w)
    out, tangent = torch.func.jvp(op, (x, w), (dx, dw))
    torch.testing.assert_close(out, op(x, w), **TOLERANCE)
    torch.testing.assert_close(tangent, op(dx, w) + op(x, dw), **TOLERANCE)  # bilinear
    torch.testing.assert_close(vmap(op, (0, None))(x[:, None], w)[:, 0], op(x, w), **TOLERANCE)

