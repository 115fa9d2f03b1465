"""smpconv_models.checkpoint: one way to read a file, to pick its weights and to build a model from it."""
import sys
from pathlib import Path

import pytest
import timm
import torch

import smpconv_models
from smpconv_models.checkpoint import read_checkpoint, recorded_model, select_state_dict
from smpconv_models.factory import create_from_checkpoint
from smpconv_models.training import Checkpointer

from official_checkpoints import save_official_checkpoint

ROOT = Path(__file__).parent.parent
RUN_ARGS = {'kernel_sizes': [9, 7, 5, 5]}


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """The files a training run of smpconv_nano with --model-kwargs writes: weights and a training state."""
    run_dir = tmp_path_factory.mktemp('run')
    torch.manual_seed(0)
    model = timm.create_model('smpconv_nano', num_classes=10, **RUN_ARGS)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    checkpointer = Checkpointer(run_dir, keep=1, metric='top1', model_name='smpconv_nano', model_args=RUN_ARGS)
    state = dict(model_name='smpconv_nano', model=model.state_dict(), model_ema=ema, epoch=1, batches_done=0,
                 config={'model': 'smpconv_nano', 'model_kwargs': RUN_ARGS})
    checkpointer.save_epoch(0, state, model.state_dict(), ema, 50.)
    return run_dir


def assert_weights(model, expected):
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.mark.parametrize('name', ['model.safetensors', 'model_ema.safetensors', 'last.pth'])
def test_a_run_file_says_which_model_it_holds(run_dir, name):
    model = create_from_checkpoint(run_dir / name)
    assert model.pretrained_cfg['architecture'] == 'smpconv_nano' and model.num_classes == 10
    assert model.stages[1].blocks[0].large_kernel.smp.conv.kernel_size == [7, 7]
    expected = select_state_dict(read_checkpoint(run_dir / name))
    assert_weights(model, expected)
    if name == 'last.pth':  # a training state: its EMA weights first, as for any training checkpoint
        assert_weights(create_from_checkpoint(run_dir / name, use_ema=False), read_checkpoint(run_dir / name)['model'])
        assert not torch.equal(expected['head.fc.bias'], read_checkpoint(run_dir / name)['model']['head.fc.bias'])


def test_the_caller_overrides_what_is_recorded(run_dir):
    assert recorded_model(read_checkpoint(run_dir / 'model.safetensors'), run_dir / 'model.safetensors') == \
        ('smpconv_nano', RUN_ARGS)
    model = create_from_checkpoint(run_dir / 'model.safetensors', 'smpconv_nano', kernel_scale=2.)
    assert model.stages[1].blocks[0].large_kernel.smp.conv.kernel_size == [13, 13]
    with pytest.raises(ValueError, match=r'does not fit the model: .*shapes that differ'):
        create_from_checkpoint(run_dir / 'model.safetensors', 'smpconv_mobile31')
    with pytest.raises(ValueError, match="unknown model 'resnet50': one of smpconv_b, "):
        create_from_checkpoint(run_dir / 'model.safetensors', 'resnet50')


def test_files_that_do_not_say_need_a_model_name(tmp_path):
    path, ema = save_official_checkpoint(tmp_path / 'SMPConv_T.pth.tar', 'smpconv_t')
    with pytest.raises(ValueError, match=r'SMPConv_T\.pth\.tar does not say which model it holds: name the model'):
        create_from_checkpoint(path)
    model = create_from_checkpoint(path, 'smpconv_t')  # the authors' layout, their EMA weights
    torch.testing.assert_close(model.stem[0].conv.weight, ema['stem.0.conv.weight'], rtol=0, atol=0)


def test_validate_and_viz_build_the_model_a_run_wrote(run_dir, tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    import validate
    from smpconv_models import viz
    weights = run_dir / 'model_ema.safetensors'
    assert validate.main(['--checkpoint', str(weights), '--input-size', '3', '32', '32', '--workers', '0']) == 0
    assert f'smpconv_nano ({weights}) on 200 images of fashion-mnist-subset' in capsys.readouterr().out
    pytest.importorskip('matplotlib')
    assert viz.main(['--checkpoint', str(weights), '--layer', 'stages.1', '--output', str(tmp_path)]) == 0
    assert (tmp_path / 'points-stages.1.png').exists() and (tmp_path / 'receptive-fields.png').exists()
    assert smpconv_models.create_from_checkpoint is create_from_checkpoint


@pytest.mark.parametrize('case, model_name', [('tcn_smnist_tiny', 'smpconv_tcn_smnist'),
                                              ('resnet_cifar10_tiny', 'smpconv_resnet_cifar10')])
def test_the_authors_sequence_and_cifar10_checkpoints_point_to_from_official_ckconv(case, model_name, capsys):
    """Their architecture is in their config groups, not in the file: one line says how to load them, wherever a
    checkpoint is loaded (named model or not, validate.py, timm's pretrained loading)."""
    path = ROOT / 'tests' / 'data' / 'official_seq' / f'{case}_weights.safetensors'
    message = (r"is an authors' sequence or CIFAR-10 checkpoint \(SeqData_TCN / Img_ResNet\), .* load it with "
               r'smpconv_models\.from_official_ckconv\(checkpoint, in_channels=\.\.\., out_channels=\.\.\., '
               r'net=\.\.\., kernel=\.\.\., conv=\.\.\.\)')
    for name in (None, model_name):
        with pytest.raises(ValueError, match=f'^{path}.* {message}') as error:
            create_from_checkpoint(path, name)
        assert '\n' not in str(error.value)
    with pytest.raises(ValueError, match=message):
        smpconv_models.load_checkpoint(timm.create_model(model_name), path)
    with pytest.raises(ValueError, match=message):
        timm.create_model('smpconv_t', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    sys.path.insert(0, str(ROOT))
    import validate
    assert validate.main(['--checkpoint', str(path), '--workers', '0']) == 2
    assert 'from_official_ckconv' in capsys.readouterr().err
