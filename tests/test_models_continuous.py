"""SMPConvNet with continuous SMP downsampling (downsample='smp', smpconv_nano_cc): timm's model API, the deploy
form, and resize factors that keep every stage at its trained map size for any input size; smpconv_nano_ci (the
image resized first) and smpconv_nano_gradual (maps shrinking by 2^(1/2) between groups)."""
import re

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.models import reparameterize_model
from torch._dynamo.testing import CompileCounterWithBackend

import smpconv_models  # noqa: F401  registers the models
from smpconv_models.layers.continuous_blocks import ContinuousConvNormAct
from smpconv_models.layers.imagenet import FusableConvNormAct
from smpconv_models.smp import SMPKernel
from test_deploy import random_batchnorm_statistics

TRAINED_MAPS = [(16, 16), (8, 8), (4, 4), (2, 2)]  # of a model built for 64 px images


def create(name: str = 'smpconv_nano_cc', seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, num_classes=10, **kwargs).eval()


def map_sizes(model: torch.nn.Module, height: int, width: int) -> list:
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 3, height, width), intermediates_only=True)
    return [tuple(m.shape[-2:]) for m in maps]


def halving_layers(model: torch.nn.Module) -> list:
    return [model.stem[3]] + [stage.downsample[1] for stage in model.stages[1:]]


def test_nano_cc_builds_with_continuous_halving_layers():
    model = create()
    assert isinstance(model.stem[0], FusableConvNormAct) and model.stem[0].conv.stride == (2, 2)
    for layer in halving_layers(model):
        assert isinstance(layer, ContinuousConvNormAct)
        assert layer.conv.points.kernel_size == (5, 5) and layer.conv.points.num_points == 9
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        logits = model(x)
    assert logits.shape == (2, 10)
    assert [tuple(m.shape[1:]) for m in maps] == [(32, 16, 24), (64, 8, 12), (128, 4, 6), (256, 2, 3)]
    torch.testing.assert_close(model.forward_head(final), logits, rtol=0, atol=0)
    assert model.feature_info == create('smpconv_nano').feature_info
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)

    features = timm.create_model('smpconv_nano_cc', features_only=True, out_indices=(1, 3)).eval()
    assert features.feature_info.channels() == [64, 256] and features.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        assert [tuple(m.shape) for m in features(x)] == [(2, 64, 8, 12), (2, 256, 2, 3)]


def test_conv_downsampling_is_todays_model():
    nano, conv = create('smpconv_nano'), create('smpconv_nano', downsample='conv')
    cc = create()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), nano(x), rtol=0, atol=0)
    assert list(conv.state_dict()) == list(nano.state_dict())
    assert all(isinstance(layer, FusableConvNormAct) for layer in halving_layers(nano))
    # the continuous model differs only in its halving layers' kernels: points instead of a dense kernel
    halving = ['stem.3'] + [f'stages.{i}.downsample.1' for i in range(1, 4)]
    dense = {f'{layer}.conv.weight' for layer in halving}
    points = {f'{layer}.conv.points.{p}' for layer in halving for p in ('positions', 'radii', 'weights')}
    assert set(cc.state_dict()) == set(nano.state_dict()) - dense | points


@pytest.mark.parametrize('size', [64, 96, 128, 192, (96, 192), (48, 80)])
def test_every_stage_sees_its_trained_map_size(size):
    height, width = (size, size) if isinstance(size, int) else size
    dynamic = create(img_size=64, dynamic_img_size=True)
    assert map_sizes(dynamic, height, width) == TRAINED_MAPS
    fixed = create(img_size=64)
    fixed.set_input_size(img_size=(height, width))
    assert map_sizes(fixed, height, width) == TRAINED_MAPS
    # both resize the stem map by the same factor (the set one within an ulp: floor(n s) must give the size)
    x = torch.randn(2, 3, height, width)
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), dynamic(x), rtol=1e-6, atol=1e-6)


