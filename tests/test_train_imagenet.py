"""train_imagenet.py end to end: the quickstart, two processes against one, a killed run resumed, bad input."""
import csv
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
import timm
import torch
import yaml
from accelerate import Accelerator
from PIL import Image
from safetensors.torch import load_file

import smpconv_models  # noqa: F401
from smpconv_models.datasets import FashionMNISTSubset
from smpconv_models.ops import ENV_VAR, choices, clear_choices, dispatch
from smpconv_models.ops.depthwise import BACKENDS
from smpconv_models.ops.ffts import FFTS
from smpconv_models.training import (ConfigError, create_eval_loader, evaluate, load_training_state, parse_args,
                                     resolve_training_config)
from smpconv_models.training.data import RandomBatchScale

ROOT = Path(__file__).parent.parent
SCRIPT = str(ROOT / 'train_imagenet.py')
sys.path.insert(0, str(ROOT))
import train_imagenet  # noqa: E402
import validate  # noqa: E402

# small and fast: 32x32 inputs, a batch of 8 (125 steps per epoch)
FAST = ['--input-size', '3', '32', '32', '--global-batch-size', '8']


def run(args, tmp_path, launcher=(sys.executable,), **kwargs):
    return subprocess.run([*launcher, SCRIPT, '--output', str(tmp_path), *args], capture_output=True, text=True,
                          cwd=tmp_path, **kwargs)


