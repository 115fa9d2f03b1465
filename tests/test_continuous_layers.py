"""The continuous layers' API: TorchScript, the full form (`out_channels`, CKConv's kernel) and the alignment picture.

The formula itself is tested in test_resize.py; the full form here against its direct float64 evaluation there.
"""
import io
import types
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F

import smpconv_models
from smpconv_models import CKConv, SMPContinuousConv1d, SMPContinuousConv2d, viz
from smpconv_models.layers.continuous_blocks import ContinuousConvNormAct
from smpconv_models.layers.imagenet import SMPConv2d

from test_resize import _direct_full, _randomise

# Scripted and eager layers run the same formula, partly through different convolution backends (TorchScript
# records PyTorch's own): in float64 their sums of a few hundred terms differ by rounding, ~1e-16 relative.
SCRIPT_TOLERANCE = {'rtol': 1e-12, 'atol': 1e-12}
SCALES = [1., 0.5, 0.73]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _scripted(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch.jit.script is deprecated, and still what timm's tests call
        warnings.simplefilter('ignore', FutureWarning)
        return torch.jit.script(module)


# ---- TorchScript ----------------------------------------------------------------------------------------------

LAYERS = {
    '2d depthwise': lambda: SMPContinuousConv2d(3, 5, 6, dtype=torch.float64),
    '2d full': lambda: SMPContinuousConv2d(3, 5, 6, out_channels=4, dtype=torch.float64),
    '1d depthwise': lambda: SMPContinuousConv1d(3, 7, 6, dtype=torch.float64),
    '1d full': lambda: SMPContinuousConv1d(3, 7, 6, out_channels=4, causal=False, dtype=torch.float64),
}


@pytest.mark.parametrize('name', LAYERS)
@torch.no_grad()
def test_scripted_layers_match_eager(name):
    layer = LAYERS[name]()
    _randomise(layer.points, 1)
    x = torch.randn(2, 3, *((20, 22) if name.startswith('2d') else (40,)), dtype=torch.float64)
    scripted = _scripted(layer)
    torch.testing.assert_close(scripted(x), layer(x), **SCRIPT_TOLERANCE)
    for scale in SCALES:
        torch.testing.assert_close(scripted(x, scale), layer(x, scale), **SCRIPT_TOLERANCE)
    if name.startswith('2d'):
        torch.testing.assert_close(scripted(x, (0.73, 1.37)), layer(x, (0.73, 1.37)), **SCRIPT_TOLERANCE)
        torch.testing.assert_close(scripted(x, size=(7, 30)), layer(x, size=(7, 30)), **SCRIPT_TOLERANCE)


@pytest.mark.parametrize('scale', SCALES)
@torch.no_grad()
def test_scripted_conv_norm_act_matches_eager(scale):
    block = ContinuousConvNormAct(3, 5, 9, scale=scale, dtype=torch.float64).eval()
    _randomise(block.conv.points, 2)
    x = torch.randn(2, 3, 20, 22, dtype=torch.float64)
    torch.testing.assert_close(_scripted(block)(x), block(x), **SCRIPT_TOLERANCE)


@pytest.mark.parametrize('image_size, stem_scale', [(32, 1.), (64, 0.5), (44, 16 / 22)])
@torch.no_grad()
def test_scripted_smpconv_nano_cc_matches_eager(image_size, stem_scale):
    """Trained at 64 px, the model's stem resizes its 16 x 16 ... 22 x 22 maps to 16 x 16: by 1, 1/2, 0.73."""
    model = timm.create_model('smpconv_nano_cc', num_classes=10, img_size=64, dynamic_img_size=True).double().eval()
    x = torch.randn(2, 3, image_size, image_size, dtype=torch.float64)
    assert x.shape[-1] // 2 * stem_scale == pytest.approx(model.stem[-1].size[0])
    torch.testing.assert_close(_scripted(model)(x), model(x), **SCRIPT_TOLERANCE)


def test_a_scripted_layer_resizes_through_python_and_cannot_be_saved():
    scripted = _scripted(SMPContinuousConv2d(3, 5, 6))
    with pytest.raises(RuntimeError, match="Could not export Python function call '_resize_in_python'"), \
            warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit.save is deprecated too
        torch.jit.save(scripted, io.BytesIO())


# ---- the full form ---------------------------------------------------------------------------------------------

def _full(ndim: int, causal: bool = True):
    layer = SMPContinuousConv2d(3, 5, 6, out_channels=4, dtype=torch.float64) if ndim == 2 else \
        SMPContinuousConv1d(3, 5, 6, causal=causal, out_channels=4, dtype=torch.float64)
    _randomise(layer.points, 5)
    return layer


def _as_ckconv(layer, ndim: int):
    """What test_resize's direct formula reads of a CKConv: the points, the dimensions and a bias (none here)."""
    return types.SimpleNamespace(points=layer.points, ndim=ndim, bias=torch.zeros(layer.points.weights.shape[0]))


@pytest.mark.parametrize('ndim, scale', [(2, 0.73), (2, (1.37, 0.5)), (1, 0.73), (1, 1.37)])
@torch.no_grad()
def test_the_full_form_matches_the_formula(ndim, scale):
    """Points per output channel, a value per input channel, eq. (1) normalisation: against the direct float64
    evaluation of the formula (2D 'same', 1D causal), to float64 rounding."""
    layer = _full(ndim)
    x = torch.randn(2, 3, *((7, 8) if ndim == 2 else (23,)), dtype=torch.float64)
    torch.testing.assert_close(layer(x, scale), _direct_full(_as_ckconv(layer, ndim), x, scale),
                               rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_the_full_form_at_scale_one_is_the_convolution_with_its_kernel():
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    layer = _full(2)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.kernel(), padding=2), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer(x, scale=1.), layer(x), rtol=0, atol=0)
    causal = _full(1)
    kernel = causal.points()
    torch.testing.assert_close(causal(x[:, :, 0]), F.conv1d(F.pad(x[:, :, 0], (4, 0)), kernel), rtol=0, atol=1e-12)


