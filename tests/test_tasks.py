"""The data of the sequence and CIFAR-10 tasks, each loader tried on small files it makes in the dataset's real
format (the downloads are out of reach here), and training and validation on them end to end."""
import io
import pickle
import sys
import tarfile
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from smpconv_models.datasets.mfcc import dct_matrix, mel_filterbank, mfcc
from smpconv_models.datasets.tasks import (CharacterTrajectories, SpeechCommands, create_task_dataset,
                                           pmnist_permutation, stratified_split)
from smpconv_models.datasets.timeseries import read_ts_file
from smpconv_models.training import parse_args

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))
import train_imagenet  # noqa: E402
import validate  # noqa: E402


def test_pmnist_permutation_is_the_authors():
    """numpy's first draw after np.random.seed(0) in the authors' trainer (MT19937: the same in every numpy)."""
    order = pmnist_permutation(0)
    assert order[:12].tolist() == [693, 85, 647, 392, 765, 14, 299, 711, 55, 31, 122, 172]
    assert order[-4:].tolist() == [192, 629, 559, 684] and sorted(order.tolist()) == list(range(784))


@pytest.fixture(scope='module')
def mnist_root(tmp_path_factory):
    """MNIST's idx files as torchvision reads them (MNIST/raw/*-ubyte), 20 training and 10 test images."""
    root = tmp_path_factory.mktemp('mnist')
    raw = root / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    generator = np.random.default_rng(0)
    for prefix, count in (('train', 20), ('t10k', 10)):
        images = generator.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        (raw / f'{prefix}-images-idx3-ubyte').write_bytes(
            np.array([2051, count, 28, 28], dtype='>i4').tobytes() + images.tobytes())
        (raw / f'{prefix}-labels-idx1-ubyte').write_bytes(np.array([2049, count], dtype='>i4').tobytes()
                                                           + labels.tobytes())
    return root


def test_smnist_and_pmnist_read_pixels_row_by_row(mnist_root):
    from torchvision.datasets import MNIST
    image = torch.from_numpy(np.asarray(MNIST(str(mnist_root), train=False)[3][0], dtype=np.float32)) / 255
    expected = ((image - 0.1307) / 0.3081).reshape(1, 784)
    sequence, label = create_task_dataset('smnist', 'test', mnist_root)[3]
    assert sequence.shape == (1, 784) and label == 3
    torch.testing.assert_close(sequence, expected)
    permuted, _ = create_task_dataset('pmnist', 'test', mnist_root)[3]
    torch.testing.assert_close(permuted, expected[:, pmnist_permutation(0)])
    torch.manual_seed(0)
    augmented = torch.stack([create_task_dataset('smnist', 'train', mnist_root, training=True)[i][0]
                             for i in range(20)])
    assert augmented.shape == (20, 1, 784)
    dropped = create_task_dataset('smnist', 'train', mnist_root, training=True, input_dropout=0.5)[0][0]
    assert 0.3 < (dropped == 0).float().mean() < 0.7
    with pytest.raises(ValueError, match="smnist has the splits train, test, not 'validation'"):
        create_task_dataset('smnist', 'validation', mnist_root)


@pytest.fixture(scope='module')
def cifar_root(tmp_path_factory):
    """CIFAR-10's python batches as torchvision reads them (cifar-10-batches-py/), 10 images each."""
    root = tmp_path_factory.mktemp('cifar')
    folder = root / 'cifar-10-batches-py'
    folder.mkdir()
    generator = np.random.default_rng(0)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        batch = {'data': generator.integers(0, 256, (10, 3072), dtype=np.uint8), 'labels': list(range(10))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / 'batches.meta').write_bytes(pickle.dumps({'label_names': [f'class{i}' for i in range(10)]}))
    return root


