"""The training recipe's library pieces (smpconv_models.training), one at a time."""
import dataclasses
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from accelerate import Accelerator
from PIL import Image
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3

import smpconv_models  # noqa: F401
from smpconv_models.smp import RADIUS_MAX, RADIUS_MIN, SMPKernel
from smpconv_models.training import (
    Checkpointer, ConfigError, CrossProcessBatchNorm2d, PreemptionSignals, Progress, SavedBatch, SeededAugmentation,
    create_accelerator, create_datasets, create_loss, create_mixup, create_optimizer, create_scheduler, exit_status,
    latest_training_state, load_training_state, param_groups, parse_args, remove_leftovers, resolve_batch,
    resolve_device, resolve_training_config, resume_training_state, rng_state, set_rng_state, sync_batchnorm,
    train_one_epoch)
from smpconv_models.training.checkpoint import STATE_FORMAT, continued_batches, epoch_batches
from smpconv_models.training.data import create_train_loader, set_epoch


def recipe(argv=(), world_size=1, **flags):
    """The configuration of the flags `argv` (by default the paper's recipe), some flag values replaced."""
    return resolve_training_config({**vars(parse_args(list(argv))), **flags}, world_size)


@pytest.fixture
def nano():
    torch.manual_seed(0)
    return timm.create_model('smpconv_nano', num_classes=10, kernel_sizes=(9, 7, 5, 5))


def test_parameter_groups(nano):
    decay, no_decay, radii = param_groups(nano, weight_decay=0.05, radius_lr_scale=0.1)
    names = {id(p): n for n, p in nano.named_parameters()}
    decay_names = {names[id(p)] for p in decay['params']}
    no_decay_names = {names[id(p)] for p in no_decay['params']}
    radii_names = {names[id(p)] for p in radii['params']}
    assert decay['weight_decay'] == 0.05 and no_decay['weight_decay'] == 0 and radii['weight_decay'] == 0
    assert radii['lr_scale'] == 0.1
    assert radii_names == {n for n in names.values() if n.endswith('.points.radii')} and len(radii_names) == 4
    # SMP weights, conv and linear weights decay; positions, biases and norm parameters do not
    assert {n for n in names.values() if n.endswith(('.points.weights', 'conv.weight', 'fc.weight'))} == decay_names
    assert {n for n in names.values() if n.endswith('.points.positions')} <= no_decay_names
    assert 'head.fc.bias' in no_decay_names and 'norm.weight' in no_decay_names
    assert len(decay_names) + len(no_decay_names) + len(radii_names) == len(names)


def test_radii_follow_the_schedule_at_a_tenth(nano):
    config = recipe(lr=1e-3, epochs=4, warmup_epochs=1)
    optimizer = create_optimizer(nano, config.optimizer)
    scheduler, _ = create_scheduler(optimizer, config.schedule, updates_per_epoch=10)
    for update in (0, 5, 10, 25):
        scheduler.step_update(num_updates=update)
        lrs = [group['lr'] for group in optimizer.param_groups]
        assert lrs[0] == lrs[1] and lrs[2] == pytest.approx(0.1 * lrs[0])
    assert optimizer.param_groups[0]['lr'] < 1e-3  # cosine decay after warm-up


def test_mixup_targets_and_losses():
    settings = recipe(mixup=0.8, cutmix=1.0, smoothing=0.1).mixup
    mixup = create_mixup(settings, num_classes=10)
    np.random.seed(0)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed, targets = mixup(x.clone(), y)
    assert targets.shape == (4, 10)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    # each target mixes one-hot labels smoothed to 0.91 / 0.01 (0.1 over 10 classes): its own with weight
    # lambda and its mirror's in the batch (label 3 for sample 0) with 1 - lambda
    torch.testing.assert_close(targets[:, 4:], torch.full((4, 6), 0.01))
    torch.testing.assert_close(targets[0, 0] + targets[0, 3], torch.tensor(0.92))
    assert 0.01 < targets[0, 0] < 0.91 and not torch.equal(mixed, x)
    assert isinstance(create_loss(settings.smoothing, mixup), SoftTargetCrossEntropy)
    assert create_mixup(recipe(mixup=0., cutmix=0.).mixup, 10) is None
    assert isinstance(create_loss(settings.smoothing, None), LabelSmoothingCrossEntropy)
    assert isinstance(create_loss(0., None), torch.nn.CrossEntropyLoss)


