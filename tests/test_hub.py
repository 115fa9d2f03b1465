"""Pretrained weights end to end, offline: an official checkpoint -> the convert command -> a Hugging Face Hub
cache -> timm.create_model(pretrained=True), torch.hub.load, validate.py; and the publish command."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import huggingface_hub
import pytest
import timm
import torch
from accelerate import Accelerator
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
from PIL import Image
from safetensors.torch import load_file

import smpconv_models  # noqa: F401
from smpconv_models import publish
from smpconv_models.checkpoint import read_checkpoint
from smpconv_models.hub import HUB_ORG
from smpconv_models.models import PAPER_RESULTS
from smpconv_models.training import (create_eval_dataset, create_eval_loader, evaluate, parse_eval_args,
                                     resolve_eval_config)

from official_checkpoints import add_to_hub_cache, save_official_checkpoint

ROOT = Path(__file__).parent.parent
REPO_ID = f'{HUB_ORG}/smpconv_t.in1k'


def convert(*args, cwd=None):
    return subprocess.run([sys.executable, '-m', 'smpconv_models.convert', *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


@pytest.fixture(scope='module')
def official_t(tmp_path_factory):
    return save_official_checkpoint(tmp_path_factory.mktemp('official') / 'SMPConv_T.pth.tar', 'smpconv_t')


@pytest.fixture(scope='module')
def export(official_t, tmp_path_factory):
    """The official checkpoint converted by the project's own command, as a maintainer would."""
    out_dir = tmp_path_factory.mktemp('export') / 'smpconv_t.in1k'
    result = convert(official_t[0], out_dir, '--model', 'smpconv_t')
    assert result.returncode == 0, result.stderr
    return out_dir


@pytest.fixture
def hub_cache(export, tmp_path, monkeypatch):
    """huggingface_hub's cache holding the export as the Hub repo `REPO_ID` (HF_HUB_OFFLINE=1 in conftest)."""
    add_to_hub_cache(tmp_path / 'hub', REPO_ID, export)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub'))  # for subprocesses
    return tmp_path / 'hub'


def assert_same_weights(model, expected, skip=()):
    loaded = model.state_dict()
    assert set(loaded) - set(skip) == set(expected) - set(skip)
    for key in expected:
        if key not in skip:
            torch.testing.assert_close(loaded[key], expected[key], rtol=0, atol=0, msg=key)


