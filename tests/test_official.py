"""Exactness against the authors' code: the official reference data and checkpoint layouts."""
import argparse
import copy
import hashlib

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import smpconv_models
from smpconv_models.official import convert_official_state_dict, official_model_args
from smpconv_models.smp import SMPKernel, kernel_grid
from smpconv_models.models import SMPConvNet, checkpoint_filter_fn

from official_checkpoints import manifest_state_dict, official_kwargs, save_official_checkpoint

TINY_WEIGHTS = 'smpconv_tiny_ref_weights.safetensors'


@pytest.fixture(scope='module')
def reference(official_dir, tiny_ref_config):
    for name, digest in tiny_ref_config['sha256'].items():
        path = official_dir / tiny_ref_config['files'][name]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f'{path} differs from the reference'
    return load_file(official_dir / tiny_ref_config['files']['io'])


@pytest.fixture(scope='module')
def tiny_kwargs(tiny_ref_config):
    return tiny_ref_config['constructor_kwargs']


@pytest.fixture(scope='module')
def official_state_dict(official_dir):
    return load_file(official_dir / TINY_WEIGHTS)


@pytest.fixture(scope='module')
def tiny_model(official_dir, tiny_kwargs):
    return smpconv_models.from_official(official_dir / TINY_WEIGHTS, **tiny_kwargs).eval()


@pytest.mark.parametrize('suffix, atol', [
    ('', 1e-5),  # the config's float32 tolerance for the same math, |logits| ~ 1
    ('_rect', 1e-4),  # and for the rectangular input, |logits| ~ 20
])
@torch.no_grad()
def test_logits_and_features_match_official(tiny_model, reference, suffix, atol):
    x = reference['input' + suffix]
    torch.testing.assert_close(tiny_model(x), reference['logits' + suffix], rtol=0, atol=atol)
    features = {'stem': tiny_model.stem(x)}
    _, stages = tiny_model.forward_intermediates(x)
    features.update({f'stage{i}': f for i, f in enumerate(stages)})
    assert len(features) == 5
    for name, feature in features.items():
        # features reach |x| ~ 100 before the final norm: the logits' float32 tolerance, 10x wider
        torch.testing.assert_close(feature, reference[f'feat{suffix}.{name}'], rtol=0, atol=10 * atol)