def test_config_file_and_overrides(tmp_path):
    config = tmp_path / 'run.yaml'
    config.write_text('model: smpconv_b\nlr: 4e-3\nepochs: 5\nscale: [0.5, 1]\nmodel_kwargs: {small_kernel_size: 3}\n')
    args = parse_args(['--config', str(config), '--epochs', '7'])
    assert args.model == 'smpconv_b' and args.epochs == 7  # the command line wins over the file
    assert args.lr == 4e-3 and isinstance(args.lr, float)  # YAML reads 4e-3 as text
    assert args.scale == [0.5, 1.0] and args.model_kwargs == {'small_kernel_size': 3}
    assert parse_args([], default_config=config).model == 'smpconv_b'
    assert parse_args([]).model == 'smpconv_t' and parse_args([]).weight_decay == 0.05
    config.write_text('weight_decy: 0.1\n')
    with pytest.raises(ConfigError, match=r"'weight_decy' in .*run.yaml is not an option.*did you mean 'weight_decay'"):
        parse_args(['--config', str(config)])
    config.write_text('eval_metric: acc1\n')
    with pytest.raises(ConfigError, match=r"'eval_metric' in .*: 'acc1' is not one of \['loss', 'top1', 'top5'\]"):
        parse_args(['--config', str(config)])
    config.write_text('resume: output/train/run\n')
    with pytest.raises(ConfigError, match="'resume' .* is not an option"):
        parse_args(['--config', str(config)])
    for flag in ('--checkpoint-hist', '--epochs', '--grad-accum-steps', '--log-interval'):
        with pytest.raises(ConfigError, match=f'{flag} must be at least 1'):
            recipe([flag, '0'])
    with pytest.raises(ConfigError, match='config file not found'):
        parse_args(['--config', str(tmp_path / 'missing.yaml')])


@pytest.mark.parametrize('world_size, accum, global_batch, batch, expected', [
    (8, 1, 2048, None, 256),
    (1, 4, 2048, None, 512),
    (2, 1, 2048, 64, 64),  # an explicit batch per process sets the global batch
])
def test_batch_sizes(world_size, accum, global_batch, batch, expected):
    config = recipe(world_size=world_size, global_batch_size=global_batch, batch_size=batch, grad_accum_steps=accum)
    assert config.batch.batch_size == expected and config.batch.global_batch_size == expected * world_size * accum
    assert config.batch.validation_batch_size == expected  # the training batch, unless -vb says
    # config.yaml records the batches the run used, and the learning rate scaled to the global batch
    assert (config.recorded['batch_size'], config.recorded['global_batch_size']) == \
        (expected, expected * world_size * accum)
    assert config.recorded['lr'] == config.optimizer.lr == 4e-3 * expected * world_size * accum / 2048
    assert config.recorded['validation_batch_size'] is None


def test_batch_sizes_that_do_not_divide():
    with pytest.raises(ConfigError, match=r'global batch of 100 does not divide over 3 process\(es\)'):
        resolve_batch(None, 100, None, world_size=3, grad_accum_steps=1, mixup=False)
    with pytest.raises(ConfigError, match='must be even'):
        resolve_batch(None, 6, None, world_size=2, grad_accum_steps=1, mixup=True)