def test_cifar10_as_images_and_as_sequences(cifar_root, monkeypatch):
    import torchvision.datasets.cifar
    from torchvision.datasets import CIFAR10
    # made here: not the real files, whose md5 sums torchvision checks
    monkeypatch.setattr(torchvision.datasets.cifar, 'check_integrity', lambda *args, **kwargs: True)
    image, label = create_task_dataset('cifar10', 'test', cifar_root)[4]
    raw = torch.from_numpy(np.asarray(CIFAR10(str(cifar_root), train=False)[4][0], dtype=np.float32)).permute(2, 0, 1)
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(image, (raw / 255 - mean) / std)
    sequence, _ = create_task_dataset('scifar10', 'test', cifar_root)[4]
    torch.testing.assert_close(sequence, image.reshape(3, 1024))
    assert create_task_dataset('scifar10', 'train', cifar_root, training=True)[0][0].shape == (3, 1024)
    assert label == 4 and len(create_task_dataset('cifar10', 'train', cifar_root)) == 50


def _wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    data = io.BytesIO()
    with wave.open(data, 'wb') as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((samples * 2 ** 15).astype('<i2').tobytes())
    return data.getvalue()


@pytest.fixture(scope='module')
def speech_archive(tmp_path_factory):
    """speech_commands_v0.02.tar.gz's layout: a folder of WAV files per word, 20 clips of each of the ten words
    (one of them 0.5 s long), a word the authors leave out and the background noise."""
    archive = tmp_path_factory.mktemp('speech') / 'speech_commands_v0.02.tar.gz'
    generator = np.random.default_rng(0)
    with tarfile.open(archive, 'w:gz') as tar:
        words = list(SpeechCommands.classes) + ['bed', '_background_noise_']
        for label, word in enumerate(words):
            for i in range(20):
                length = 8000 if i == 19 else 16000
                tone = np.sin(2 * np.pi * (200 + 100 * label) * np.arange(length) / 16000)
                data = _wav(0.5 * tone + 0.01 * generator.standard_normal(length))
                info = tarfile.TarInfo(f'./{word}/clip{i:02d}_nohash_0.wav')
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name in ('validation_list.txt', 'testing_list.txt'):
            info = tarfile.TarInfo(f'./{name}')
            tar.addfile(info, io.BytesIO(b''))
    return archive


def test_speech_commands_from_its_archive(speech_archive):
    raw = {split: SpeechCommands(speech_archive, split, mfcc=False) for split in ('train', 'validation', 'test')}
    # the ten words' 19 clips of 1 s each (the 0.5 s ones dropped), split 70/15/15 per word
    assert [len(raw[split]) for split in raw] == [10 * 13, 10 * 3, 10 * 3]
    x, label = raw['train'][0]
    assert x.shape == (1, 16000) and raw['train'].classes[label] in SpeechCommands.classes
    train = torch.stack([raw['train'][i][0] for i in range(len(raw['train']))])
    # normalised per time step with the training split's statistics, pooled over clips
    torch.testing.assert_close(train.mean((0, 1)), torch.zeros(16000), rtol=0, atol=1e-5)
    # (x - mean) / (std + 1e-5) has the std std / (std + 1e-5): 1 - 1e-3 where the clips spread by only 0.01
    torch.testing.assert_close(train.std((0, 1)), torch.ones(16000), rtol=0, atol=2e-3)
    assert (speech_archive.parent / 'smpconv-processed' / f'{speech_archive.name}-raw.pt').is_file()  # read once
    coefficients = create_task_dataset('speech-commands', 'test', speech_archive)[0][0]
    assert coefficients.shape == (20, 161)
    with pytest.raises(FileNotFoundError, match='Speech Commands not found at .*nowhere'):
        SpeechCommands(speech_archive.parent / 'nowhere.tar.gz', 'train')


def test_speech_commands_clip_at_another_rate(tmp_path):
    """A clip of 16,000 samples at 8 kHz is 2 s of audio, not one of the authors' clips: named, not read."""
    (tmp_path / 'yes').mkdir()
    (tmp_path / 'yes' / 'clip_nohash_0.wav').write_bytes(_wav(np.zeros(16000), rate=8000))
    with pytest.raises(ValueError, match=r'yes/clip_nohash_0\.wav: sampled at 8000 Hz; .* at 16000 Hz'):
        SpeechCommands(tmp_path, 'train', mfcc=False)