def read_summary(run_dir: Path):
    with open(run_dir / 'summary.csv') as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_quickstart_shortened(tmp_path):
    result = run(['--epochs', '2', '--experiment', 'quickstart'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'top-1 on the 200 held-out images' in result.stdout
    run_dir = tmp_path / 'quickstart'
    config = yaml.safe_load((run_dir / 'config.yaml').read_text())
    assert config['dataset'] == 'fashion-mnist-subset' and config['model'] == 'smpconv_nano'
    rows = read_summary(run_dir)
    assert [row['epoch'] for row in rows] == ['0', '1']
    assert float(rows[1]['train_loss']) < float(rows[0]['train_loss']) < 2.3  # it learns (chance: ln 10 = 2.30)
    # and evaluates so: batch norms start from their first batch's statistics, not from PyTorch's placeholder
    # variance of 1, which left exactly 10% (one class for every image) here. Two epochs reached 18.5% in one
    # clean run and more than 20% in the others (runs differ by the backends each times and chooses, which round
    # differently); 15% is 2.4 standard errors above chance on 200 images
    assert float(rows[1]['eval_top1']) > 15
    # the resolved config is itself a config that repeats the run
    repeated = parse_args(['--config', str(run_dir / 'config.yaml')])
    assert vars(repeated) == {**config, 'config': str(run_dir / 'config.yaml'), 'resume': ''}
    assert {'model.safetensors', 'model_ema.safetensors', 'last.pth', 'model_best.safetensors'} <= \
        {p.name for p in run_dir.iterdir()}
    # the saved weights load into timm and evaluate to what the run reported
    resolved = resolve_training_config(vars(repeated), world_size=1)
    assert resolved.recorded == config  # and resolves to the same run
    model = timm.create_model(
        'smpconv_nano', num_classes=10, pretrained=True, **resolved.model.model_kwargs,
        pretrained_cfg_overlay=dict(file=str(run_dir / 'model.safetensors'), num_classes=10))
    data = resolved.data
    data_config = dict(input_size=data.input_size, interpolation=data.interpolation, mean=data.mean, std=data.std,
                       crop_pct=data.crop_pct)
    loader = create_eval_loader(FashionMNISTSubset('validation'), data_config, resolved.batch.batch_size, data, 1, 0,
                                torch.device('cpu'))
    metrics = evaluate(model, loader, Accelerator(cpu=True))
    assert metrics['top1'] == pytest.approx(float(rows[-1]['eval_top1']))
    assert metrics['loss'] == pytest.approx(float(rows[-1]['eval_loss']), rel=1e-5)


@pytest.mark.slow
def test_sequence_quickstart_shortened(tmp_path):
    """The authors' sMNIST TCN on the bundled images read pixel by pixel, one epoch instead of ten."""
    result = run(['--config', str(ROOT / 'configs' / 'quickstart_sequence.yaml'), '--epochs', '1',
                  '--warmup-epochs', '0', '--experiment', 'sequence'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'smpconv_tcn_smnist (0.37M params, 10 classes) on 1000 training images' in result.stdout
    rows = read_summary(tmp_path / 'sequence')
    assert float(rows[0]['eval_top1']) > 30  # chance: 10


@pytest.mark.slow
def test_resumed_run_keeps_its_depthwise_backends(tmp_path, monkeypatch):
    """Backends round differently: a resumed run computes with the ones its run chose, without timing anew."""
    clear_choices()  # the choices of earlier tests in this process (other operators') are not this run's
    recipe = [*FAST, '--warmup-epochs', '0', '--output', str(tmp_path)]
    assert train_imagenet.main([*recipe, '--epochs', '1', '--experiment', 'run']) == 0
    saved = load_training_state(tmp_path / 'run' / 'last.pth')['depthwise_backends']
    # the depthwise convolution's choices, and those of its FFT backend's transforms
    assert len(saved) == 1 and saved[0] and set(saved[0].values()) <= {*BACKENDS, *FFTS.backends}
    clear_choices()

    def no_timing(run, device):
        raise AssertionError('a resumed run timed a depthwise convolution its run had chosen a backend for')

    monkeypatch.setattr(dispatch, 'seconds', no_timing)
    assert train_imagenet.main([*recipe, '--epochs', '2', '--resume', str(tmp_path / 'run')]) == 0
    assert choices() == saved[0]
    clear_choices()


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    # Plain SGD at a small learning rate keeps the weight updates proportional to the gradients (Adam's
    # first updates are +-lr whatever a gradient's size), so float-level differences stay float-level.
    # Mixup is off: it pairs samples within each process's batch.
    recipe = [*FAST, '--max-updates', '2', '--opt', 'momentum', '--lr', '1e-5', '--min-lr', '1e-5',
              '--warmup-epochs', '0', '--model-ema-decay', '0.5', '--mixup', '0', '--cutmix', '0']
    single = run([*recipe, '--experiment', 'one'], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    double = run([*recipe, '--experiment', 'two'], tmp_path,
                 launcher=(sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2'))
    assert double.returncode == 0, double.stderr[-3000:]
    assert '2 process(es) x batch 4' in double.stdout and '1 process(es) x batch 8' in single.stdout
    # metrics are summed over the two processes' halves of the validation set
    for one_row, two_row in zip(read_summary(tmp_path / 'one'), read_summary(tmp_path / 'two'), strict=True):
        assert two_row['eval_top1'] == one_row['eval_top1']
        assert float(two_row['eval_loss']) == pytest.approx(float(one_row['eval_loss']), rel=1e-4)
    for name in ('model.safetensors', 'model_ema.safetensors'):
        one, two = load_file(tmp_path / 'one' / name), load_file(tmp_path / 'two' / name)
        assert one.keys() == two.keys()
        for key in one:
            # Weights move by up to 1e-3 here. Float32 sums in another order (gradient all-reduce, batch
            # statistics over two processes) change them by what float32 rounding is worth in this network's
            # gradients at initialisation, where the batch norms of the 2x2 maps amplify it: up to 6e-3 of a
            # gradient against float64 (measured, in either layout), so up to 6e-6 here (3e-6 seen);
            # unsynchronised batch norm would differ by 2e-2. Running statistics (|x| < 3) are sums over the
            # batch: 5e-4.
            atol = 5e-4 if 'running' in key else 1e-5
            torch.testing.assert_close(two[key], one[key], rtol=0, atol=atol, msg=f'{name}: {key}')


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    # drop path draws from torch's RNG, mixup from numpy's, augmentation from per-sample seeds, each in a worker
    # process; the uninterrupted run is another process, which would time the depthwise backends anew and could
    # choose others, so all runs use one (a resumed run keeps its run's: test_resumed_run_keeps_its_depthwise_backends)
    monkeypatch.setenv(ENV_VAR, 'torch')
    recipe = [*FAST, '--epochs', '2', '--global-batch-size', '32', '--recovery-interval', '5', '--workers', '1',
              '--drop-path', '0.1', '--mixup', '0.8', '--cutmix', '1.0']
    uninterrupted = run([*recipe, '--experiment', 'whole'], tmp_path)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    run_dir = tmp_path / 'killed'
    process = subprocess.Popen([sys.executable, SCRIPT, '--output', str(tmp_path), *recipe, '--experiment', 'killed'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not list(run_dir.glob('recovery-0-*.pth')) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # mid-epoch 0, after its first recovery state
    process.wait()
    assert not (run_dir / 'last.pth').exists(), 'the run ended its first epoch before it was killed'

    resumed = run([*recipe, '--resume', str(run_dir)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ('model.safetensors', 'model_ema.safetensors'):
        whole, continued = load_file(tmp_path / 'whole' / name), load_file(run_dir / name)
        for key in whole:
            torch.testing.assert_close(continued[key], whole[key], rtol=0, atol=0, msg=f'{name}: {key}')
    whole_rows, continued_rows = read_summary(tmp_path / 'whole'), read_summary(run_dir)
    assert [r['eval_top1'] for r in continued_rows] == [r['eval_top1'] for r in whole_rows]
    assert [r['eval_ema_loss'] for r in continued_rows] == [r['eval_ema_loss'] for r in whole_rows]


# ---- elastic and preemptible runs: two CPU processes (gloo) under torchrun --------------------------------------

TORCHRUN = (sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2')
# one epoch of 31 updates, a recovery state every 3, the random draws of drop path and mixup included
ELASTIC = [*FAST, '--epochs', '1', '--warmup-epochs', '0', '--global-batch-size', '32', '--recovery-interval', '3',
           '--workers', '1', '--drop-path', '0.1', '--mixup', '0.8', '--cutmix', '1.0', '--resume', 'auto']
# Every run computes with one depthwise backend (each process would time them, and could choose others). torchrun
# does not share its rendezvous store with the workers' process group: a restarted group would read the
# addresses of the workers it replaced from it and fail to connect (pytorch/pytorch#135712; seen here).
ELASTIC_ENV = {**os.environ, ENV_VAR: 'torch', 'TORCH_DISABLE_SHARE_RDZV_TCP_STORE': '1'}


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory) -> Path:
    """The run of two processes that nothing stopped."""
    output = tmp_path_factory.mktemp('uninterrupted')
    result = run([*ELASTIC, '--experiment', 'whole'], output, launcher=TORCHRUN, env=ELASTIC_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return output / 'whole'


def _workers(torchrun: subprocess.Popen) -> List[int]:
    """The worker processes torchrun started (its children)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = (Path('/proc') / str(torchrun.pid) / 'task' / str(torchrun.pid) / 'children').read_text().split()
        if len(children) == 2:
            return [int(pid) for pid in children]
        time.sleep(0.05)
    raise AssertionError('torchrun did not start its two workers')


def _start_and_wait_for_a_recovery_state(args, output: Path, run_dir: Path) -> subprocess.Popen:
    torchrun = subprocess.Popen([*args, SCRIPT, '--output', str(output), *ELASTIC, '--experiment', run_dir.name],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=output,
                                env=ELASTIC_ENV)
    deadline = time.monotonic() + 180
    while not list(run_dir.glob('recovery-0-*.pth')) and torchrun.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert torchrun.poll() is None, 'the run ended before its first recovery state'
    return torchrun


def _assert_same_weights(run_dir: Path, uninterrupted: Path) -> None:
    for name in ('model.safetensors', 'model_ema.safetensors'):
        whole, continued = load_file(uninterrupted / name), load_file(run_dir / name)
        for key in whole:
            torch.testing.assert_close(continued[key], whole[key], rtol=0, atol=0, msg=f'{name}: {key}')
    # the resumed epoch's training loss covers the batches after the resume only; its evaluation is the same
    without_train_loss = lambda rows: [{k: v for k, v in row.items() if k != 'train_loss'} for row in rows]
    assert without_train_loss(read_summary(run_dir)) == without_train_loss(read_summary(uninterrupted))


@pytest.mark.slow
def test_preempted_processes_stop_with_a_state_and_continue_to_the_same_weights(tmp_path, uninterrupted):
    """SIGTERM to each worker, as a scheduler sends it: every process finishes its update, one training state is
    written, and each exits with 143; the same command then continues the run as if nothing had stopped it."""
    run_dir = tmp_path / 'preempted'
    torchrun = _start_and_wait_for_a_recovery_state((*TORCHRUN, '--max-restarts=0'), tmp_path, run_dir)
    for worker in _workers(torchrun):
        os.kill(worker, signal.SIGTERM)
    output = torchrun.communicate(timeout=120)[0]
    assert torchrun.returncode != 0
    assert re.search(r'stopped by SIGTERM after update (\d+) \(epoch 0, \1 of 31 batches\)', output), output[-3000:]
    assert output.count('exitcode  : 143') == 2 or 'exitcode: 143' in output, output[-3000:]
    assert not (run_dir / 'last.pth').exists()
    resumed = run([*ELASTIC, '--experiment', 'preempted'], tmp_path, launcher=TORCHRUN, env=ELASTIC_ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resuming from' in resumed.stdout
    _assert_same_weights(run_dir, uninterrupted)


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_run_continues_to_the_same_weights(tmp_path, uninterrupted):
    """SIGKILL to one worker at a moment drawn at random: torchrun restarts the group, which resumes from the
    latest recovery state (--resume auto)."""
    draw = random.Random(0)
    run_dir = tmp_path / 'killed'
    torchrun = _start_and_wait_for_a_recovery_state((*TORCHRUN, '--max-restarts=1'), tmp_path, run_dir)
    time.sleep(draw.uniform(0., 1.))
    os.kill(draw.choice(_workers(torchrun)), signal.SIGKILL)
    output = torchrun.communicate(timeout=300)[0]
    assert torchrun.returncode == 0, output[-3000:]
    assert 'resuming from' in output
    _assert_same_weights(run_dir, uninterrupted)


@pytest.mark.slow
def test_a_run_continues_on_fewer_processes_with_its_global_batch(tmp_path):
    recipe = [*FAST, '--epochs', '1', '--warmup-epochs', '0', '--global-batch-size', '32', '--experiment', 'elastic',
              '--resume', 'auto']
    two = run([*recipe, '--max-updates', '3'], tmp_path, launcher=TORCHRUN)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run([*recipe, '--max-updates', '6'], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    assert ('epoch 0, 6 of 62 batches done, 3 updates; saved on 2 process(es), continued on 1: 2 accumulation '
            'step(s) of 16 per process keep the global batch of 32 and the updates per epoch, the epoch goes on '
            'after its 96 samples seen, with fresh random states') in one.stdout
    state = load_training_state(tmp_path / 'elastic' / 'last.pth')
    assert (state['num_updates'], state['batches_done'], state['world_size']) == (6, 12, 1)
    assert state['batches_per_epoch'] == 62  # 31 updates of 2 batches, as the 31 of the 2 processes
    config = yaml.safe_load((tmp_path / 'elastic' / 'config.yaml').read_text())
    assert (config['batch_size'], config['global_batch_size'], config['grad_accum_steps']) == (16, 32, 2)


def test_resume_auto_starts_a_run_then_continues_it(tmp_path, capsys):
    recipe = ['--output', str(tmp_path), *FAST, '--epochs', '2', '--warmup-epochs', '0', '--experiment', 'run',
              '--resume', 'auto']
    assert train_imagenet.main([*recipe, '--max-updates', '1']) == 0
    assert f'--resume auto: no training state in {tmp_path / "run"}, starting the run' in capsys.readouterr().out
    assert train_imagenet.main([*recipe, '--max-updates', '2']) == 0
    assert f'resuming from {tmp_path / "run" / "last.pth"}: epoch 0, 1 of 125 batches done, 1 updates\n' in \
        capsys.readouterr().out
    assert load_training_state(tmp_path / 'run' / 'last.pth')['num_updates'] == 2
    _fails_before_training(['--output', str(tmp_path), *FAST, '--resume', 'auto'], capsys,
                           '--resume auto continues the run of --experiment: name it')


def test_trains_on_an_image_folder(tmp_path, capsys):
    """timm's folder dataset: classes from the sub-folders of train/ and val/."""
    generator = np.random.default_rng(0)
    for split in ('train', 'val'):
        for label in ('cat', 'dog', 'owl'):
            (tmp_path / 'data' / split / label).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(generator.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / 'data' / split / label / f'{i}.png')
    assert train_imagenet.main(['--dataset', '', '--data-dir', str(tmp_path / 'data'), '--output', str(tmp_path),
                                '--experiment', 'folder', *FAST, '--global-batch-size', '4', '--epochs', '2',
                                '--warmup-epochs', '0']) == 0
    assert '3 classes) on 12 training images' in capsys.readouterr().out
    assert len(read_summary(tmp_path / 'folder')) == 2


def test_resume_in_a_folder_with_stray_and_leftover_files(tmp_path, capsys):
    """The recipe compares as a config file holds it (a tuple on the command line, a list in config.yaml); a
    copy a user made is ignored, and the temporary file a killed writer left is removed."""
    recipe = ['--output', str(tmp_path), *FAST, '--epochs', '2', '--warmup-epochs', '0',
              '--model-kwargs', 'kernel_sizes=(9, 7, 5, 5)']
    assert train_imagenet.main([*recipe, '--max-updates', '1', '--experiment', 'run']) == 0
    run_dir = tmp_path / 'run'
    shutil.copyfile(run_dir / 'last.pth', run_dir / 'recovery-1-5 (copy).pth')
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    leftover = run_dir / f'.model.safetensors.{dead.pid}.tmp'
    leftover.write_bytes(b'half a file')
    assert train_imagenet.main([*recipe, '--max-updates', '2', '--resume', str(run_dir)]) == 0
    assert f'resuming from {run_dir / "last.pth"}: epoch 0, 1 of 125 batches done, 1 updates' in capsys.readouterr().out
    assert not leftover.exists() and (run_dir / 'recovery-1-5 (copy).pth').exists()
    assert load_training_state(run_dir / 'last.pth')['num_updates'] == 2


def _fails_before_training(argv, capsys, message):
    assert train_imagenet.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_bad_input_fails_before_training(tmp_path, capsys):
    base = ['--output', str(tmp_path), *FAST]
    _fails_before_training([*base, '--dataset', '', '--data-dir', str(tmp_path / 'nowhere')], capsys,
                           'dataset folder or tar not found')
    (tmp_path / 'empty' / 'train' / 'shoes').mkdir(parents=True)
    _fails_before_training([*base, '--dataset', '', '--data-dir', str(tmp_path / 'empty')], capsys,
                           "no images for split 'train'")
    config = tmp_path / 'typo.yaml'
    config.write_text('epochs: 1\nwarmup_epoch: 0\n')
    _fails_before_training(['--config', str(config)], capsys, "config key 'warmup_epoch'")
    _fails_before_training([*base, '--global-batch-size', '9', '--grad-accum-steps', '2'], capsys,
                           'does not divide over 1 process(es) x 2 accumulation step(s)')
    # a training state of another model
    assert train_imagenet.main([*base, '--max-updates', '1', '--epochs', '1', '--warmup-epochs', '0',
                                '--experiment', 'nano']) == 0
    capsys.readouterr()
    _fails_before_training([*base, '--resume', str(tmp_path / 'nano'), '--model', 'smpconv_mobile31'], capsys,
                           'the training state is from smpconv_nano, this run trains smpconv_mobile31')
    _fails_before_training([*base, '--resume', str(tmp_path / 'nano'), '--global-batch-size', '16'], capsys,
                           'the training state comes from another recipe; to continue it, keep global_batch_size: '
                           '8 then, 16 now')
    _fails_before_training([*base, '--resume', str(tmp_path / 'missing')], capsys, 'no training state to resume')
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes((tmp_path / 'nano' / 'last.pth').read_bytes()[:1000])
    _fails_before_training([*base, '--resume', str(corrupt)], capsys, 'not a readable training state')
    # a --data-dir means that folder, whatever the config's dataset
    _fails_before_training([*base, '--data-dir', str(tmp_path)], capsys, "has no folder for the split 'train'")
    _fails_before_training([*base, '--dataset', 'fashion-mnist-subset', '--data-dir', str(tmp_path)], capsys,
                           'but the dataset is the bundled fashion-mnist-subset')
    _fails_before_training([*base, '--model', 'smpconv_tt'], capsys, "unknown model 'smpconv_tt': one of smpconv_b")
    (tmp_path / 'one_split' / 'train' / 'shoes').mkdir(parents=True)
    Image.new('RGB', (8, 8)).save(tmp_path / 'one_split' / 'train' / 'shoes' / 'a.png')
    _fails_before_training([*base, '--dataset', '', '--data-dir', str(tmp_path / 'one_split')], capsys,
                           "has no folder for the split 'validation' (looked for validation, val, valid, eval")
    assert not list(tmp_path.glob('*/summary.csv'))[1:]  # only the deliberate one-update run wrote one


def test_batch_scale_is_seeded_and_in_range():
    scale = RandomBatchScale((0.75, 3.), seed=0)
    sizes = [scale.size(64, 64, epoch, index) for epoch in range(3) for index in range(20)]
    # 64 px x [0.75, 3] in 16 px steps: 48 to 192
    assert all(48 <= height <= 192 and height % 16 == 0 and height == width for height, width in sizes)
    assert len(set(sizes)) >= 6
    assert sizes == [RandomBatchScale((0.75, 3.), seed=0).size(64, 64, e, i) for e in range(3) for i in range(20)]
    assert sizes != [RandomBatchScale((0.75, 3.), seed=1).size(64, 64, e, i) for e in range(3) for i in range(20)]
    x = torch.rand(2, 3, 64, 64)
    assert tuple(scale(x, 0, 0).shape) == (2, 3, *scale.size(64, 64, 0, 0))


def test_scale_augmentation_and_input_size_resolve_once():
    def resolved(*argv):
        return resolve_training_config(vars(parse_args([*FAST, *argv])), world_size=1)

    config = resolved('--model', 'smpconv_nano_cc', '--scale-augmentation', '0.5', '2')
    assert config.augment.scale_augmentation == (0.5, 2.)
    # a model that adapts to the input size is built for the training size, and the run records it
    assert config.model.model_kwargs['img_size'] == 32 and config.recorded['model_kwargs']['img_size'] == 32
    assert resolved('--model', 'smpconv_nano_cc', '--input-size', '3', '32', '48').model.model_kwargs['img_size'] \
        == [32, 48]
    given = resolved('--model', 'smpconv_nano_cc', '--model-kwargs', 'img_size=40')
    assert given.model.model_kwargs == {'img_size': 40}
    assert 'img_size' not in resolved('--model', 'smpconv_nano').model.model_kwargs  # strided: maps follow the input
    with pytest.raises(ConfigError, match=r'^--scale-augmentation takes factors 0 < MIN <= MAX, got \(2.0, 0.5\)$'):
        resolved('--scale-augmentation', '2', '0.5')


@pytest.mark.slow
def test_adaptive_run_evaluates_at_any_size_from_its_record(tmp_path):
    """A run of smpconv_nano_cc with scale augmentation; validate.py then needs no model arguments at other sizes."""
    args = [*FAST, '--model', 'smpconv_nano_cc', '--model-kwargs', 'kernel_sizes=(15, 7, 3, 3)',
            'dynamic_img_size=True', '--scale-augmentation', '0.5', '2', '--epochs', '1', '--warmup-epochs', '0',
            '--max-updates', '4', '--output', str(tmp_path), '--experiment', 'cc']
    assert train_imagenet.main(args) == 0
    run_dir = tmp_path / 'cc'
    config = yaml.safe_load((run_dir / 'config.yaml').read_text())
    assert config['model_kwargs'] == {'kernel_sizes': [15, 7, 3, 3], 'dynamic_img_size': True, 'img_size': 32}
    assert config['scale_augmentation'] == [0.5, 2.0]

    def top1(size, *model_kwargs):
        results = tmp_path / 'results.json'
        assert validate.main(['--config', str(run_dir / 'config.yaml'), '--checkpoint',
                              str(run_dir / 'model_ema.safetensors'), '--input-size', '3', str(size), str(size),
                              '--results-file', str(results), *model_kwargs]) == 0
        return json.loads(results.read_text())['top1']

    assert top1(32) == pytest.approx(float(read_summary(run_dir)[-1]['eval_ema_top1']))
    # the recorded size and dynamic_img_size: what the run's weights give, as with the arguments spelled out
    assert top1(64) == top1(64, '--model-kwargs', 'img_size=32', 'dynamic_img_size=True')