def test_the_configuration_is_resolved_once_and_frozen():
    config = recipe(['--lr-base-scale', 'sqrt', '--scale', '0.5', '1', '--model-kwargs', 'kernel_scale=2'],
                    world_size=2, global_batch_size=512)
    assert config.optimizer.lr == pytest.approx(4e-3 * 0.5)  # sqrt(512 / 2048)
    assert config.augment.scale == (0.5, 1.0) and config.recorded['scale'] == [0.5, 1.0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch.batch_size = 1
    with pytest.raises(TypeError):
        config.model.model_kwargs['kernel_scale'] = 3
    with pytest.raises(TypeError):
        config.recorded['lr'] = 1.
    with pytest.raises(ConfigError, match=r'--warmup-epochs \(5\) must be shorter than --epochs \(5\)'):
        recipe(epochs=5, warmup_epochs=5)


@pytest.mark.skipif(torch.cuda.is_available(), reason='the error of a machine without a GPU')
def test_a_gpu_that_is_not_there():
    with pytest.raises(ConfigError, match='--device cuda, but no GPU is available'):
        create_accelerator(resolve_device(vars(parse_args(['--device', 'cuda']))))


def test_missing_and_empty_dataset_folders(tmp_path):
    with pytest.raises(ConfigError, match='dataset folder or tar not found'):
        config = recipe(['--data-dir', str(tmp_path / 'missing')])
        create_datasets(config.data, config.splits, config.batch.batch_size)
    (tmp_path / 'train' / 'cats').mkdir(parents=True)
    with pytest.raises(ConfigError, match="no images for split 'train'"):
        config = recipe(['--data-dir', str(tmp_path)])
        create_datasets(config.data, config.splits, config.batch.batch_size)


def test_seeded_augmentation_repeats_per_sample_and_epoch():
    base = torch.utils.data.TensorDataset(torch.zeros(8))
    noisy = type('Noisy', (), {'__len__': lambda s: 8, '__getitem__': lambda s, i: (torch.rand(3), random.random(),
                                                                                      np.random.rand())})()
    data = SeededAugmentation(noisy, seed=1)
    assert len(data) == len(base)
    first = data[3]
    torch.manual_seed(123)  # the caller's state does not matter ...
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    again = data[5], data[3]
    assert torch.equal(again[1][0], first[0]) and again[1][1:] == first[1:]
    assert not torch.equal(again[0][0], first[0])
    # ... and is left as it was
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    data.set_epoch(1)
    assert not torch.equal(data[3][0], first[0])


def test_rng_state_round_trip(tmp_path):
    state = rng_state()
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.save(state, tmp_path / 'rng.pth')
    set_rng_state(torch.load(tmp_path / 'rng.pth', weights_only=True))
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]


def _batchnorm_across_two_processes(rank, port, results):
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64) * 3 + 1
    reference = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5), reference.bias.normal_()
    synced = sync_batchnorm(torch.nn.Sequential(reference), torch.device('cpu'))[0]
    synced.load_state_dict(reference.state_dict())
    reference_x = x.clone().requires_grad_()
    reference_out = reference(reference_x)
    (reference_out.sin().sum()).backward()
    # each process holds half of the batch; the sum of the two processes' losses is the loss above
    local_x = x[4 * rank:4 * rank + 4].clone().requires_grad_()
    local_out = synced(local_x)
    local_out.sin().sum().backward()
    torch.distributed.all_reduce(synced.weight.grad), torch.distributed.all_reduce(synced.bias.grad)
    results[rank] = dict(
        out=(local_out - reference_out[4 * rank:4 * rank + 4]).abs().max().item(),
        x_grad=(local_x.grad - reference_x.grad[4 * rank:4 * rank + 4]).abs().max().item(),
        weight_grad=(synced.weight.grad - reference.weight.grad).abs().max().item(),
        running_var=(synced.running_var - reference.running_var).abs().max().item(),
        running_mean=(synced.running_mean - reference.running_mean).abs().max().item())
    torch.distributed.destroy_process_group()


def test_cross_process_batchnorm_matches_batchnorm_over_the_whole_batch():
    port = 29500 + os.getpid() % 1000
    results = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(_batchnorm_across_two_processes, args=(port, results), nprocs=2)
    for rank in (0, 1):
        # float64 throughout: outputs, input and parameter gradients, running statistics agree to rounding
        assert max(results[rank].values()) < 1e-12, results[rank]


def test_cross_process_batchnorm_in_one_process_is_batchnorm(nano):
    converted = sync_batchnorm(timm.create_model('smpconv_nano', num_classes=10, kernel_sizes=(9, 7, 5, 5)),
                               torch.device('cpu'))
    converted.load_state_dict(nano.state_dict())
    assert sum(isinstance(m, CrossProcessBatchNorm2d) for m in converted.modules()) == \
        sum(isinstance(m, torch.nn.BatchNorm2d) for m in nano.modules())
    x = torch.randn(4, 3, 32, 32)
    for train in (True, False):
        nano.train(train), converted.train(train)
        torch.testing.assert_close(converted(x), nano(x), rtol=0, atol=0)
    torch.testing.assert_close(converted.norm.running_var, nano.norm.running_var, rtol=0, atol=0)