def test_export_files(export, official_t):
    assert sorted(p.name for p in export.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((export / 'config.json').read_text())
    assert config['architecture'] == 'smpconv_t' and config['num_classes'] == 1000
    assert config['pretrained_cfg']['license'] == 'mit' and config['pretrained_cfg']['first_conv'] == 'stem.0.conv'
    weights = load_file(export / 'model.safetensors')
    # the EMA weights, converted to this package's layout
    torch.testing.assert_close(weights['stem.0.conv.weight'], official_t[1]['stem.0.conv.weight'], rtol=0, atol=0)
    card = (export / 'README.md').read_text()
    for expected in ('license: mit', 'library_name: timm', f"hf-hub:{REPO_ID}", 'import smpconv_models',
                     'arxiv.org/abs/2304.02330', '82.5%', '26.71 M parameters', '5.707 G MACs', '@inproceedings'):
        assert expected in card, expected
    assert card.index('import smpconv_models') < card.index('timm.create_model')


class _Payload:
    """Unpickling this object runs code: it writes a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


def test_convert_unpickles_only_what_it_must(official_t, tmp_path):
    """The authors' files (weights and an argparse.Namespace) need no trust; a file that runs code does, and
    then the global that made it necessary is named."""
    marker = tmp_path / 'code-ran'
    crafted = tmp_path / 'crafted.pth.tar'
    checkpoint = read_checkpoint(official_t[0])  # the restricted reader: the authors' file needs no trust
    torch.save({**checkpoint, 'hook': _Payload(str(marker))}, crafted)
    result = convert(crafted, tmp_path / 'out', '--model', 'smpconv_t')
    assert result.returncode == 2 and not marker.exists() and not (tmp_path / 'out').exists()
    assert '(io.open)' in result.stderr and '--trust-pickle' in result.stderr and 'arbitrary code' in result.stderr
    result = convert(crafted, tmp_path / 'out', '--model', 'smpconv_t', '--trust-pickle')
    assert result.returncode == 0 and marker.exists()
    assert 'unpickled fully, as trusted, for io.open' in result.stderr


def test_convert_names_keys_that_do_not_fit(official_t, tmp_path):
    result = convert(official_t[0], tmp_path / 'out', '--model', 'smpconv_b')
    assert result.returncode == 2
    assert 'missing keys: stages.2.blocks.16.norm.weight' in result.stderr
    assert 'shapes that differ (checkpoint, model): stem.0.conv.weight (96, 3, 3, 3) (128, 3, 3, 3)' in result.stderr


def test_create_model_pretrained_from_the_hub(hub_cache, export):
    expected = load_file(export / 'model.safetensors')
    assert_same_weights(timm.create_model('smpconv_t', pretrained=True), expected)
    assert_same_weights(timm.create_model('smpconv_t.in1k', pretrained=True), expected)
    assert_same_weights(timm.create_model(f'hf-hub:{REPO_ID}', pretrained=True), expected)


def test_local_copies_load_without_the_hub(export, official_t):
    expected = load_file(export / 'model.safetensors')
    assert_same_weights(timm.create_model(f'local-dir:{export}', pretrained=True), expected)
    for file in (export / 'model.safetensors', official_t[0]):  # our export, or the authors' file itself
        model = timm.create_model('smpconv_t', pretrained=True, pretrained_cfg_overlay=dict(file=str(file)))
        assert_same_weights(model, expected)


def test_torch_hub_load(hub_cache, export):
    model = torch.hub.load(str(ROOT), 'smpconv_t', source='local', pretrained=True)
    assert_same_weights(model, load_file(export / 'model.safetensors'))
    generic = torch.hub.load(str(ROOT), 'smpconv', f'hf-hub:{REPO_ID}', source='local', pretrained=True)
    assert_same_weights(generic, load_file(export / 'model.safetensors'))
    with pytest.raises(ValueError, match="unknown model 'resnet18': one of smpconv_b"):
        torch.hub.load(str(ROOT), 'smpconv', 'resnet18', source='local')


def test_torch_hub_entries_are_the_registry_with_the_papers_accuracies():
    """One entry per registered model (generated, as torch.hub.list finds them: the module's public callables),
    documented from the model's own docstring and the one table of the paper's accuracies."""
    spec = importlib.util.spec_from_file_location('hubconf', ROOT / 'hubconf.py')
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith('_')}
    assert entries == {'smpconv', *timm.list_models('smpconv*')}
    assert hubconf.dependencies == ['torch', 'timm', 'safetensors', 'huggingface_hub']
    for name, paper in PAPER_RESULTS.items():
        assert f'Paper: {paper}.' in getattr(hubconf, name).__doc__
    assert hubconf.smpconv_t.__doc__ == ("SMPConv-T, 26.7M parameters. Paper: 82.5% ImageNet-1k top-1. "
                                         f"pretrained=True: the authors' weights, from {REPO_ID}.")
    assert hubconf.smpconv_resnet_cifar10.__doc__.endswith('Paper: 93% CIFAR-10 (table 1). '
                                                           'pretrained=True: no published weights.')
    assert 'Paper' not in hubconf.smpconv_nano.__doc__  # this package's model, not the paper's
    assert hubconf.smpconv_nano(num_classes=3).num_classes == 3


def test_adapted_heads_inputs_and_backbones(hub_cache, export):
    expected = load_file(export / 'model.safetensors')
    model = timm.create_model('smpconv_t', pretrained=True, num_classes=10)
    assert model.get_classifier().weight.shape == (10, 768)
    assert_same_weights(model, expected, skip=('head.fc.weight', 'head.fc.bias'))
    grayscale = timm.create_model('smpconv_t', pretrained=True, in_chans=1)
    torch.testing.assert_close(grayscale.stem[0].conv.weight, expected['stem.0.conv.weight'].sum(1, keepdim=True))
    backbone = timm.create_model('smpconv_t', pretrained=True, features_only=True, out_indices=(2, 3))
    assert backbone.feature_info.channels() == [384, 768]
    torch.testing.assert_close(backbone.stem_0.conv.weight, expected['stem.0.conv.weight'], rtol=0, atol=0)


def test_unreadable_and_unfitting_weights(export, tmp_path):
    data = (export / 'model.safetensors').read_bytes()
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(data[:len(data) // 3])
    with pytest.raises(ValueError, match='not a readable safetensors file'):
        timm.create_model('smpconv_t', pretrained=True, pretrained_cfg_overlay=dict(file=str(truncated)))
    with pytest.raises(ValueError, match=r'do not fit the model: missing keys: stages\.2\.blocks\.16\.norm\.weight, '
                                         r'.* and \d+ more'):
        timm.create_model('smpconv_b', pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(export / 'model.safetensors')))


def test_unreachable_hub_says_what_to_do(tmp_path, monkeypatch):
    """The repo by name, why it could not be had, and how to load a copy: one message, no wait when offline."""
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'empty'))
    advice = r"\. Load a local copy instead: timm\.create_model\('local-dir:.*pretrained_cfg_overlay=dict\(file="
    with pytest.raises(OSError, match=r'weights of smpconv_b come from the Hugging Face Hub repo '
                                      r'smpconv-models/smpconv_b\.in1k, which is not in this machine\'s Hub cache '
                                      r'\(.*empty\), and offline mode is on \(HF_HUB_OFFLINE=1\)' + advice) as error:
        timm.create_model('smpconv_b', pretrained=True)
    assert error.value.__cause__ is None and error.value.__suppress_context__  # not huggingface_hub's chain

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError('Please check your connection and try again.')

    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(timm.models._hub, 'hf_hub_download', unreachable)
    with pytest.raises(OSError, match=r'repo smpconv-models/smpconv_t\.in1k, which could not be reached \(no network, '
                                      r'or the Hub is blocked\) and is not in the Hub cache \(.*empty\)' + advice):
        timm.create_model('smpconv_t.in1k', pretrained=True)

    def missing(*args, **kwargs):
        raise RepositoryNotFoundError('404 Client Error', response=mock.Mock(status_code=404, headers={}))

    monkeypatch.setattr(timm.models._hub, 'hf_hub_download', missing)
    with pytest.raises(OSError, match=r'smpconv_t\.in1k, which does not exist on the Hub \(or is private\)' + advice):
        timm.create_model('smpconv_t', pretrained=True)
    with pytest.raises(OSError, match=r'the pretrained weights file of smpconv_t, .*nowhere\.safetensors, could not be '
                                      r'read: no such file'):
        timm.create_model('smpconv_t', pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / 'nowhere.safetensors')))
    with pytest.raises(RuntimeError, match='No pretrained weights exist'):
        timm.create_model('smpconv_mobile31', pretrained=True)


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    """A tiny ImageNet-like folder: validation/<class>/<image>, 3 classes of 2 images."""
    root = tmp_path_factory.mktemp('imagenet')
    generator = torch.Generator().manual_seed(0)
    for label in ('n01440764', 'n01443537', 'n01484850'):
        (root / 'validation' / label).mkdir(parents=True)
        for i in range(2):
            pixels = (torch.rand(96, 128, 3, generator=generator) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / 'validation' / label / f'{i}.png')
    return root


def test_validate_script_matches_a_direct_evaluation(hub_cache, image_folder, tmp_path):
    results_file = tmp_path / 'results.json'
    argv = ['--model', 'smpconv_t', '--pretrained', '--data-dir', str(image_folder), '-b', '4', '--workers', '0']
    result = subprocess.run([sys.executable, str(ROOT / 'validate.py'), *argv, '--results-file', str(results_file)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'smpconv_t (pretrained) on 6 images' in result.stdout
    results = json.loads(results_file.read_text())

    data = resolve_eval_config(vars(parse_eval_args(argv))).data
    model = timm.create_model('smpconv_t', pretrained=True).eval()
    data_config = timm.data.resolve_data_config(model=model)
    loader = create_eval_loader(create_eval_dataset(data, 'validation', 4), data_config, 4, data, 1, 0,
                                torch.device('cpu'))
    expected = evaluate(model, loader, Accelerator(cpu=True))
    assert (results['num_images'], results['input_size'], results['top1']) == (6, [3, 224, 224], expected['top1'])
    assert results['loss'] == pytest.approx(expected['loss'], rel=1e-6)
    assert results['top5'] == expected['top5']


@pytest.mark.parametrize('argv, message', [
    (['--model', 'resnet50'], "unknown model 'resnet50'"),
    (['--model', 'smpconv_nano', '--data-dir', '/nowhere'], 'dataset folder or tar not found'),
    (['--model', 'smpconv_nano', '--checkpoint', '/nowhere/model.safetensors'], 'checkpoint file not found'),
])
def test_validate_script_errors(argv, message, capsys):
    sys.path.insert(0, str(ROOT))
    import validate
    assert validate.main(argv) == 2
    assert message in capsys.readouterr().err


def test_validate_refuses_a_checkpoint_that_does_not_fit(export, capsys):
    sys.path.insert(0, str(ROOT))
    import validate
    assert validate.main(['--model', 'smpconv_b', '--checkpoint', str(export / 'model.safetensors')]) == 2
    assert 'does not fit the model' in capsys.readouterr().err


def test_publish_uploads_safetensors_only(export, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, 'create_repo',
                        lambda self, repo_id, **kw: calls.append(('create', repo_id, kw)))
    monkeypatch.setattr(huggingface_hub.HfApi, 'upload_folder',
                        lambda self, **kw: calls.append(('upload', kw)) or 'url')
    assert publish.main([str(export), REPO_ID]) == 0
    assert calls[0] == ('create', REPO_ID, {'repo_type': 'model', 'private': False, 'exist_ok': True})
    upload = calls[1][1]
    assert upload['repo_id'] == REPO_ID and Path(upload['folder_path']) == export
    assert upload['allow_patterns'] == ['*.safetensors', 'config.json', 'README.md']

    unsafe = tmp_path / 'unsafe'
    unsafe.mkdir()
    for name in ('model.safetensors', 'config.json'):
        (unsafe / name).write_bytes((export / name).read_bytes())
    torch.save({}, unsafe / 'pytorch_model.bin')
    calls.clear()
    assert publish.main([str(unsafe), REPO_ID]) == 2
    assert not calls
    problems = publish.check_export(unsafe)
    assert problems == ['README.md is missing', 'pickled files are not published: pytorch_model.bin (remove them)']


def test_validate_retries_with_a_smaller_batch_when_memory_runs_out(monkeypatch, capsys):
    sys.path.insert(0, str(ROOT))
    import validate
    batch_sizes = []

    def evaluate_once_out_of_memory(model, loader, accelerator, channels_last, num_classes=None):
        batch_sizes.append(loader.batch_size)
        if len(batch_sizes) == 1:
            raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')
        per_class = {'class_top1': [50.] * num_classes, 'class_count': [20] * num_classes} if num_classes else {}
        return {'loss': 1., 'top1': 50., 'top5': 90., **per_class}

    monkeypatch.setattr(validate, 'evaluate', evaluate_once_out_of_memory)
    assert validate.main(['--model', 'smpconv_nano', '-b', '64', '--workers', '0']) == 0
    assert batch_sizes[0] == 64 and batch_sizes[1] < 64
    assert f'retrying with batch size {batch_sizes[1]}' in capsys.readouterr().out