def test_mfcc_equals_torchaudios():
    """torchaudio 2.9.1's MFCC of two clips (tests/data/torchaudio, made with that release: none matches this
    package's PyTorch)."""
    sys.path.insert(0, str(ROOT / 'tests' / 'data' / 'torchaudio'))
    from make_mfcc_reference import clips
    reference = load_file(ROOT / 'tests' / 'data' / 'torchaudio' / 'mfcc_reference.safetensors')['mfcc']
    # the same float32 operations (identical here); another BLAS may sum the 101 bins in another order
    torch.testing.assert_close(mfcc(clips()), reference, rtol=0, atol=1e-4)


def test_mfcc_is_its_definition():
    """torchaudio's MFCC(log_mels=True, n_mfcc=20, melkwargs=dict(n_fft=200, n_mels=64)), written out in numpy
    from its definition: frames of 200 samples every 100, centred (reflect padding), a periodic Hann window,
    |rfft|^2, HTK mel filters, log(+1e-6), the orthonormal DCT-II."""
    generator = np.random.default_rng(0)
    audio = generator.standard_normal((2, 16000))
    padded = np.pad(audio, ((0, 0), (100, 100)), mode='reflect')
    frames = np.stack([padded[:, i * 100:i * 100 + 200] for i in range(161)], axis=1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(200) / 200)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # [2, 161, 101]
    hz_to_mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    points = 700 * (10 ** (np.linspace(hz_to_mel(0), hz_to_mel(8000), 66) / 2595) - 1)
    frequencies = np.linspace(0, 8000, 101)
    filters = np.maximum(0, np.minimum((frequencies[:, None] - points[None, :-2]) / np.diff(points)[None, :-1],
                                       (points[None, 2:] - frequencies[:, None]) / np.diff(points)[None, 1:]))
    log_mel = np.log(power @ filters + 1e-6)  # [2, 161, 64]
    k, n = np.arange(20)[:, None], np.arange(64)[None, :]
    dct = np.sqrt(2 / 64) * np.cos(np.pi / 64 * (n + 0.5) * k)
    dct[0] /= np.sqrt(2)
    expected = np.einsum('btm,km->bkt', log_mel, dct)
    got = mfcc(torch.from_numpy(audio))
    assert got.shape == (2, 20, 161)
    # float64, but the filters and the DCT are made in float32, as torchaudio makes them: |mfcc| < 300, 1e-6 relative
    torch.testing.assert_close(got, torch.from_numpy(expected), rtol=0, atol=2e-4)
    # 101 FFT bins for 64 bands: the filters of bands 0 and 3 fall between bins, as torchaudio warns
    assert torch.nonzero(mel_filterbank(101, 64, 16000).sum(0) == 0).flatten().tolist() == [0, 3]
    torch.testing.assert_close(dct_matrix(20, 64).t() @ dct_matrix(20, 64), torch.eye(20), rtol=0, atol=1e-6)


def _write_ts(path: Path, series, labels) -> None:
    lines = ['# Character Trajectories (made by the tests)', '@problemName CharacterTrajectories',
             '@timeStamps false', '@missing false', '@univariate false', '@dimensions 3', '@equalLength false',
             f"@classLabel true {' '.join(sorted(set(labels)))}", '@data']
    for values, label in zip(series, labels):
        lines.append(':'.join(','.join(f'{v:.6f}' for v in channel) for channel in values) + f':{label}')
    path.write_text('\n'.join(lines) + '\n')


@pytest.fixture(scope='module')
def trajectories_root(tmp_path_factory):
    """The UEA archive's CharacterTrajectories/_TRAIN.ts and _TEST.ts, 20 series of 5 letters, of 5 to 12 steps."""
    root = tmp_path_factory.mktemp('uea')
    folder = root / 'CharacterTrajectories'
    folder.mkdir()
    generator = np.random.default_rng(0)
    for part in ('TRAIN', 'TEST'):
        labels = [str(1 + i % 5) for i in range(20)]
        series = [generator.standard_normal((3, 5 + i % 8)) for i in range(20)]
        _write_ts(folder / f'CharacterTrajectories_{part}.ts', series, labels)
    return root