def _loader(num_batches, batch_size=4, num_classes=10):
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(batch_size, 3, 32, 32, generator=generator),
             torch.randint(0, num_classes, (batch_size,), generator=generator)) for _ in range(num_batches)]


@pytest.mark.parametrize('accum, expected_updates', [(1, 5), (2, 3)])
def test_train_one_epoch_updates(nano, accum, expected_updates):
    config = recipe(grad_accum_steps=accum, lr=1e-2, epochs=1, warmup_epochs=0, clip_grad=1.0, channels_last=False,
                    max_updates=None, recovery_interval=2, log_interval=1)
    with torch.no_grad():
        for kernel in (m for m in nano.modules() if isinstance(m, SMPKernel)):
            kernel.radii[0], kernel.radii[1] = 5., -1.  # as if a step had pushed them out
    ema = ModelEmaV3(nano, decay=0.)  # decay 0: the EMA is the model after every update, and only then
    ema_updates = []
    ema.update = lambda model, step: (ema_updates.append(step), ModelEmaV3.update(ema, model, step))
    optimizer = create_optimizer(nano, config.optimizer)
    scheduler, _ = create_scheduler(optimizer, config.schedule, updates_per_epoch=expected_updates)
    recoveries = []
    progress = Progress()
    metrics = train_one_epoch(
        nano, _loader(5), 5, optimizer, scheduler, torch.nn.CrossEntropyLoss(), Accelerator(cpu=True), progress,
        config.loop, ema=ema, on_recovery=lambda: recoveries.append(progress.num_updates))
    assert progress == Progress(epoch=0, batches_done=5, num_updates=expected_updates)
    assert recoveries == [u for u in range(1, expected_updates + 1) if u % 2 == 0]
    assert np.isfinite(metrics['loss'])
    for kernel in (m for m in nano.modules() if isinstance(m, SMPKernel)):
        assert RADIUS_MIN <= kernel.radii.min() and kernel.radii.max() <= RADIUS_MAX
    assert ema_updates == list(range(1, expected_updates + 1))
    for (name, averaged), trained in zip(ema.module.state_dict().items(), nano.state_dict().values()):
        torch.testing.assert_close(averaged, trained, rtol=0, atol=0, msg=name)


def test_gradient_accumulation_averages_like_a_larger_batch():
    # no batch norm here: accumulating two batches of 4 must give the gradient of one batch of 8
    def train(accum, batch_size):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
        config = recipe(grad_accum_steps=accum, lr=0.1, opt='momentum', momentum=0., weight_decay=0., epochs=1,
                        warmup_epochs=0, min_lr=0.1, max_updates=None, log_interval=1)
        optimizer = create_optimizer(model, config.optimizer)
        scheduler, _ = create_scheduler(optimizer, config.schedule, updates_per_epoch=3)
        data = _loader(6, batch_size=4)
        if accum == 1:
            data = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(data[::2], data[1::2])]
        train_one_epoch(model, data, len(data), optimizer, scheduler, torch.nn.CrossEntropyLoss(),
                        Accelerator(cpu=True), Progress(), config.loop)
        return model.state_dict()

    for key, value in train(accum=1, batch_size=8).items():
        # float32 sums of the same 8 terms in two groups
        torch.testing.assert_close(train(accum=2, batch_size=4)[key], value, rtol=0, atol=1e-6)


