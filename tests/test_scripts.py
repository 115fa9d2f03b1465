"""The scripts as a new user meets them: what they do without arguments, what --help says, the messages."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

import smpconv_models  # noqa: F401
from smpconv_models import viz
from smpconv_models.training import (Checkpointer, build_eval_parser, build_parser, parse_args,
                                     resolve_training_config)
from smpconv_models.training.config import default_workers
from smpconv_models.training.engine import first_batch_statistics

ROOT = Path(__file__).parent.parent
QUICKSTART = ROOT / 'configs' / 'quickstart.yaml'
sys.path.insert(0, str(ROOT))
import validate  # noqa: E402


def write_run(run_dir: Path, **config_overrides) -> Path:
    """A training run's folder as train_imagenet.py leaves it: config.yaml and the weights files."""
    run_dir.mkdir(parents=True)
    args = parse_args(['--input-size', '3', '32', '32'], default_config=QUICKSTART)
    config = {**resolve_training_config(vars(args), world_size=1).recorded, **config_overrides}
    (run_dir / 'config.yaml').write_text(yaml.safe_dump(config))
    model = timm.create_model(config['model'], num_classes=10, **config['model_kwargs'])
    checkpointer = Checkpointer(run_dir, 1, 'top1', config['model'], config['model_kwargs'])
    checkpointer.save_epoch(0, {'epoch': 1, 'batches_done': 0}, model.state_dict(), model.state_dict(), 10.)
    return run_dir


def test_validate_without_arguments_evaluates_the_latest_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert validate.main([]) == 2
    assert 'nothing to evaluate: no training run in output/train (train one with python train_imagenet.py)' in \
        capsys.readouterr().err
    write_run(tmp_path / 'output' / 'train' / 'older')
    os.utime(tmp_path / 'output' / 'train' / 'older' / 'model.safetensors', (0, 0))
    write_run(tmp_path / 'output' / 'train' / 'latest')
    assert validate.main(['--results-file', 'results.json']) == 0
    out = capsys.readouterr().out
    weights = Path('output/train/latest/model_ema.safetensors')
    assert f'evaluating the latest training run: {weights} (config output/train/latest/config.yaml)' in out
    assert f'smpconv_nano ({weights}) on 200 images of fashion-mnist-subset/validation' in out
    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['input_size'] == [3, 32, 32]  # the run's own resolution


def test_data_loading_workers_follow_the_machine():
    cpus = len(os.sched_getaffinity(0))
    assert default_workers() == min(8, cpus)
    assert build_parser().get_default('workers') == build_eval_parser().get_default('workers') == min(8, cpus)


@pytest.mark.parametrize('argv, dataset', [
    ([], 'fashion-mnist-subset'),  # the quickstart's
    (['--data-dir', '/data/x'], ''),  # a --data-dir means that folder or tar
    (['--data-dir', '/data/x', '--dataset', 'torch/cifar10'], 'torch/cifar10'),
])
def test_a_data_dir_means_that_folder(argv, dataset, tmp_path):
    assert parse_args(argv, default_config=QUICKSTART).dataset == dataset
    config = tmp_path / 'folder.yaml'
    config.write_text('data_dir: /data/y\n')
    assert parse_args(['--config', str(config)]).dataset == ''


