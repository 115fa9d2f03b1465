"""What only a continuous kernel can do: re-sampling, pictures of the points, the function-fitting claim."""
import builtins
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from timm.models import reparameterize_model

import smpconv_models  # noqa: F401
from smpconv_models import viz
from smpconv_models.layers.imagenet import SMPConv2d
from smpconv_models.smp import round_to_odd
from smpconv_models.ops import depthwise_conv2d
from smpconv_models.smp import SMPKernel

ROOT = Path(__file__).parent.parent


def test_round_to_odd():
    assert [round_to_odd(v) for v in (0.2, 1, 2, 3.9, 14, 62, 26.5)] == [1, 1, 1, 3, 13, 61, 27]


def _smooth_image(size: int) -> torch.Tensor:
    """A smooth function sampled on `size` x `size` points of [0, 1]^2, 4 channels."""
    u = torch.linspace(0, 1, size, dtype=torch.float64)
    v, u = torch.meshgrid(u, u, indexing='ij')
    return torch.stack([torch.sin(2 * u + c) * torch.cos(3 * v - c) for c in range(4)])[None]


@torch.no_grad()
def test_resampled_kernels_keep_the_response_to_an_upsampled_image():
    torch.manual_seed(0)
    conv = SMPConv2d(4, 11, 12, dtype=torch.float64)
    with torch.no_grad():
        conv.points.radii.uniform_(0.8, 1.)  # a kernel smooth at the scale of its 11-node grid
    small, large = _smooth_image(33), _smooth_image(65)  # the same function, twice the pixels
    assert torch.equal(large[..., ::2, ::2], small)
    response = conv(small)
    conv.set_kernel_scale(2.)
    assert conv.kernel_size == [21, 21] and conv.kernel_gain == pytest.approx(1 / 4)
    rescaled = conv(large)[..., ::2, ::2]
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))  # away from the zero padding
    # 11 and 21 nodes are two first-order quadratures of the same smooth product: 0.8% apart here (the
    # error grows with the kernel's detail at the grid scale) ...
    error = (rescaled - response)[inner].abs().max() / response[inner].abs().max()
    assert error < 0.02
    # ... and without the cell-area gain the response is 4x too large
    unscaled = depthwise_conv2d(large, conv.points([21, 21]))[..., ::2, ::2]
    assert (unscaled - response)[inner].abs().max() / response[inner].abs().max() > 2


def test_kernel_scale_keeps_the_parameters_and_loads_any_checkpoint():
    base = timm.create_model('smpconv_nano', num_classes=10)
    scaled = timm.create_model('smpconv_nano', num_classes=10, kernel_scale=1.5)
    scaled.load_state_dict(base.state_dict())
    assert scaled.state_dict().keys() == base.state_dict().keys()
    assert [c.kernel_size for c in scaled.modules() if isinstance(c, SMPConv2d)] == [[47, 47], [43, 43], [41, 41],
                                                                                    [19, 19]]
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():  # in train mode, where batch norm keeps random-init activations at unit scale
        # the same function sampled finer: different responses, and back at scale 1 the same
        assert (scaled.forward_features(x) - base.forward_features(x)).abs().max() > 1e-2
        scaled.set_kernel_scale(1.)
        torch.testing.assert_close(scaled.forward_features(x), base.forward_features(x), rtol=0, atol=0)


@torch.no_grad()
def test_resampled_models_reparameterize():
    torch.manual_seed(0)
    model = timm.create_model('smpconv_nano', num_classes=10, kernel_scale=0.3).eval()  # kernels smaller than 5x5
    x = torch.randn(1, 3, 64, 64)
    fused = reparameterize_model(model)
    torch.testing.assert_close(fused(x), model(x), rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match='no SMP kernels to re-sample'):
        fused.set_kernel_scale(2.)


def test_ablation_variants():
    x, target = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    fixed = timm.create_model('smpconv_nano', num_classes=10, learn_positions=False, learn_radii=False)
    kernels = [m for m in fixed.modules() if isinstance(m, SMPKernel)]
    before = [(k.positions.clone(), k.radii.clone()) for k in kernels]
    optimizer = torch.optim.SGD([p for p in fixed.parameters() if p.requires_grad], lr=0.1)
    torch.nn.functional.cross_entropy(fixed(x), target).backward()
    optimizer.step()
    for kernel, (positions, radii) in zip(kernels, before):
        assert torch.equal(kernel.positions, positions) and torch.equal(kernel.radii, radii)
    dense = timm.create_model('smpconv_nano', num_classes=10, kernel_type='dense').eval()
    assert not any(isinstance(m, SMPKernel) for m in dense.modules())
    assert dense.stages[0].blocks[0].large_kernel.smp.conv.weight.shape == (32, 31, 31)
    with torch.no_grad():
        torch.testing.assert_close(reparameterize_model(dense)(x), dense(x), rtol=0, atol=2e-5)


def test_pictures_of_points_and_receptive_fields(tmp_path):
    model = timm.create_model('smpconv_nano', num_classes=10)
    conv = model.stages[0].blocks[0].large_kernel.smp.conv
    points = viz.plot_points(conv, tmp_path / 'points.png', channels=3)
    fields = viz.plot_receptive_fields(model, tmp_path / 'fields.png')
    with Image.open(points) as image:
        assert image.size[0] > 2 * image.size[1]  # three panels side by side
    with Image.open(fields) as image:
        assert image.size[0] > 3 * image.size[1]  # four stages
    resized = viz.plot_resized_kernel(smpconv_models.SMPContinuousConv2d(2, 5, 8), tmp_path / 'resized.png')
    with Image.open(resized) as image:
        assert image.size[0] > 2 * image.size[1]  # three scales
    assert viz.main(['--model', 'smpconv_nano', '--layer', 'stages.1', '--output', str(tmp_path / 'cli')]) == 0
    assert {p.name for p in (tmp_path / 'cli').iterdir()} == {'points-stages.1.png', 'receptive-fields.png'}
    assert viz.main(['--model', 'smpconv_nano', '--layer', 'stem', '--output', str(tmp_path)]) == 2


def test_pictures_need_matplotlib(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def without_matplotlib(name, *args, **kwargs):
        if name.startswith('matplotlib'):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', without_matplotlib)
    conv = timm.create_model('smpconv_nano').stages[0].blocks[0].large_kernel.smp.conv
    with pytest.raises(ImportError, match=r"pip install 'smpconv-models\[viz\]'"):
        viz.plot_points(conv, tmp_path / 'points.png')


def test_moving_points_fit_better_than_fixed_points():
    """Paper section 4.1, shortened: 204 points on a 51x51 grid, 200 steps instead of 3000."""
    result = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'function_fitting.py'), '--steps', '200',
                             '--json'], capture_output=True, text=True, check=True)
    errors = json.loads(result.stdout)
    assert set(errors) == {'sines', 'chirp'}
    for name, error in errors.items():
        assert math.isfinite(error['moving']) and error['moving'] < error['fixed'], (name, error)