def test_checkpointer_keeps_the_best(tmp_path, nano):
    checkpointer = Checkpointer(tmp_path, keep=2, metric='top1', model_name='smpconv_nano')
    weights = nano.state_dict()
    for epoch, top1 in enumerate([50., 70., 60., 65., 55.]):
        checkpointer.save_epoch(epoch, {'epoch': epoch + 1}, weights, weights, top1)
    assert checkpointer.best == [(70., 1), (65., 3)]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ['checkpoint-1.safetensors', 'checkpoint-3.safetensors', 'last.pth', 'model.safetensors',
                     'model_best.safetensors', 'model_ema.safetensors']  # no temporary file left over
    assert (tmp_path / 'model_best.safetensors').read_bytes() == (tmp_path / 'checkpoint-1.safetensors').read_bytes()
    best = timm.create_model('smpconv_nano', num_classes=10, kernel_sizes=(9, 7, 5, 5), pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(tmp_path / 'model_best.safetensors'), num_classes=10))
    torch.testing.assert_close(best.state_dict()['head.fc.weight'], weights['head.fc.weight'])
    assert load_training_state(tmp_path / 'last.pth')['checkpoints'] == {'best': [[70., 1], [65., 3]]}
    loss_checkpointer = Checkpointer(tmp_path / 'loss', keep=1, metric='loss', model_name='smpconv_nano')
    (tmp_path / 'loss').mkdir()
    for epoch, loss in enumerate([2., 1., 3.]):
        loss_checkpointer.save_epoch(epoch, {}, weights, None, loss)
    assert loss_checkpointer.best == [(1., 1)]


def _state(epoch, batches_done, **extra):
    return {'epoch': epoch, 'batches_done': batches_done, **extra}


def test_recovery_states(tmp_path):
    checkpointer = Checkpointer(tmp_path, keep=1, metric='top1', model_name='smpconv_nano')
    checkpointer.save_epoch(0, _state(1, 0), {'w': torch.zeros(1)}, None, 1.)
    checkpointer.save_recovery(1, 4, _state(1, 4))
    checkpointer.save_recovery(1, 12, _state(1, 12))
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['last.pth', 'recovery-1-12.pth']
    path, state = latest_training_state(str(tmp_path))
    assert path == tmp_path / 'recovery-1-12.pth' and state['batches_done'] == 12
    checkpointer.save_epoch(1, _state(2, 0), {'w': torch.zeros(1)}, None, 2.)
    assert latest_training_state(str(tmp_path))[0] == tmp_path / 'last.pth'
    with pytest.raises(FileNotFoundError, match='no training state'):
        latest_training_state(str(tmp_path / 'nothing'))


def test_resume_picks_the_state_that_got_furthest(tmp_path):
    """A kill between writing last.pth and deleting the recovery state it supersedes leaves both; files the
    run did not write, and broken ones, are passed over."""
    checkpointer = Checkpointer(tmp_path, keep=1, metric='top1', model_name='smpconv_nano')
    checkpointer.save_recovery(1, 12, _state(1, 12))
    shutil.copyfile(tmp_path / 'recovery-1-12.pth', tmp_path / 'recovery-1-5 (copy).pth')
    checkpointer._save_state(tmp_path / 'last.pth', _state(2, 0))  # the epoch's end, the recovery not yet deleted
    assert latest_training_state(str(tmp_path))[0] == tmp_path / 'last.pth'
    (tmp_path / 'last.pth').write_bytes((tmp_path / 'last.pth').read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match=r'skipping .*last\.pth: .*truncated or corrupt'):
        assert latest_training_state(str(tmp_path))[0] == tmp_path / 'recovery-1-12.pth'
    (tmp_path / 'recovery-1-12.pth').unlink()
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match=r'no readable training state .*last\.pth'):
        latest_training_state(str(tmp_path))
    assert (tmp_path / 'recovery-1-5 (copy).pth').exists()  # not ours: left alone


def test_leftovers_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    leftovers = [tmp_path / f'.model.safetensors.{dead.pid}.tmp', tmp_path / f'.recovery-1-5.pth.{dead.pid}.tmp']
    kept = [tmp_path / f'.last.pth.{os.getpid()}.tmp',  # a live process's
            tmp_path / f'.notes.txt.{dead.pid}.tmp', tmp_path / 'user.tmp']  # not a file a run writes
    for path in leftovers + kept:
        path.write_bytes(b'partial')
    assert sorted(remove_leftovers(tmp_path)) == sorted(leftovers)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in leftovers)


def test_files_get_the_permissions_of_the_umask(tmp_path, nano):
    previous = os.umask(0o022)
    try:
        checkpointer = Checkpointer(tmp_path, keep=1, metric='top1', model_name='smpconv_nano')
        checkpointer.save_epoch(0, _state(1, 0), nano.state_dict(), nano.state_dict(), 1.)
        checkpointer.save_recovery(1, 3, _state(1, 3))
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {name: 0o644 for name in modes} and 'model.safetensors' in modes and 'last.pth' in modes