def test_resize_factors_follow_the_input_size():
    model = create(img_size=64)
    assert model.stem[3].scale == (0.5, 0.5)
    model.set_input_size(img_size=128)
    assert model.stem[3].scale == (0.25, 0.25)  # 1/2 * 64/128
    assert model.stem.img_size == (128, 128) and model._traits['img_size'] == (128, 128)
    assert map_sizes(model, 256, 256) == [(32, 32), (16, 16), (8, 8), (4, 4)]  # a fixed factor scales with the input
    model.set_input_size(img_size=(64, 128))
    assert model.stem[3].scale == (0.5, 0.25)
    model.set_input_size()  # None: as it is
    assert model.stem[3].scale == (0.5, 0.25)
    model.set_input_size(img_size=64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), create(img_size=64)(x), rtol=0, atol=0)
    # the trained size defaults to the pretrained config's input size
    assert create(pretrained_cfg_overlay=dict(input_size=(3, 64, 64)), dynamic_img_size=True).stem.grid_size == (16, 16)
    assert create().stem.img_size == (224, 224)
    # strided convolutions have no factor to set: set_input_size only records the size
    nano = create('smpconv_nano')
    nano.set_input_size(img_size=128)
    assert map_sizes(nano, 128, 128) == [(32, 32), (16, 16), (8, 8), (4, 4)]


def test_an_image_too_small_is_a_one_line_error_naming_its_size():
    model = create(img_size=64)
    with pytest.raises(ValueError, match=r'^a 20 x 24 image is smaller than this network accepts, set up for 64 x 64 '
                                         r'images: at least 31 x 31') as error:
        model(torch.randn(1, 3, 20, 24))
    assert '\n' not in str(error.value)
    assert map_sizes(model, 31, 31)[-1] == (1, 1)
    assert map_sizes(create(img_size=64, dynamic_img_size=True), 20, 24) == TRAINED_MAPS


@torch.no_grad()
def test_compiled_a_graph_per_image_size_and_the_same_error_for_one_too_small():
    """torch.compile takes an image size that changed between calls as a symbol, which the image-size check's floors
    could not take (the second size failed to compile): a graph per size instead, as the continuous layers'
    geometry makes anyway, each computing what the model does; a too-small image is still the one-line error."""
    model = create(img_size=64)
    torch._dynamo.reset()  # other tests' graphs of SMPConvNet.forward would count toward its recompile limit
    counter = CompileCounterWithBackend('aot_eager')
    compiled = torch.compile(model, backend=counter)
    sizes = [(64, 64), (80, 96), (72, 64)]
    for height, width in sizes:
        x = torch.randn(2, 3, height, width)
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=1e-6)  # float32 logits of order 0.1-1
    assert counter.frame_count == len(sizes)
    with pytest.raises(ValueError, match=r'^a 20 x 24 image is smaller than this network accepts'):
        compiled(torch.randn(1, 3, 20, 24))