def test_help_has_a_line_for_every_flag_and_the_defaults_of_a_plain_run(capsys, monkeypatch):
    monkeypatch.setenv('COLUMNS', '1000')  # unwrapped: argparse wraps a path at its hyphens
    for parser in (build_parser(QUICKSTART), build_eval_parser()):
        assert all(action.help for action in parser._actions), [a.dest for a in parser._actions if not a.help]
    with pytest.raises(SystemExit):
        parse_args(['--help'], default_config=QUICKSTART)
    text = ' '.join(capsys.readouterr().out.split())
    for shown in ('--model MODEL a registered SMPConv model (smpconv_t, smpconv_b, ...) (default: smpconv_nano)',
                  "samples per optimizer update over all processes ('auto': from the number of training series of "
                  "a time-series dataset) (default: 64)",
                  "epochs in all, warm-up included ('auto': from the number of training series of a time-series "
                  "dataset) (default: 20)", f'(default: {QUICKSTART})'):
        assert shown in text, shown
    assert '(default: None)' not in text and text.count(f'(default: {QUICKSTART})') == 1
    with pytest.raises(SystemExit):
        parse_args(['--config', str(ROOT / 'configs' / 'smpconv_t_in1k.yaml'), '--help'])
    assert 'a time-series dataset) (default: 2048)' in ' '.join(
        capsys.readouterr().out.split())


def test_batch_norms_start_from_their_first_batch():
    """PyTorch's placeholder running variance (1) dwarfs the variances of a freshly initialised network (1e-3 to
    1e-2), and after a few dozen updates would still make an evaluated model predict one class everywhere."""
    torch.manual_seed(0)
    model = timm.create_model('smpconv_nano', num_classes=10, kernel_sizes=(9, 7, 5, 3)).train()
    norm = model.stages[1].blocks[0].pw1.bn
    pretrained = model.stages[2].blocks[0].pw1.bn
    pretrained.num_batches_tracked.fill_(100)
    seen = {}
    norm.register_forward_hook(lambda m, inputs, out: seen.setdefault('x', inputs[0].detach()))
    with first_batch_statistics(model):
        model(torch.randn(8, 3, 64, 64))
    x = seen['x']
    torch.testing.assert_close(norm.running_mean, x.mean((0, 2, 3)))
    torch.testing.assert_close(norm.running_var, x.var((0, 2, 3)))
    assert norm.momentum == 0.1 and pretrained.momentum == 0.1
    assert pretrained.running_var.min() > 0.85  # 0.9 x its 1 + 0.1 x a batch's: left to its momentum


def test_unknown_models_get_one_line_everywhere(tmp_path, capsys):
    import train_imagenet
    expected = f"unknown model 'smpconv_tt': one of {', '.join(timm.list_models('smpconv*'))}"
    assert train_imagenet.main(['--model', 'smpconv_tt', '--output', str(tmp_path)]) == 2
    assert validate.main(['--model', 'smpconv_tt']) == 2
    assert viz.main(['--model', 'smpconv_tt']) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f'error: {expected}'] * 3
    result = subprocess.run([sys.executable, '-m', 'smpconv_models.convert', str(tmp_path / 'x.safetensors'),
                             str(tmp_path / 'out'), '--model', 'smpconv_tt'], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == f'error: {expected}'
    with pytest.raises(ValueError, match=expected):
        torch.hub.load(str(ROOT), 'smpconv', 'smpconv_tt', source='local')


def test_every_registered_model_has_a_torch_hub_entry():
    spec = importlib.util.spec_from_file_location('hubconf', ROOT / 'hubconf.py')
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert all(callable(getattr(hubconf, name, None)) for name in timm.list_models('smpconv*'))
    model = torch.hub.load(str(ROOT), 'smpconv_nano', source='local', num_classes=3)
    assert model.pretrained_cfg['architecture'] == 'smpconv_nano' and model.num_classes == 3


def test_viz_without_arguments_says_what_it_draws(tmp_path, monkeypatch, capsys):
    pytest.importorskip('matplotlib')
    monkeypatch.chdir(tmp_path)
    assert viz.main(['--output', 'untrained']) == 0
    assert 'drawing an untrained smpconv_t' in capsys.readouterr().out
    write_run(tmp_path / 'output' / 'train' / 'run')
    assert viz.main(['--output', 'trained', '--layer', 'stages.1']) == 0
    assert 'drawing the latest training run: output/train/run/model_ema.safetensors' in capsys.readouterr().out
    assert (tmp_path / 'trained' / 'points-stages.1.png').exists()