def test_unreadable_training_states(tmp_path):
    data = (tmp_path / 'x.pth')
    torch.save({'format': STATE_FORMAT, 'w': torch.zeros(100)}, data)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data.read_bytes()[:200])
    with pytest.raises(ValueError, match='truncated or corrupt'):
        load_training_state(truncated)
    torch.save({'state_dict': {}}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='not a training state of this package'):
        load_training_state(tmp_path / 'other.pth')


def test_bundled_dataset():
    config = recipe(dataset='fashion-mnist-subset')
    train, val = create_datasets(config.data, config.splits, config.batch.batch_size)
    assert (len(train), len(val)) == (1000, 200)
    image, label = train[0]
    assert image.size == (32, 32) and image.mode == 'RGB' and 0 <= label < 10
    assert np.bincount(train.labels).tolist() == [100] * 10 and np.bincount(val.labels).tolist() == [20] * 10
    assert (np.asarray(image)[:2] == 0).all()  # the 2-pixel padding
    with pytest.raises(ConfigError, match="--data-dir /data is given, but the dataset is the bundled"):
        config = recipe(dataset='fashion-mnist-subset', data_dir='/data')
        create_datasets(config.data, config.splits, config.batch.batch_size)


@pytest.mark.parametrize('variant, epochs, drop_path, accuracy', [
    ('t', 300, 0.1, '82.5'), ('b', 300, 0.5, '83.8'), ('mobile31', 120, 0., '73.5'), ('mobile51', 120, 0., '73.7')])
def test_paper_recipes(variant, epochs, drop_path, accuracy):
    """configs/ hold the paper's recipe: AdamW, lr 4e-3 at 2048, 10 warm-up epochs, RandAugment, mixup/cutmix..."""
    path = Path(__file__).parent.parent / 'configs' / f'smpconv_{variant}_in1k.yaml'
    args = parse_args(['--config', str(path)])
    assert f'{accuracy}% top-1' in path.read_text()
    assert (args.model, args.epochs, args.drop_path) == (f'smpconv_{variant}', epochs, drop_path)
    assert (args.global_batch_size, args.opt, args.lr, args.lr_base, args.lr_base_size) == \
        (2048, 'adamw', None, 4e-3, 2048)
    assert (args.warmup_epochs, args.min_lr, args.weight_decay, args.radius_lr_scale) == (10, 1e-6, 0.05, 0.1)
    assert (args.aa, args.mixup, args.cutmix, args.smoothing, args.reprob, args.hflip) == \
        ('rand-m9-mstd0.5-inc1', 0.8, 1.0, 0.1, 0.25, 0.)
    assert (args.model_ema, args.model_ema_decay, args.clip_grad, args.amp) == (True, 0.9999, None, False)
    config = resolve_training_config(vars(args), world_size=8)
    assert (config.batch.batch_size, config.optimizer.lr) == (256, 4e-3)


# Run in a child process: the setting is process-wide, and the test process keeps glibc's defaults.
# mallinfo2's hblkhd counts the bytes glibc serves from their own memory maps.
MALLOC_PROBE = """
import ctypes, sys
import torch
from smpconv_models.training import keep_freed_memory_for_reuse

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks', 'fordblks',
                 'keepcost')]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
applied = sys.argv[1] == 'apply' and keep_freed_memory_for_reuse()
activation = torch.empty(2 ** 25)  # 128 MiB, above glibc's mmap threshold
print(applied, libc.mallinfo2().hblkhd >= activation.nbytes)
"""


def glibc() -> bool:
    try:
        return 'glibc' in os.confstr('CS_GNU_LIBC_VERSION')
    except (AttributeError, ValueError, OSError):
        return False