@pytest.mark.parametrize('kwargs, message', [
    (dict(downsample='bilinear'), r"^downsample takes 'conv' \(strided convolutions\) or 'smp'"),
    (dict(img_size=0), r'^img_size takes a positive integer or a pair of them \(height, width\), got 0$'),
    (dict(img_size=(64,)), r'^img_size takes a positive integer or a pair of them'),
    (dict(img_size=64.), r'^img_size takes a positive integer or a pair of them'),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        timm.create_model('smpconv_nano_cc', **kwargs)
    assert '\n' not in str(error.value)
    with pytest.raises(ValueError, match=r"^dynamic_img_size needs downsample='smp'"):
        timm.create_model('smpconv_nano', dynamic_img_size=True)
    with pytest.raises(ValueError, match=r'^img_size takes a positive integer'):
        create().set_input_size(img_size=(0, 64))


@torch.no_grad()
@pytest.mark.parametrize('dynamic', [False, True])
def test_reparameterized_model_computes_the_same(dynamic, tmp_path):
    trained = random_batchnorm_statistics(create(img_size=64, dynamic_img_size=dynamic))
    fused = reparameterize_model(trained)
    assert [n for n, m in fused.named_modules() if isinstance(m, torch.nn.BatchNorm2d)] == ['norm']
    assert all(layer.is_folded for layer in halving_layers(fused))
    for size in (64, 96):
        trained.set_input_size(img_size=size)
        fused.set_input_size(img_size=size)
        x = torch.randn(2, 3, size, size)
        torch.testing.assert_close(fused(x), trained(x), rtol=0, atol=2e-5)
    # the continuous layers stay SMP kernels (their sampling depends on the scale); the large kernels are dense
    assert sum(isinstance(m, SMPKernel) for m in fused.modules()) == 4
    torch.testing.assert_close(reparameterize_model(fused)(x), fused(x), rtol=0, atol=0)  # idempotent
    save_file(fused.state_dict(), tmp_path / 'fused.safetensors')
    built = create(inference_mode=True, img_size=64, dynamic_img_size=dynamic, pretrained=True,
                   pretrained_cfg_overlay=dict(file=str(tmp_path / 'fused.safetensors'), num_classes=10))
    built.set_input_size(img_size=96)
    torch.testing.assert_close(built(x), fused(x), rtol=0, atol=0)


@torch.no_grad()
def test_state_dict_round_trip(tmp_path):
    model = random_batchnorm_statistics(create(seed=1))
    save_file(model.state_dict(), tmp_path / 'model.safetensors')
    loaded = create(seed=2)
    loaded.load_state_dict(load_file(tmp_path / 'model.safetensors'))
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


# smpconv_nano_ci: a continuous layer resizes the image itself before the stem

def stem_input_sizes(model: torch.nn.Module, height: int, width: int) -> tuple:
    """The size of the map the stem's first strided convolution receives for an image of height x width."""
    seen = []
    handle = model.stem[1].register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    map_sizes(model, height, width)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize('size', [48, 64, 96, 128, 192, (96, 192)])
def test_input_resizing_stem_gives_every_layer_the_trained_scale(size):
    height, width = (size, size) if isinstance(size, int) else size
    dynamic = create('smpconv_nano_ci', img_size=64, dynamic_img_size=True)
    assert isinstance(dynamic.stem[0], ContinuousConvNormAct) and dynamic.stem[0].conv.points.kernel_size == (5, 5)
    assert stem_input_sizes(dynamic, height, width) == (64, 64)
    assert map_sizes(dynamic, height, width) == TRAINED_MAPS
    fixed = create('smpconv_nano_ci', img_size=64)
    fixed.set_input_size(img_size=(height, width))
    assert fixed.stem[0].scale == (64 / height, 64 / width) and fixed.stem[-1].scale == 0.5
    assert stem_input_sizes(fixed, height, width) == (64, 64)
    x = torch.randn(2, 3, height, width)
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), dynamic(x), rtol=1e-6, atol=1e-6)


def test_input_resizing_stem_keeps_the_layer_names_of_the_stem():
    ci, cc = create('smpconv_nano_ci'), create()
    # the image's resizing layer comes first, on its 3 channels; the stem's layers follow, one index on
    shifted = {re.sub(r'^stem\.(\d)', lambda m: f'stem.{int(m[1]) + 1}', k) for k in cc.state_dict()}
    assert set(ci.state_dict()) - shifted == {f'stem.0.{k}' for k in ci.stem[0].state_dict()}
    assert ci.stem[0].conv.points.weights.shape[0] == 3 and ci.pretrained_cfg['first_conv'] == 'stem.1.conv'
    with torch.no_grad():
        assert map_sizes(ci, 64, 96) == [(16, 24), (8, 12), (4, 6), (2, 3)]  # built for 224: scale 1, maps follow
    with pytest.raises(ValueError, match=r"^resize_input needs downsample='smp'"):
        timm.create_model('smpconv_nano', resize_input=True)


def test_input_resizing_stem_too_small_image_is_a_one_line_error():
    model = create('smpconv_nano_ci', img_size=64)
    with pytest.raises(ValueError, match=r'^a 20 x 24 image is smaller than this network accepts, set up for 64 x 64 '
                                         r'images: at least 31 x 31'):
        model(torch.randn(1, 3, 20, 24))
    assert map_sizes(model, 31, 31)[-1] == (1, 1)


# smpconv_nano_gradual: maps shrink by 2^(1/2) between 7 groups

