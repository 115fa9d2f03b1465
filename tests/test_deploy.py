"""Deployment: re-parameterised inference, cached kernels in eval mode, compile, export."""
import copy

import numpy as np
import onnxruntime
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import reparameterize_model

import smpconv_models  # noqa: F401
import smpconv_models.smp as smp
from smpconv_models.layers import SMPLargeKernelConv
from smpconv_models.smp import SMPKernel


def random_batchnorm_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """As timm's fusion test does: BN statistics and affine parameters far from their initial values."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5, generator=generator)
                m.running_var.uniform_(0.5, 2., generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.normal_(0, 0.3, generator=generator)
    return model.eval()


@pytest.fixture(scope='module', params=['smpconv_nano', 'smpconv_mobile31'])
def trained(request):
    torch.manual_seed(0)
    return random_batchnorm_statistics(timm.create_model(request.param, num_classes=10))


@pytest.fixture(scope='module')
def inputs():
    return torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_reparameterized_model_computes_the_same(trained, inputs):
    fused = reparameterize_model(trained)
    # float32, some 30 layers deep: the summation order of the merged kernels and folded norms changes
    torch.testing.assert_close(fused(inputs), trained(inputs), rtol=0, atol=2e-5)
    # one depthwise convolution per large kernel, no kernel generation, only the final norm left
    assert not any(isinstance(m, SMPKernel) for m in fused.modules())
    assert all(m.fused is not None and m.smp is None and m.small_conv is None
               for m in fused.modules() if isinstance(m, SMPLargeKernelConv))
    assert [n for n, m in fused.named_modules() if isinstance(m, torch.nn.BatchNorm2d)] == ['norm']
    # idempotent
    torch.testing.assert_close(reparameterize_model(fused)(inputs), fused(inputs), rtol=0, atol=0)
    # intermediates and TorchScript
    _, expected = trained.forward_intermediates(inputs)
    _, intermediates = fused.forward_intermediates(inputs)
    for a, b in zip(intermediates, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
    torch.testing.assert_close(torch.jit.script(fused)(inputs), fused(inputs), rtol=0, atol=1e-6)


@torch.no_grad()
def test_models_build_in_fused_form_and_load_fused_weights(trained, inputs, tmp_path):
    fused = reparameterize_model(trained)
    name = trained.pretrained_cfg['architecture']
    save_file(fused.state_dict(), tmp_path / 'fused.safetensors')
    built = timm.create_model(name, inference_mode=True, pretrained=True, pretrained_cfg_overlay=dict(
        file=str(tmp_path / 'fused.safetensors'), num_classes=10), num_classes=10).eval()
    torch.testing.assert_close(built(inputs), fused(inputs), rtol=0, atol=0)


@torch.no_grad()
def test_fused_backbones(inputs):
    torch.manual_seed(0)
    backbone = random_batchnorm_statistics(timm.create_model('smpconv_nano', features_only=True))
    expected = backbone(inputs)
    fused = reparameterize_model(backbone)
    for a, b in zip(fused(inputs), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5)


class _CountSampling:
    """Counts how often SMP kernels are sampled."""

    def __init__(self, monkeypatch):
        self.count = 0
        sample = smp.smp_kernel

        def counting(*args, **kwargs):
            self.count += 1
            return sample(*args, **kwargs)
        monkeypatch.setattr(smp, 'smp_kernel', counting)


def test_eval_mode_samples_kernels_once_and_never_serves_a_stale_one(monkeypatch, inputs):
    torch.manual_seed(0)
    model = timm.create_model('smpconv_nano', num_classes=10).eval()
    layers = sum(isinstance(m, SMPKernel) for m in model.modules())
    samples = _CountSampling(monkeypatch)

    def infer():
        with torch.no_grad():
            return model(inputs)

    first = infer()
    assert samples.count == layers
    torch.testing.assert_close(infer(), first, rtol=0, atol=0)
    assert samples.count == layers  # kernel generation costs nothing the second time

    # a training step changes the points: the next inference samples again, and agrees with a fresh model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(inputs).logsumexp(1).mean().backward()
    optimizer.step()
    model.eval()
    stepped = infer()
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, SMPKernel):
            m._cache_key = None
    with torch.no_grad():
        torch.testing.assert_close(stepped, reference(inputs), rtol=0, atol=0)
    assert not torch.equal(stepped, first)

    # load_state_dict of other weights
    other = timm.create_model('smpconv_nano', num_classes=10).eval()
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(infer(), other(inputs), rtol=0, atol=0)

    # another dtype
    model.to(torch.float64)
    with torch.no_grad():
        assert model(inputs.double()).dtype == torch.float64

    # in eval mode with autograd on, kernels stay differentiable (nothing cached is reused)
    model.zero_grad()
    model(inputs.double()).sum().backward()
    assert all(m.positions.grad is not None for m in model.modules() if isinstance(m, SMPKernel))


@pytest.mark.parametrize('parameter', ['weights', 'positions', 'radii'])
def test_changes_through_data_are_never_missed(trained, inputs, parameter):
    """EMA helpers, pruning tools and user scripts change weights in place through `.data`, which leaves a
    tensor's version counter and storage as they were: what the eval-mode kernels were sampled from is compared
    value for value."""
    model = copy.deepcopy(trained)
    with torch.no_grad():
        before = model(inputs)
        for m in model.modules():
            if isinstance(m, SMPKernel):
                getattr(m, parameter).data.mul_(0.5)
        after = model(inputs)
        fresh = timm.create_model(model.pretrained_cfg['architecture'], num_classes=10).eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(after, fresh(inputs), rtol=0, atol=0)
    assert (after - before).abs().max() > 1e-3


@pytest.mark.parametrize('fuse', [False, True])
def test_torch_compile_sees_no_graph_break(fuse, inputs):
    model = timm.create_model('smpconv_nano', num_classes=10).eval()
    model = reparameterize_model(model) if fuse else model
    with torch.no_grad():
        assert torch._dynamo.explain(model)(inputs).graph_break_count == 0
        compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
        torch.testing.assert_close(compiled(inputs), model(inputs), rtol=1e-5, atol=1e-5)


def test_channels_last_and_bfloat16_autocast(inputs):
    torch.manual_seed(0)
    model = reparameterize_model(random_batchnorm_statistics(timm.create_model('smpconv_nano', num_classes=10)))
    with torch.no_grad():
        expected = model(inputs)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(inputs.to(memory_format=torch.channels_last)), expected, rtol=0, atol=1e-4)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(inputs)
    assert low.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits of mantissa: the logits agree in direction, not in the last digits
    assert torch.nn.functional.cosine_similarity(low.float(), expected).min() > 0.99


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')  # shape checks, constant at a traced size
@pytest.mark.parametrize('name, shape', [('smpconv_nano', (2, 3, 96, 128)), ('smpconv_nano_cc', (2, 3, 96, 128)),
                                         ('smpconv_tcn_smnist', (2, 1, 784)), ('smpconv_resnet_cifar10', (2, 3, 32, 32))])
def test_jit_trace_records_pytorch_operations_that_follow_the_points(name, shape, tmp_path):
    """torch.jit.trace, which docs/resizing.md suggests for saving a model, records every family (ImageNet, with
    continuous resizing, sequence, CIFAR-10) with PyTorch's own operations (it cannot record the package's: their
    size lists are not traced), so that the saved file loads and runs without the package; and with the kernels
    sampled from the points inside the graph, not a box read from the points' values while tracing: after the
    points spread, the traced model (which shares the model's parameters) computes what the model now does."""
    torch.manual_seed(0)
    model = random_batchnorm_statistics(timm.create_model(name, num_classes=10))  # logits that show the kernels
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        assert 'smpconv::' not in str(traced.inlined_graph)
        torch.jit.save(traced, tmp_path / 'model.pt')
        before = model(x)
        for m in model.modules():
            if isinstance(m, SMPKernel):
                m.positions.mul_(3.)
                m.radii.mul_(3.)
        after = model(x)
        # float32 logits (up to about 15 once the points have spread): the recorded whole kernels through PyTorch's
        # convolutions and the model's boxes on the package's backends (the FFT, say) differ by the rounding of sums
        # of up to 50,000 terms, a few float32 epsilons relative
        torch.testing.assert_close(torch.jit.load(tmp_path / 'model.pt')(x), before, rtol=5e-5, atol=1e-5)
        torch.testing.assert_close(traced(x), after, rtol=5e-5, atol=1e-5)
    assert (after - before).abs().max() > 1e-3


@pytest.mark.parametrize('fuse', [False, True])
def test_onnx_export_runs_in_onnxruntime(fuse, inputs, tmp_path):
    model = timm.create_model('smpconv_nano', num_classes=10).eval()
    model = reparameterize_model(model) if fuse else model
    torch.onnx.export(model, (inputs,), dynamo=True).save(tmp_path / 'model.onnx')
    session = onnxruntime.InferenceSession(str(tmp_path / 'model.onnx'))
    (output,) = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(output, model(inputs).numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize('fuse', [False, True])
def test_torch_export(fuse, inputs):
    model = timm.create_model('smpconv_nano', num_classes=10).eval()
    model = reparameterize_model(model) if fuse else model
    exported = torch.export.export(model, (inputs,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(inputs), model(inputs), rtol=0, atol=1e-5)