@pytest.mark.skipif(not glibc(), reason='a glibc setting')
@pytest.mark.parametrize('mode, user_env, expected', [
    ('apply', {}, 'True False'),                                # a large tensor comes from the heap
    ('default', {}, 'False True'),                              # glibc maps it afresh
    ('apply', {'MALLOC_MMAP_MAX_': '65536'}, 'False True'),     # the user's own setting wins
])
def test_keep_freed_memory_for_reuse(mode, user_env, expected):
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')} | user_env
    result = subprocess.run([sys.executable, '-c', MALLOC_PROBE, mode], env=env, capture_output=True, text=True,
                            check=True)
    assert result.stdout.split()[-2:] == expected.split()


def test_a_state_from_before_img_size_was_recorded_is_the_same_recipe():
    """Runs give a model that adapts to the input size their input size as img_size; a state saved before, without
    it, resumes (the same network at that size) unless its input size or dynamic_img_size say otherwise."""
    from smpconv_models.training.checkpoint import _as_recorded_now
    kernels = {'kernel_sizes': [15, 7, 3, 3]}
    config = {'model': 'smpconv_nano_cc', 'model_kwargs': {**kernels, 'img_size': 64}, 'input_size': [3, 64, 64]}
    before = {**config, 'model_kwargs': kernels}
    assert _as_recorded_now(before, config)['model_kwargs'] == config['model_kwargs']
    other_size = {**before, 'input_size': [3, 32, 32]}
    dynamic = {**before, 'model_kwargs': {**kernels, 'dynamic_img_size': True}}
    for saved in (other_size, dynamic, config):
        assert _as_recorded_now(saved, config) is saved


# ---- elastic and preemptible runs ---------------------------------------------------------------------------

def test_a_run_resumed_on_another_number_of_processes_keeps_its_batches():
    """Its batch per process and global batch, accumulation taking up the difference; on as many processes, the
    flags as they are."""
    saved = SavedBatch(batch_size=16, global_batch_size=128, world_size=4)
    for world_size, accum in ((2, 4), (1, 8), (8, 1)):
        config = resolve_training_config(vars(parse_args(['--global-batch-size', '64'])), world_size, saved)
        assert (config.batch.batch_size, config.batch.global_batch_size, config.loop.grad_accum_steps) == \
            (16, 128, accum)
        assert config.recorded['grad_accum_steps'] == accum and config.optimizer.lr == 4e-3 * 128 / 2048
    same = resolve_training_config(vars(parse_args(['--global-batch-size', '64'])), 4, saved)
    assert (same.batch.batch_size, same.batch.global_batch_size) == (16, 64)  # refused later, naming the batch
    with pytest.raises(ConfigError, match=r'the run to resume has a global batch of 128 in batches of 16 on each '
                                          r'of 4 process\(es\); 3 cannot keep it \(128 is no multiple of 16 x 3\): '
                                          r'resume on a number of processes that divides 8'):
        resolve_training_config(vars(parse_args([])), 3, saved)


def test_an_epoch_continues_after_the_samples_seen_on_another_number_of_processes():
    """The epoch's order is one permutation, each process taking every world_size-th sample: after 3 batches of
    4 on each of 2 processes, 1 process skips 6 batches, and each of its following pairs of batches (one update,
    accumulated) holds the samples of the 2 processes' batches of that update."""
    config = recipe(['--workers', '0'])
    dataset = torch.utils.data.TensorDataset(torch.arange(96))

    def batches(world_size: int, rank: int):
        loader = create_train_loader(dataset, None, config.augment, 4, config.data, world_size, rank,
                                     torch.device('cpu'))
        set_epoch(loader, 3)
        return [batch[0].tolist() for batch in loader]

    two, one = [batches(2, rank) for rank in (0, 1)], batches(1, 0)
    updates_of_two = [set(first + second) for first, second in zip(*two)]
    updates_of_one = [set(one[k] + one[k + 1]) for k in range(0, len(one), 2)]
    assert updates_of_one == updates_of_two  # the same samples per update, in the same order of updates
    skipped = continued_batches(3, saved_world_size=2, world_size=1)
    assert skipped == 6 and set(sum(one[:skipped], [])) == set().union(*updates_of_two[:3])
    with pytest.raises(ConfigError, match='3 batches on each of 2 processes are no whole number of batches on each '
                                          'of 4: resume on 2 processes'):
        continued_batches(3, saved_world_size=2, world_size=4)


