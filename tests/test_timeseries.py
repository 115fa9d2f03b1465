"""Time-series classification on a user's own data: the readers of each format on files written here, the
preparation (imputation, normalisation, padding), the splits, the configuration taken from the data, and a run
through train_imagenet.py and validate.py."""
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

from smpconv_models.datasets.timeseries import (SeriesPreparation, auto_batch_and_epochs, channel_statistics,
                                                read_arrays, read_audio_folder, read_ts_file, split_series_dataset,
                                                stratified_indices)
from smpconv_models.training import ConfigError, parse_args, resolve_training_config

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))
import train_imagenet  # noqa: E402
import validate  # noqa: E402


def write_ts(path: Path, series, labels, classes=None) -> None:
    """A .ts file as the UCR/UEA archive writes them; NaN written as '?'."""
    classes = classes or sorted(set(labels))
    lines = ['# written by the tests', f'@problemName {path.stem}', '@timeStamps false', '@missing true',
             f'@univariate {str(series[0].shape[0] == 1).lower()}', '@equalLength false',
             f"@classLabel true {' '.join(classes)}", '@data']
    for values, label in zip(series, labels):
        lines.append(':'.join(','.join('?' if np.isnan(v) else f'{v:.6f}' for v in channel) for channel in values)
                     + f':{label}')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(lines) + '\n')


def toy_series(count: int, channels: int, seed: int, lengths=(30, 40)):
    """Series of two classes told apart by their frequency: 'slow' and 'fast' sines with noise."""
    generator = np.random.default_rng(seed)
    series, labels = [], []
    for i in range(count):
        label = ('slow', 'fast')[i % 2]
        length = int(generator.integers(*lengths, endpoint=True))
        t = np.arange(length) / 10
        wave_ = np.sin((1 if label == 'slow' else 3) * t + generator.uniform(0, 6))
        series.append(np.stack([wave_ + 0.1 * generator.standard_normal(length) for _ in range(channels)]))
        labels.append(label)
    return series, labels


@pytest.fixture(scope='module')
def ts_root(tmp_path_factory) -> Path:
    """ROOT/Waves/Waves_TRAIN.ts and _TEST.ts: 2 channels, unequal lengths, a missing value, string labels."""
    root = tmp_path_factory.mktemp('ucr')
    train, train_labels = toy_series(48, 2, 0)
    train[3][1, 5] = np.nan
    test, test_labels = toy_series(20, 2, 1, lengths=(30, 44))
    write_ts(root / 'Waves' / 'Waves_TRAIN.ts', train, train_labels, classes=['slow', 'fast'])
    write_ts(root / 'Waves' / 'Waves_TEST.ts', test, test_labels, classes=['slow', 'fast'])
    return root


def test_ts_files_read_unequal_lengths_missing_values_and_the_declared_classes(tmp_path):
    path = tmp_path / 'X_TRAIN.ts'
    write_ts(path, [np.array([[1., np.nan, 3.]]), np.array([[4., 5.]])], ['b', 'a'], classes=['b', 'a'])
    read = read_ts_file(path)
    assert [s.shape for s in read.series] == [(1, 3), (1, 2)]
    assert np.isnan(read.series[0][0, 1]) and read.series[1].tolist() == [[4., 5.]]
    assert read.labels == ('b', 'a') and read.classes == ('b', 'a')


@pytest.mark.parametrize('line, message', [
    ('1,2,x:a', 'X_TRAIN.ts, line 10: not a series of numbers'),
    ('1,2:3:a', 'X_TRAIN.ts, line 10: channels of different lengths'),
    ('1,2,3:c', r"labels \['c'\] are not among the declared classes"),
    ('1,2,3::a', 'X_TRAIN.ts, line 10: a series of no values'),
])
def test_a_malformed_ts_line_is_named_with_its_file_and_line(tmp_path, line, message):
    path = tmp_path / 'X_TRAIN.ts'
    write_ts(path, [np.array([[1., 2., 3.]])], ['a'], classes=['a', 'b'])
    path.write_text(path.read_text() + line + '\n')
    with pytest.raises(ValueError, match=message):
        read_ts_file(path)


def test_arrays_read_as_the_same_series(tmp_path):
    x = np.random.default_rng(0).standard_normal((6, 2, 9)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / 'A_TRAIN.npz', X=x, y=y)
    np.save(tmp_path / 'A_TRAIN_X.npy', x)
    np.save(tmp_path / 'A_TRAIN_y.npy', y)
    for read in (read_arrays(tmp_path / 'A_TRAIN.npz'), read_arrays(tmp_path / 'A_TRAIN_X.npy', tmp_path / 'A_TRAIN_y.npy')):
        assert np.array_equal(np.stack(read.series), x) and read.labels == ('0', '1', '2', '0', '1', '2')
    np.savez(tmp_path / 'bad.npz', X=x, labels=y)
    with pytest.raises(ValueError, match=r'bad.npz needs the arrays X \[N, C, L\] and y \[N\]; it has X, labels'):
        read_arrays(tmp_path / 'bad.npz')
    (tmp_path / 'cut.npz').write_bytes((tmp_path / 'A_TRAIN.npz').read_bytes()[:300])
    with pytest.raises(ValueError, match='cut.npz: not readable arrays'):
        read_arrays(tmp_path / 'cut.npz')
    np.savez(tmp_path / 'short.npz', X=x, y=y[:4])
    with pytest.raises(ValueError, match=r'X must be \[N, C, L\] .* got X \[6, 2, 9\] and y \[4\]'):
        read_arrays(tmp_path / 'short.npz')


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), 'wb') as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((samples * 2 ** 15).astype('<i2').tobytes())