@pytest.mark.parametrize('ndim, scale', [(2, 0.73), (2, (1.37, 0.5)), (1, 0.73)])
@torch.no_grad()
def test_ckconv_resize_is_the_full_form(ndim, scale):
    """CKConv's weights load into the full form (the same state-dict keys and kernel), which resizes as CKConv.resize
    does, but for CKConv's bias: one implementation."""
    conv = CKConv(3, 4, 5, 6, ndim=ndim, radius=0.5, position_std=0.4, dtype=torch.float64)
    _randomise(conv.points, 6)
    layer = _full(ndim)
    layer.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, *((7, 8) if ndim == 2 else (23,)), dtype=torch.float64)
    torch.testing.assert_close(layer(x, scale), conv.resize(x, scale), rtol=0, atol=0)


def test_the_full_form_gradients():
    layer = _full(2)
    x = torch.randn(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    names = ('positions', 'radii', 'weights')
    params = [getattr(layer.points, n) for n in names]

    def resized(x, *values):
        state = {f'points.{n}': v for n, v in zip(names, values)}
        return torch.func.functional_call(layer, state, (x,), {'scale': 0.73})
    assert torch.autograd.gradcheck(resized, (x, *params))


def test_the_depthwise_form_keeps_smpconv2ds_parameters():
    depthwise, plain = SMPContinuousConv2d(8, 5, 6), SMPConv2d(8, 5, 6)
    shapes = {name: tuple(value.shape) for name, value in depthwise.state_dict().items()}
    assert shapes == {name: tuple(value.shape) for name, value in plain.state_dict().items()}
    full = SMPContinuousConv2d(8, 5, 6, out_channels=16)
    assert {name: tuple(value.shape) for name, value in full.state_dict().items()} == {
        'points.positions': (16, 6, 2), 'points.radii': (16, 6), 'points.weights': (16, 8, 6)}
    assert full.points.normalize and not depthwise.points.normalize


def test_the_full_form_resizes_from_the_package_api():
    layer = smpconv_models.SMPContinuousConv2d(3, 5, 6, out_channels=8)
    x = torch.randn(2, 3, 20, 20)
    assert layer(x, scale=0.5).shape == (2, 8, 10, 10)
    assert layer(x, size=(7, 30)).shape == (2, 8, 7, 30)
    sequence = smpconv_models.SMPContinuousConv1d(3, 9, 6, out_channels=8)
    assert sequence(torch.randn(2, 3, 100), scale=0.73).shape == (2, 8, 73)


# ---- the alignment picture --------------------------------------------------------------------------------------

def _symmetric_layer(kernel_size: int) -> SMPContinuousConv2d:
    """One point at the centre of radius 1: a kernel symmetric about both axes, whose response is centred exactly."""
    layer = SMPContinuousConv2d(2, kernel_size, 1)
    with torch.no_grad():
        layer.points.positions.zero_()
        layer.points.radii.fill_(1.)
        layer.points.weights.fill_(1.)
    return layer


def test_bright_pixel_responses():
    """A 3x3 stride-2 box puts the pixel p = 21 at p / 2 = 10.5, a quarter pixel past interpolation's 10.25; the
    continuous layer puts it within the 0.05 px of test_resize's alignment test (7 taps), after every halving."""
    position = 21
    responses = viz.bright_pixel_responses(_symmetric_layer(7), position, depth=3, in_size=64)
    assert [tuple(strided.shape) for strided, _ in responses] == [(32, 32), (16, 16), (8, 8)]
    assert viz.centroid(responses[0][0]) == (10.5, 10.5)
    for halvings, (_, continuous) in enumerate(responses, 1):
        assert continuous.shape == (64 // 2 ** halvings,) * 2
        expected = (position + 0.5) / 2 ** halvings - 0.5
        assert max(abs(c - expected) for c in viz.centroid(continuous)) < 0.05


def test_plot_alignment(tmp_path):
    pytest.importorskip('matplotlib')
    path = viz.plot_alignment(_symmetric_layer(5), tmp_path / 'alignment.png', depth=2)
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size < 150_000