@torch.no_grad()
def test_every_dense_kernel_matches_official(tiny_model, reference):
    kernels = {k[len('kernel.'):]: v for k, v in reference.items() if k.startswith('kernel.')}
    assert len(kernels) == 5
    for name, expected in kernels.items():
        # identical here; 1e-6 leaves room for another BLAS's summation order (|K| < 10, float32 eps 1.2e-7)
        torch.testing.assert_close(tiny_model.get_submodule(name).points(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize('suffix', ['', '_rect'])
@torch.no_grad()
def test_float64_logits_match_official_float64(tiny_model, reference, suffix):
    model = copy.deepcopy(tiny_model).double()
    # the official float64 run kept its float32 grid buffer: sample on that grid too, and only float64
    # rounding is left between the two (|logits| <= 22, float64 eps 2.2e-16, some 1e3 operations deep)
    for m in model.modules():
        if isinstance(m, SMPKernel):
            m.set_grid(torch.stack([c.expand(m.kernel_size) for c in kernel_grid(list(m.kernel_size))]))
    logits = model(reference['input' + suffix].double())
    torch.testing.assert_close(logits, reference[f'logits{suffix}_fp64'], rtol=0, atol=1e-12)


@pytest.mark.parametrize('variant', ['smpconv_t', 'smpconv_b'])
def test_official_layouts_map_onto_ours(variant):
    converted = convert_official_state_dict(manifest_state_dict(variant))
    ours = SMPConvNet(**official_model_args(**official_kwargs(variant)), device='meta').state_dict()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    registered = timm.create_model(variant, device='meta').state_dict()
    assert {k: tuple(v.shape) for k, v in registered.items()} == {k: tuple(v.shape) for k, v in ours.items()}


@pytest.fixture(scope='module')
def official_t_checkpoint(tmp_path_factory):
    """A full-size official SMPConv-T checkpoint with random weights, its EMA weights different."""
    return save_official_checkpoint(tmp_path_factory.mktemp('official') / 'SMPConv_T.pth.tar', 'smpconv_t')


def test_create_model_loads_official_checkpoint_file(official_t_checkpoint):
    path, ema = official_t_checkpoint
    model = timm.create_model('smpconv_t', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    expected = smpconv_models.from_official(path, **official_kwargs('smpconv_t')).state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(loaded[name], expected[name], rtol=0, atol=0, msg=name)
    # the EMA weights are the ones loaded
    torch.testing.assert_close(model.stem[0].conv.weight, ema['stem.0.conv.weight'], rtol=0, atol=0)
    torch.testing.assert_close(
        model.stages[0].blocks[0].large_kernel.smp.conv.points.radii,
        ema['stages.0.blocks.0.large_kernel.smp.conv.radius'].flatten(), rtol=0, atol=0)


def test_checkpoint_filter_passes_native_state_dicts_through():
    model = timm.create_model('smpconv_mobile31', device='meta')
    state_dict = model.state_dict()
    filtered = checkpoint_filter_fn(state_dict, model)
    assert filtered.keys() == state_dict.keys()
    assert all(filtered[k] is state_dict[k] for k in state_dict)


def test_fine_tuning_loads_every_weight_but_the_classifier(tmp_path):
    """timm drops the classifier for another class count and then loads with strict=False: any other missing
    weight would keep its random value, with only a log line to say so."""
    source = timm.create_model('smpconv_nano', num_classes=1000)
    weights = source.state_dict()
    save_file(weights, tmp_path / 'full.safetensors')
    incomplete = {k: v for k, v in weights.items() if not k.startswith('stages.1.blocks.0.pw1.')}
    save_file(incomplete, tmp_path / 'incomplete.safetensors')

    def fine_tune(name, **kwargs):
        return timm.create_model('smpconv_nano', pretrained=True, num_classes=10,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / name)), **kwargs)

    model = fine_tune('full.safetensors')
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items() if not k.startswith('head.fc'))
    with pytest.raises(ValueError, match=r'missing keys: stages\.1\.blocks\.0\.pw1\.conv\.weight, '
                                         r'stages\.1\.blocks\.0\.pw1\.bn\.weight'):
        fine_tune('incomplete.safetensors')
    extra = {**weights, 'stages.9.extra.weight': torch.zeros(1)}
    save_file(extra, tmp_path / 'extra.safetensors')
    with pytest.raises(ValueError, match=r'unexpected keys: stages\.9\.extra\.weight'):
        fine_tune('extra.safetensors')
    fine_tune('incomplete.safetensors', pretrained_strict=False)  # timm's own flag still allows it


def test_drifted_official_grid_is_kept(official_state_dict, tiny_kwargs, reference):
    # timm's EMA averages the official grid buffer too; the published EMA checkpoints carry a drifted grid
    key = 'stages.0.blocks.0.large_kernel.smp.conv.kernel_coord'
    drifted = dict(official_state_dict)
    drifted[key] = drifted[key] + 1e-4 * torch.randn(drifted[key].shape, generator=torch.Generator().manual_seed(0))
    model = smpconv_models.from_official(drifted, **tiny_kwargs).eval()
    points = model.stages[0].blocks[0].large_kernel.smp.conv.points
    assert points.grid is not None
    # every other layer's grid is exact and stays implicit
    assert sum(m.grid is not None for m in model.modules() if isinstance(m, SMPKernel)) == 1
    prefix = 'stages.0.blocks.0.large_kernel.smp.conv.'
    expected = _official_make_kernels(
        drifted[prefix + 'weight_coord'], drifted[prefix + 'radius'], drifted[prefix + 'weights'], drifted[key])
    # float32 kernel against the official computation in float64: |K| < 10, 240 terms
    torch.testing.assert_close(points().detach().double(), expected, rtol=0, atol=1e-5)
    # and the drift survives a round trip through this package's own state dict
    reloaded = SMPConvNet(**official_model_args(**tiny_kwargs)).eval()
    reloaded.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(reference['input']), model(reference['input']), rtol=0, atol=0)


def _official_make_kernels(weight_coord, radius, weights, kernel_coord):
    """The authors' SMPConv.make_kernels, step by step in float64, on their tensor layouts."""
    weight_coord, radius, weights, kernel_coord = (t.double() for t in (weight_coord, radius, weights, kernel_coord))
    num_points, size = weight_coord.shape[1], kernel_coord.shape[-1]
    diff = weight_coord.unsqueeze(-2) - kernel_coord.reshape(1, 2, -1).transpose(1, 2)  # [1, P, k*k, 2]
    diff = diff.transpose(2, 3).reshape(1, num_points, 2, size, size)
    interp = torch.relu(1 - diff.abs().sum(dim=2) / radius)  # [1, P, k, k]
    kernels = (weights @ interp.reshape(1, num_points, -1)).reshape(1, -1, size, size)[0]
    return kernels.permute(0, 2, 1).flip(1)