def test_audio_clips_are_resampled_to_the_configured_rate(tmp_path):
    """A 100 Hz tone of 0.5 s at 8 kHz and at 16 kHz: both become 4,000 samples of the same tone at 8 kHz."""
    for rate, word in ((8000, 'no'), (16000, 'yes')):
        t = np.arange(rate // 2) / rate
        _write_wav(tmp_path / word / 'clip.wav', 0.5 * np.sin(2 * np.pi * 100 * t), rate)
    read = read_audio_folder(tmp_path, sample_rate=8000)
    assert read.classes == ('no', 'yes') and read.labels == ('no', 'yes')
    assert [s.shape for s in read.series] == [(1, 4000), (1, 4000)]
    # the antialiasing filter of the downsampled clip spans 2 input samples: 100 Hz passes with < 1% change
    np.testing.assert_allclose(read.series[1][0, 100:-100], read.series[0][0, 100:-100], rtol=0, atol=0.01)
    (tmp_path / 'yes' / 'broken.wav').write_bytes(b'RIFF....')
    with pytest.raises(ValueError, match='broken.wav: not a readable WAV file'):
        read_audio_folder(tmp_path, sample_rate=8000)


def test_preparation_imputes_normalises_pads_and_says_so(ts_root):
    read = read_ts_file(ts_root / 'Waves' / 'Waves_TRAIN.ts')
    x, notes = SeriesPreparation(length=35, normalize='series')(read)
    lengths = np.array([s.shape[1] for s in read.series])
    assert x.shape == (48, 2, 35)
    # a shorter series: each channel standardised over its own steps, zeros after its end
    short = int(np.flatnonzero(lengths < 35)[0])
    torch.testing.assert_close(x[short, :, :lengths[short]].mean(1), torch.zeros(2), rtol=0, atol=1e-5)
    torch.testing.assert_close(x[short, :, :lengths[short]].std(1, unbiased=False), torch.ones(2), rtol=0, atol=1e-5)
    assert x[short, :, lengths[short]:].abs().max() == 0
    # the missing value lies on the line between its neighbours (after the series' own affine standardisation)
    assert not torch.isnan(x).any()
    torch.testing.assert_close(x[3, 1, 5], (x[3, 1, 4] + x[3, 1, 6]) / 2)
    assert len(notes) == 3
    assert 'Waves_TRAIN.ts: 1 missing values' in notes[0] and 'linear interpolation' in notes[0]
    shorter, longer = lengths[lengths < 35], lengths[lengths > 35]
    assert f'{len(shorter)} series of {shorter.min()} to {shorter.max()} steps padded with zeros' in notes[1]
    assert f'{len(longer)} series of {longer.min()} to {longer.max()} steps truncated to their first 35' in notes[2]
    # by channel: the training data's mean and std over all its values
    mean, std = channel_statistics(read)
    x, _ = SeriesPreparation(length=35, normalize='channel')(read, (mean, std))
    torch.testing.assert_close(x[short, :, :lengths[short]], torch.from_numpy(
        (read.series[short] - mean[:, None]) / std[:, None]).float(), rtol=0, atol=1e-6)
    values = np.ma.masked_invalid(np.concatenate(read.series, 1))  # the missing value left out
    np.testing.assert_allclose(mean, values.mean(1), rtol=1e-5)
    np.testing.assert_allclose(std, values.std(1), rtol=1e-5)


def test_the_validation_split_is_carved_from_the_training_file_per_class(ts_root):
    splits = {s: split_series_dataset('ts/Waves', ts_root, s, val_fraction=0.25, seed=3)
              for s in ('train', 'validation', 'test')}
    assert [len(s) for s in splits.values()] == [36, 12, 20]
    assert splits['validation'].labels.bincount().tolist() == [6, 6]
    assert splits['train'].classes == ('slow', 'fast')
    kept, carved = stratified_indices(['a'] * 5 + ['b'] * 2, 0.25, seed=0)
    assert sorted(kept.tolist() + carved.tolist()) == list(range(7)) and len(carved) == 1 + 1
    # the same seed, the same carve
    again = split_series_dataset('ts/Waves', ts_root, 'validation', val_fraction=0.25, seed=3)
    assert torch.equal(again.items, splits['validation'].items)
    # the series length is the longest training series' unless set: test series are truncated to it
    assert splits['train'].items.shape[-1] == splits['test'].items.shape[-1] == 40


def test_bad_data_gets_one_line_that_names_it(tmp_path, ts_root):
    series, labels = toy_series(6, 1, 0)
    write_ts(tmp_path / 'D' / 'D_TRAIN.ts', series, labels)
    write_ts(tmp_path / 'D' / 'D_TEST.ts', series, ['slow', 'fast', 'medium', 'slow', 'fast', 'slow'])
    with pytest.raises(ValueError, match=r"D_TEST.ts: classes \['medium'\] do not occur in the training data"):
        split_series_dataset('ts/D', tmp_path, 'test')
    (tmp_path / 'E').mkdir()
    np.savez(tmp_path / 'E' / 'E_TRAIN.npz', X=np.zeros((2, 1, 0)), y=np.array([0, 1]))
    with pytest.raises(ValueError, match='series 0 has no values'):
        split_series_dataset('npz/E', tmp_path, 'train')
    (tmp_path / 'F').mkdir()
    with pytest.raises(FileNotFoundError, match=r'has no F_TRAIN.npz or F_TRAIN_X.npy and F_TRAIN_y.npy'):
        split_series_dataset('npz/F', tmp_path, 'train')
    with pytest.raises(ValueError, match="has the splits train, validation, test, not 'dev'"):
        split_series_dataset('ts/Waves', ts_root, 'dev')


def test_a_run_takes_its_shapes_and_sizes_from_the_data(ts_root):
    flags = vars(parse_args(['--config', str(ROOT / 'configs' / 'tcn_ucr.yaml'), '--dataset', 'ts/Waves',
                             '--data-dir', str(ts_root)]))
    config = resolve_training_config(flags, world_size=1)
    assert config.data.series_length == 40
    assert config.model.model_kwargs['in_chans'] == 2 and config.model.model_kwargs['kernel_size'] == 40
    batch, epochs = auto_batch_and_epochs(38)
    assert (config.batch.global_batch_size, config.schedule.epochs) == (batch, epochs)
    assert config.recorded['epochs'] == epochs and config.recorded['series_length'] == 40
    flags = vars(parse_args(['--epochs', 'auto']))
    with pytest.raises(ConfigError, match='--epochs auto and --global-batch-size auto follow the size of a '
                                          'time-series dataset'):
        resolve_training_config(flags, world_size=1)


def test_train_and_validate_a_written_dataset_with_its_class_names(ts_root, tmp_path, capsys):
    output = tmp_path / 'runs'
    common = ['--config', str(ROOT / 'configs' / 'tcn_ucr.yaml'), '--dataset', 'ts/Waves', '--data-dir', str(ts_root),
              '--epochs', '4', '--warmup-epochs', '1', '--output', str(output), '--workers', '0']
    for seed in (0, 1):
        assert train_imagenet.main(common + ['--seed', str(seed), '--experiment', f'waves-{seed}']) == 0
    out = capsys.readouterr().out
    assert 'Waves_TRAIN.ts: 1 missing values (0.029%) filled by linear interpolation' in out
    config = output / 'waves-0' / 'config.yaml'
    assert config.read_text().startswith('# data: ')
    assert yaml.safe_load(config.read_text())['series_length'] == 40
    results = tmp_path / 'results.json'
    assert validate.main(['--config', str(config), '--checkpoint', str(output / 'waves-0' / 'model_best.safetensors'),
                          '--split', 'test', '--results-file', str(results)]) == 0
    out = capsys.readouterr().out
    assert 'on 20 images of ts/Waves/test' in out and 'top-1 per class: slow ' in out and ', fast ' in out
    assert 'steps truncated to their first 40' in out  # test series up to 44 steps
    assert validate.main(['--config', str(config), '--split', 'test', '--checkpoint',
                          *[str(output / f'waves-{seed}' / 'model_best.safetensors') for seed in (0, 1)]]) == 0
    assert 'ensemble of 2 smpconv_tcn_tsc' in capsys.readouterr().out


@pytest.mark.parametrize('length', [24, 427])
def test_the_classifier_starts_as_one_compact_kernel_at_the_newest_step_at_any_length(length):
    model = timm.create_model('smpconv_tcn_tsc', in_chans=3, kernel_size=length, num_classes=4)
    points = model.blocks[0].conv1.large.points
    spacing = 2 / (length - 1)
    torch.testing.assert_close(points.radii.detach(), torch.full_like(points.radii, 3 * spacing))
    # distances from the newest step (+1) half-normal of scale one tap: their rms is one tap (30 x 30 points)
    distances = (1 - points.positions.detach()) / spacing
    assert distances.min() >= 0 and 0.9 < distances.pow(2).mean().sqrt() < 1.1
    x = torch.randn(2, 3, length)
    features = model.forward_features(x)
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.mean(-1))
    model.reset_classifier(4, 'last')
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), features[:, :, -1])
    with pytest.raises(ValueError, match="a sequence is pooled by one of last, avg, got 'max'"):
        model.reset_classifier(4, 'max')