def test_an_epoch_keeps_its_updates_on_another_number_of_processes():
    """ImageNet's 1,281,167 images in batches of 256: 625 per process on 8 processes; on 4, the data loader would
    make 1,251 batches of each process's 320,291 images, 626 updates of 2, the last of 1: the schedule would
    shift. The run's epochs keep their samples instead: 1,250 batches, 625 updates."""
    state = {'batches_per_epoch': 625, 'world_size': 8, 'rng': [None] * 8}
    assert epoch_batches(state, 4) == 1250 and epoch_batches(state, 8) == 625
    assert epoch_batches({'rng': [None] * 8}, 4) is None  # a state from before states said: the data loader's


def test_preemption_signals_are_recorded_within_the_block():
    accelerator = Accelerator(cpu=True)
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionSignals(accelerator) as preemption:
        assert preemption.requested() is None
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # the first one counts
        assert preemption.requested() == signal.SIGUSR1
    assert signal.getsignal(signal.SIGTERM) is before
    assert exit_status(signal.SIGTERM) == 143 and exit_status(signal.SIGUSR1) == 138


def test_resume_auto(tmp_path):
    """The run folder's latest state; none when the folder has none (a fresh run); a fixed name needed."""
    assert resume_training_state('auto', str(tmp_path), 'run') is None
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'config.yaml').write_text('epochs: 1\n')
    assert resume_training_state('auto', str(tmp_path), 'run') is None
    Checkpointer._save_state(tmp_path / 'run' / 'recovery-0-4.pth', {'epoch': 0, 'batches_done': 4})
    path, state = resume_training_state('auto', str(tmp_path), 'run')
    assert path == tmp_path / 'run' / 'recovery-0-4.pth' and state['batches_done'] == 4
    assert resume_training_state('', str(tmp_path), 'run') is None
    with pytest.raises(ConfigError, match='--resume auto continues the run of --experiment: name it'):
        resume_training_state('auto', str(tmp_path), '')
    # a folder whose states are all unreadable is not started over (its files would be lost)
    (tmp_path / 'run' / 'recovery-0-4.pth').write_bytes(b'truncated')
    with pytest.raises(FileNotFoundError, match='no readable training state to resume'):
        with pytest.warns(UserWarning, match='skipping'):
            resume_training_state('auto', str(tmp_path), 'run')


def test_a_loader_whose_worker_fails_lets_the_process_end(tmp_path):
    """A DataLoader worker keeps SIGTERM's default: multiprocessing ends leftover workers with it at exit, and a
    process whose loader raised would otherwise wait for them forever."""
    script = tmp_path / 'failing_loader.py'
    script.write_text(
        'import torch\n'
        'from smpconv_models.training import parse_args, resolve_training_config\n'
        'from smpconv_models.training.data import create_train_loader\n'
        'class Failing(torch.utils.data.Dataset):\n'
        '    def __len__(self):\n'
        '        return 8\n'
        '    def __getitem__(self, index):\n'
        '        raise ValueError("a sample that does not load")\n'
        'config = resolve_training_config(vars(parse_args(["--workers", "1"])), 1)\n'
        'loader = create_train_loader(Failing(), None, config.augment, 2, config.data, 1, 0, torch.device("cpu"))\n'
        'next(iter(loader))\n')
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, 'PYTHONPATH': str(Path(__file__).parent.parent)})
    assert result.returncode == 1 and 'a sample that does not load' in result.stderr


def test_the_recipe_augmentation_runs_at_its_largest_magnitude():
    """The ImageNet configs' RandAugment (rand-m9-mstd0.5-inc1) reaches magnitude 10, where timm's increasing
    posterize keeps 0 bits: every operation must take it (Pillow 13 raises; pyproject keeps an earlier one). At
    magnitude 10 with 2 operations, posterize comes up in about 1 image of 8: 400 images, seeded, meet it."""
    random.seed(0)
    config = recipe(['--config', str(Path(__file__).parent.parent / 'configs' / 'smpconv_t_in1k.yaml')])
    assert config.augment.aa == 'rand-m9-mstd0.5-inc1'
    augment = timm.data.create_transform(32, is_training=True, auto_augment='rand-m10-n2-inc1', re_prob=0.)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    for _ in range(400):
        augment(image)