def test_character_trajectories_from_ts_files(trajectories_root):
    read = read_ts_file(trajectories_root / 'CharacterTrajectories' / 'CharacterTrajectories_TRAIN.ts')
    assert len(read.series) == 20 and read.series[1].shape == (3, 6) and read.labels[:3] == ('1', '2', '3')
    splits = {split: CharacterTrajectories(trajectories_root, split) for split in ('train', 'validation', 'test')}
    assert [len(s) for s in splits.values()] == [5 * 6, 5 * 1, 5 * 1]  # 8 per letter: 70% 6, 15% 1, the rest 1
    x, label = splits['train'][0]
    assert x.shape == (3, 12) and splits['train'].classes == ('1', '2', '3', '4', '5')
    train = torch.stack([splits['train'][i][0] for i in range(30)])
    torch.testing.assert_close(train.transpose(0, 2).reshape(12, -1).mean(1), torch.zeros(12), rtol=0, atol=1e-5)
    bad = trajectories_root / 'bad.ts'
    bad.write_text('@data\n1,2:3:1\n')
    with pytest.raises(ValueError, match='line 2: channels of different lengths'):
        read_ts_file(bad)
    with pytest.raises(FileNotFoundError, match='CharacterTrajectories_TRAIN.ts and _TEST.ts not found'):
        CharacterTrajectories(trajectories_root / 'CharacterTrajectories' / 'nothing', 'train')


def test_stratified_split_keeps_the_class_balance():
    labels = np.repeat(np.arange(4), [20, 40, 7, 100])
    splits = stratified_split(labels)
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(len(labels)))
    for label, count in zip(range(4), [20, 40, 7, 100]):
        assert np.sum(labels[splits['train']] == label) == round(0.7 * count)


def test_a_task_trains_and_validates_end_to_end(trajectories_root, tmp_path, capsys):
    """train_imagenet.py and validate.py on Character Trajectories' files, with the authors' recipe shortened."""
    run = ['--config', str(ROOT / 'configs' / 'tcn_chartraj.yaml'), '--data-dir', str(trajectories_root),
           '--output', str(tmp_path), '--experiment', 'ct', '--epochs', '2', '--warmup-epochs', '1',
           '--global-batch-size', '10', '--workers', '0', '--model-kwargs', 'depth=2', 'width=8']
    assert train_imagenet.main(run) == 0
    out = capsys.readouterr().out
    assert 'smpconv_tcn_chartraj' in out and '5 classes) on 30 training images' in out
    config = yaml.safe_load((tmp_path / 'ct' / 'config.yaml').read_text())
    assert (config['dataset'], config['opt'], config['val_split']) == ('char-trajectories', 'adam', 'test')
    assert validate.main(['--config', str(tmp_path / 'ct' / 'config.yaml'), '--checkpoint',
                          str(tmp_path / 'ct' / 'model.safetensors'), '--split', 'validation']) == 0
    assert 'smpconv_tcn_chartraj' in capsys.readouterr().out


@pytest.mark.parametrize('config', sorted(p.name for p in (ROOT / 'configs').glob('*.yaml')
                                          if p.name.startswith(('tcn_', 'resnet_')) and p.name != 'tcn_ucr.yaml'))
def test_task_configs_are_the_authors_recipes(config):
    args = parse_args(['--config', str(ROOT / 'configs' / config)])
    assert (args.opt, args.weight_decay, args.radius_lr_scale, args.sched, args.warmup_lr, args.min_lr) == \
        ('adam', 1e-5, 0.1, 'cosine', 0., 1e-6)
    assert (args.mixup, args.cutmix, args.smoothing, args.model_ema) == (0., 0., 0., False)
    recipe = {'tcn_smnist.yaml': (64, 200, 1e-4, 5, 0.1), 'tcn_pmnist.yaml': (64, 200, 1e-4, 5, 0.1),
              'tcn_scifar10.yaml': (64, 200, 2e-4, 5, 0.), 'tcn_chartraj.yaml': (64, 300, 1e-4, 5, 0.),
              'tcn_speech_mfcc.yaml': (32, 300, 2e-3, 5, 0.), 'tcn_speech_raw.yaml': (32, 160, 1e-3, 10, 0.),
              'resnet_cifar10.yaml': (64, 210, 5e-3, 10, 0.)}[config]
    assert (args.global_batch_size, args.epochs, args.lr, args.warmup_epochs, args.input_dropout) == recipe