def test_from_official_takes_state_dicts_and_checkpoints(official_state_dict, tiny_kwargs, tiny_model,
                                                         reference, tmp_path):
    path = tmp_path / 'checkpoint.pth'
    checkpoint = {'state_dict': {}, 'state_dict_ema': official_state_dict, 'args': argparse.Namespace(lr=4e-3)}
    torch.save(checkpoint, path)
    for source in (official_state_dict, checkpoint, path):
        model = smpconv_models.from_official(source, **tiny_kwargs).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(reference['input']), tiny_model(reference['input']), rtol=0, atol=0)


@torch.no_grad()
def test_sync_batchnorm_conversion_keeps_the_model(tiny_model, reference):
    # timm's converter keeps the activations that timm's norm layers carry (torch's would drop them)
    converted = timm.layers.convert_sync_batchnorm(copy.deepcopy(tiny_model)).eval()
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    torch.testing.assert_close(converted(reference['input']), tiny_model(reference['input']), rtol=0, atol=0)


def test_official_checkpoint_adapts_to_other_classes_and_channels(official_t_checkpoint):
    path, ema = official_t_checkpoint
    model = timm.create_model(
        'smpconv_t', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=10, in_chans=1)
    assert model.get_classifier().weight.shape == (10, 768)
    # timm sums the RGB filters of the first conv for a grayscale input
    torch.testing.assert_close(
        model.stem[0].conv.weight, ema['stem.0.conv.weight'].sum(dim=1, keepdim=True), rtol=1e-6, atol=0)
    torch.testing.assert_close(model.stem[1].conv.weight, ema['stem.1.conv.weight'], rtol=0, atol=0)


class _Payload:
    """Unpickling this object runs code: it writes a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


def test_pickles_needing_code_execution_need_trust(official_state_dict, tiny_kwargs, tmp_path):
    marker = tmp_path / 'code-ran'
    path = tmp_path / 'untrusted.pth'
    torch.save({'state_dict_ema': official_state_dict, 'args': argparse.Namespace(), 'hook': _Payload(str(marker))},
               path)
    with pytest.raises(ValueError, match=r'\(io\.open\).*trust_pickle=True'):
        smpconv_models.from_official(path, **tiny_kwargs)
    assert not marker.exists()
    smpconv_models.from_official(path, trust_pickle=True, **tiny_kwargs)
    assert marker.exists()


def test_unreadable_files_are_reported(official_dir, tiny_kwargs, tmp_path):
    data = (official_dir / TINY_WEIGHTS).read_bytes()
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='truncated or corrupt'):
        smpconv_models.from_official(truncated, **tiny_kwargs)
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint' * 64)
    with pytest.raises(ValueError, match='truncated or corrupt'):
        smpconv_models.from_official(corrupt, **tiny_kwargs)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        smpconv_models.from_official(tmp_path / 'missing.pth', **tiny_kwargs)


def test_checkpoints_that_do_not_fit_name_their_keys(official_state_dict, tiny_kwargs):
    incomplete = {k: v for k, v in official_state_dict.items() if k != 'stages.1.blocks.1.pw1.conv.weight'}
    incomplete['stages.1.blocks.1.extra.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match=r'missing keys: stages\.1\.blocks\.1\.pw1\.conv\.weight.*'
                                         r'unexpected keys: stages\.1\.blocks\.1\.extra\.weight'):
        smpconv_models.from_official(incomplete, **tiny_kwargs)
    with pytest.raises(ValueError, match=r'does not fit the model: .*shapes that differ \(checkpoint, model\): '
                                         r'stem.0.conv.weight \(16, 3, 3, 3\) \(8, 3, 3, 3\)'):
        smpconv_models.from_official(official_state_dict, **{**tiny_kwargs, 'channels': [8, 32, 64, 128]})
    native = timm.create_model('smpconv_mobile31').state_dict()
    with pytest.raises(ValueError, match='not in the official SMPConv layout'):
        smpconv_models.from_official(native, large_kernel_sizes=[31, 29, 27, 13], layers=[2] * 4,
                                     channels=[64, 128, 256, 320])
    with pytest.raises(TypeError, match='small_kernel'):
        smpconv_models.from_official(official_state_dict, small_kernel=5, **tiny_kwargs)
    with pytest.raises(ValueError, match='out_indices'):
        smpconv_models.from_official(official_state_dict, **{**tiny_kwargs, 'out_indices': (0, 1)})