GRADUAL_CHANNELS = [32, 45, 64, 91, 128, 181, 256]
GRADUAL_MAPS_64 = [(16, 16), (11, 11), (8, 8), (5, 5), (4, 4), (2, 2), (2, 2)]  # floor(16 * 2^(-i/2))
GRADUAL_MAPS_224 = [(56, 56), (39, 39), (28, 28), (19, 19), (14, 14), (9, 9), (7, 7)]


def test_gradual_groups_shrink_by_the_square_root_of_two():
    model = create('smpconv_nano_gradual')
    assert [info['num_chs'] for info in model.feature_info] == GRADUAL_CHANNELS
    assert [info['reduction'] for info in model.feature_info] == [4, 5.66, 8, 11.31, 16, 22.63, 32]
    with torch.no_grad():
        final, maps = model.forward_intermediates(torch.randn(2, 3, 224, 224))
    assert [tuple(m.shape[1:]) for m in maps] == [(c, *hw) for c, hw in zip(GRADUAL_CHANNELS, GRADUAL_MAPS_224)]
    assert final.shape == (2, 256, 7, 7)
    # the continuous transitions resize by 2^(-1/2) where flooring gives the map, by the factor to it elsewhere
    scales = [stage.downsample[1].scale for stage in model.stages[1:]]
    assert scales == pytest.approx([2 ** -0.5, 28 / 39, 2 ** -0.5, 14 / 19, 2 ** -0.5, 7 / 9], rel=1e-15)
    assert all(isinstance(stage.downsample[1], ContinuousConvNormAct) for stage in model.stages[1:])


@pytest.mark.parametrize('size', [48, 64, 128, (96, 192)])
def test_gradual_groups_keep_their_trained_maps(size):
    height, width = (size, size) if isinstance(size, int) else size
    dynamic = create('smpconv_nano_gradual', img_size=64, dynamic_img_size=True)
    assert map_sizes(dynamic, height, width) == GRADUAL_MAPS_64
    fixed = create('smpconv_nano_gradual', img_size=64)
    fixed.set_input_size(img_size=(height, width))
    assert map_sizes(fixed, height, width) == GRADUAL_MAPS_64


def test_gradual_features_only():
    features = timm.create_model('smpconv_nano_gradual', features_only=True, img_size=64).eval()
    assert features.feature_info.channels() == GRADUAL_CHANNELS
    with torch.no_grad():
        maps = features(torch.randn(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, c, *hw) for c, hw in zip(GRADUAL_CHANNELS, GRADUAL_MAPS_64)]
    some = timm.create_model('smpconv_nano_gradual', features_only=True, out_indices=(1, 3), img_size=64).eval()
    assert some.feature_info.reduction() == [5.66, 11.31]
    with torch.no_grad():
        assert [tuple(m.shape) for m in some(torch.randn(1, 3, 64, 64))] == [(1, 45, 11, 11), (1, 91, 5, 5)]


def test_stage_scale_needs_continuous_layers():
    with pytest.raises(ValueError, match=r"^stage_scale 0.7 needs downsample='smp'"):
        timm.create_model('smpconv_nano', stage_scale=0.7)
    # smpconv_nano_cc's transitions halve, exactly as before stage_scale
    assert all(stage.downsample[1].scale == 0.5 for stage in create(img_size=(48, 80)).stages[1:])


@torch.no_grad()
@pytest.mark.parametrize('name', ['smpconv_nano_ci', 'smpconv_nano_gradual'])
@pytest.mark.parametrize('dynamic', [False, True])
def test_new_variants_reparameterize(name, dynamic):
    trained = random_batchnorm_statistics(create(name, img_size=64, dynamic_img_size=dynamic))
    fused = reparameterize_model(trained)
    assert [n for n, m in fused.named_modules() if isinstance(m, torch.nn.BatchNorm2d)] == ['norm']
    for size in (64, 96):
        trained.set_input_size(img_size=size)
        fused.set_input_size(img_size=size)
        x = torch.randn(2, 3, size, size)
        # float32: folding a batch norm multiplies its scale into the kernel before the sum instead of after, a
        # rounding of ~1e-7 relative per layer; over ~20 layers on outputs of order 1, the test of smpconv_nano_cc
        torch.testing.assert_close(fused(x), trained(x), rtol=0, atol=2e-5)
