"""Time-series classification on the user's own data: the UCR/UEA archive's .ts files, arrays, folders of audio.

A dataset is a folder `ROOT/NAME` of one of three layouts, named `--dataset FORMAT/NAME --data-dir ROOT`:

| FORMAT | files | items |
|---|---|---|
| `ts` | `NAME_TRAIN.ts`, `NAME_TEST.ts` (as the archive ships them) | the archive's series, uni- or multivariate |
| `npz` | `NAME_TRAIN.npz`, `NAME_TEST.npz` (arrays `X` [N, C, L] and `y` [N]), or `NAME_TRAIN_X.npy`, `NAME_TRAIN_y.npy`, `NAME_TEST_X.npy`, `NAME_TEST_y.npy` | the arrays' series |
| `audio` | `train/<class>/*.wav` and `test/<class>/*.wav` | mono clips, resampled to `sample_rate` |

The test file or folder is only read for the `test` split; `validation` is carved from the training data (a
stratified fraction, drawn with a fixed seed): model selection never sees the test data.

Every series is made ready for the network the same way, whatever the split: missing values (`?`, NaN) filled by
linear interpolation along time (the nearest value at the ends, 0 for a channel with none); each channel
standardised with the mean and std of the training data (`normalize='channel'`), or each series and channel to mean
0 and std 1 over its own steps (`'series'`), or left as it is (`'none'`); then padded at its end with zeros (the
mean) or truncated to `length` steps. `SeriesDataset.notes` says what was imputed, padded or truncated.
"""
import functools
import math
import wave
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from . import check_split

__all__ = ['SERIES_FORMATS', 'NORMALIZATIONS', 'LabelledSeries', 'read_ts_file', 'read_arrays', 'read_wav',
           'read_audio_folder', 'read_part', 'resample', 'shuffled_classes', 'SeriesPreparation', 'channel_statistics',
           'stratified_indices', 'SeriesDataset', 'TrainingSeriesSummary', 'summarize_training_series',
           'auto_batch_and_epochs', 'is_series_dataset', 'split_series_dataset']

SERIES_FORMATS = ('ts', 'npz', 'audio')
NORMALIZATIONS = ('channel', 'series', 'none')
_SPLITS = ('train', 'validation', 'test')
UPDATES = 1000  # optimizer updates of an `auto` run (at least 100 epochs, at most 1000)
PathLike = Union[str, Path]


@dataclass(frozen=True)
class LabelledSeries:
    """Series [channels, length] (lengths may differ; NaN where a value is missing) and their class names, as read
    from `source`; `classes`: the class names the file declares, in its order (None when it declares none)."""
    series: Tuple[np.ndarray, ...]
    labels: Tuple[str, ...]
    source: str
    classes: Optional[Tuple[str, ...]] = None

    def __post_init__(self):
        if not self.series:
            raise ValueError(f'{self.source} holds no series')
        channels = {s.shape[0] for s in self.series}
        if len(channels) != 1:
            raise ValueError(f'{self.source}: series of different numbers of channels ({sorted(channels)})')
        empty = [i for i, s in enumerate(self.series) if s.shape[1] == 0]
        if empty:
            raise ValueError(f'{self.source}: series {empty[0]} has no values (zero length)')
        undeclared = sorted(set(self.labels) - set(self.classes or self.labels))
        if undeclared:
            raise ValueError(f'{self.source}: labels {undeclared} are not among the declared classes {self.classes}')

    @property
    def num_channels(self) -> int:
        return self.series[0].shape[0]


# ---- readers ----------------------------------------------------------------------------------------------------

def _parse_values(text: str) -> np.ndarray:
    """A channel's comma-separated values, '?' (the archive's missing value) and 'NaN' as NaN."""
    return np.array([np.nan if v.strip() == '?' else float(v) for v in text.split(',')], dtype=np.float32)


def read_ts_file(path: PathLike) -> LabelledSeries:
    """The series of a .ts file of the UCR/UEA archive (sktime's format): a header of @-lines, then after @data one
    series a line, channels separated by ':', the class label last. Missing values ('?', NaN) read as NaN; the
    classes of `@classLabel true ...` in their order. Timestamped series (`@timeStamps true`) are not read."""
    path = Path(path)
    series, labels = [], []
    classes, has_labels, in_data = None, True, False
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: not a text file ({e})') from e
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        if not in_data:
            key, *values = line.split()
            key = key.lower()
            if key == '@data':
                in_data = True
            elif key == '@timestamps' and values[:1] == ['true']:
                raise ValueError(f'{path}, line {number}: timestamped series (@timeStamps true) are not supported')
            elif key == '@classlabel':
                has_labels = values[:1] == ['true']
                classes = tuple(values[1:]) if has_labels and len(values) > 1 else None
            continue
        if not has_labels:
            raise ValueError(f'{path}: the file declares no class labels (@classLabel false): nothing to classify')
        *channels, label = line.split(':')
        if not channels:
            raise ValueError(f'{path}, line {number}: no values before the label {label!r}')
        if any(not channel.strip() for channel in channels):
            raise ValueError(f'{path}, line {number}: a series of no values (zero length)')
        try:
            values = [_parse_values(channel) for channel in channels]
        except ValueError as e:
            raise ValueError(f'{path}, line {number}: not a series of numbers ({e})') from e
        if len({len(v) for v in values}) != 1:
            raise ValueError(f'{path}, line {number}: channels of different lengths '
                             f'({", ".join(str(len(v)) for v in values)})')
        series.append(np.stack(values))
        labels.append(label.strip())
    if not series:
        raise ValueError(f'{path} holds no series (no @data section, or an empty one)')
    return LabelledSeries(tuple(series), tuple(labels), str(path), classes)


def read_arrays(x_path: PathLike, y_path: Optional[PathLike] = None) -> LabelledSeries:
    """Series from arrays: an .npz of `X` [N, C, L] (or [N, L], one channel) and `y` [N], or two .npy files. Labels
    may be numbers or strings; NaN marks a missing value."""
    x_path = Path(x_path)
    source = str(x_path) if y_path is None else f'{x_path} and {y_path}'
    try:  # numpy raises these for a truncated or foreign file, on opening it or on reading an array
        if y_path is None:
            with np.load(x_path, allow_pickle=False) as arrays:
                names = tuple(arrays.files)
                x, y = (arrays['X'], arrays['y']) if {'X', 'y'} <= set(names) else (None, None)
        else:
            x, y = np.load(x_path, allow_pickle=False), np.load(y_path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f'{source}: not readable arrays ({e})') from e
    if x is None:
        raise ValueError(f'{source} needs the arrays X [N, C, L] and y [N]; it has {", ".join(names) or "none"}')
    if x.ndim == 2:
        x = x[:, None]
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f'{source}: X must be [N, C, L] (or [N, L]) and y [N], got X {list(x.shape)} and y '
                         f'{list(y.shape)}')
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f'{source}: X must hold numbers, got {x.dtype}')
    labels = tuple(str(v.item() if hasattr(v, 'item') else v) for v in y)
    return LabelledSeries(tuple(x.astype(np.float32)), labels, source)


def read_wav(source: Union[Path, BinaryIO], name: Optional[str] = None) -> Tuple[np.ndarray, int]:
    """A WAV file's samples (8, 16 or 32-bit PCM, channels averaged) in [-1, 1): n-bit integers / 2^(n - 1), the
    authors' int16 / 2^15 for Speech Commands; and its sampling rate. `source` is a path or a binary file object,
    `name` what errors call it (default: the path)."""
    name = name or str(source)
    try:
        with wave.open(str(source) if isinstance(source, Path) else source) as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as e:
        raise ValueError(f'{name}: not a readable WAV file ({e})') from e
    if width == 1:
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128) / 128
    elif width in (2, 4):
        samples = np.frombuffer(frames, dtype=f'<i{width}').astype(np.float32) / 2 ** (8 * width - 1)
    else:
        raise ValueError(f'{name}: {8 * width}-bit samples; 8, 16 or 32-bit PCM WAV files are read')
    return samples.reshape(-1, channels).mean(1), rate


def resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """`samples` at `rate` Hz resampled to `new_rate` Hz by torch's antialiased linear interpolation (when the rate
    falls, a triangle filter as wide as the new sample spacing keeps frequencies above the new Nyquist out)."""
    if rate == new_rate:
        return samples
    length = max(1, round(len(samples) * new_rate / rate))
    x = torch.from_numpy(samples)[None, None, None]
    return F.interpolate(x, size=(1, length), mode='bilinear', antialias=True, align_corners=False)[0, 0, 0].numpy()


def read_audio_folder(folder: PathLike, sample_rate: int) -> LabelledSeries:
    """The WAV clips of a folder of one folder per class (`<class>/*.wav`, the Speech Commands layout), each
    resampled to `sample_rate`; classes in the order of their folders' names."""
    folder = Path(folder)
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob('*.wav'))))
    if not classes:
        raise ValueError(f'{folder} holds no folder of .wav files (one folder per class)')
    series, labels = [], []
    for name in classes:
        for path in sorted((folder / name).glob('*.wav')):
            samples, rate = read_wav(path)
            if len(samples) == 0:
                raise ValueError(f'{path}: a clip of no samples (zero length)')
            series.append(resample(samples, rate, sample_rate)[None])
            labels.append(name)
    return LabelledSeries(tuple(series), tuple(labels), str(folder), classes)


def _files(fmt: str, folder: Path, part: str) -> Tuple[Path, ...]:
    """The files (or folder) of the TRAIN or TEST `part` of a dataset folder, or a one-line error."""
    name = folder.name
    if fmt == 'ts':
        candidates = [(folder / f'{name}_{part}.ts',)]
    elif fmt == 'npz':
        candidates = [(folder / f'{name}_{part}.npz',), (folder / f'{name}_{part}_X.npy', folder / f'{name}_{part}_y.npy')]
    else:
        candidates = [(folder / part.lower(),)]
    for files in candidates:
        if all(f.exists() for f in files):
            return files
    wanted = ' or '.join(' and '.join(f.name for f in files) for files in candidates)
    if not folder.is_dir():
        raise FileNotFoundError(f'dataset folder not found: {folder} (--data-dir ROOT holds NAME/)')
    raise FileNotFoundError(f'{folder} has no {wanted}')


@functools.lru_cache(maxsize=4)  # a run reads its training data to resolve its config, then to train
def read_part(fmt: str, folder: Path, part: str, sample_rate: int = 16000) -> LabelledSeries:
    """The TRAIN or TEST part of the dataset folder `folder` (named as the archive names its files) in format
    `fmt` (see the module docstring)."""
    if fmt not in SERIES_FORMATS:
        raise ValueError(f"unknown time-series format {fmt!r}: one of {', '.join(SERIES_FORMATS)}")
    files = _files(fmt, Path(folder), part)
    if fmt == 'ts':
        return read_ts_file(files[0])
    if fmt == 'npz':
        return read_arrays(*files)
    return read_audio_folder(files[0], sample_rate)


# ---- preparation ----------------------------------------------------------------------------------------------------

def _interpolate_missing(x: np.ndarray) -> np.ndarray:
    """x [C, L] with its NaNs filled by linear interpolation along time, the nearest value at the ends, 0 where a
    channel has no value."""
    x = x.copy()
    steps = np.arange(x.shape[1])
    for channel in x:
        missing = np.isnan(channel)
        if missing.all():
            channel[:] = 0.
        elif missing.any():
            channel[missing] = np.interp(steps[missing], steps[~missing], channel[~missing])
    return x


@dataclass(frozen=True)
class SeriesPreparation:
    """How series are made ready for the network: `normalize` ('channel', 'series' or 'none'), then padded with
    zeros at the end or truncated to `length` steps."""
    length: int
    normalize: str = 'channel'

    def __post_init__(self):
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize takes one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.length < 1:
            raise ValueError(f'the series length must be at least 1, got {self.length}')

    def __call__(self, data: LabelledSeries, channel_stats: Optional[Tuple[np.ndarray, np.ndarray]] = None
                 ) -> Tuple[torch.Tensor, List[str]]:
        """The series [N, C, length] of `data` and notes of what was imputed, padded or truncated;
        `channel_stats` (mean, std per channel) for 'channel'."""
        series = [_interpolate_missing(s) for s in data.series]
        if self.normalize == 'series':
            series = [(s - s.mean(1, keepdims=True)) / np.maximum(s.std(1, keepdims=True), 1e-8) for s in series]
        elif self.normalize == 'channel':
            if channel_stats is None:
                raise ValueError("normalize='channel' standardises with the training data's channel_stats: give them")
            mean, std = channel_stats
            series = [(s - mean[:, None]) / std[:, None] for s in series]
        x = np.zeros((len(series), data.num_channels, self.length), dtype=np.float32)
        for item, s in zip(x, series):
            item[:, :min(self.length, s.shape[1])] = s[:, :self.length]
        return torch.from_numpy(x), self._notes(data)

    def _notes(self, data: LabelledSeries) -> List[str]:
        lengths = np.array([s.shape[1] for s in data.series])
        missing = sum(int(np.isnan(s).sum()) for s in data.series)
        notes = []
        if missing:
            values = sum(s.size for s in data.series)
            notes.append(f'{missing} missing values ({100 * missing / values:.2g}%) filled by linear interpolation '
                         'along time')
        shorter, longer = lengths[lengths < self.length], lengths[lengths > self.length]
        if len(shorter):
            notes.append(f'{len(shorter)} series of {_span(shorter)} steps padded with zeros at their end to '
                         f'{self.length}')
        if len(longer):
            notes.append(f'{len(longer)} series of {_span(longer)} steps truncated to their first {self.length}')
        return [f'{data.source}: {note}' for note in notes]


def _span(lengths: np.ndarray) -> str:
    """'7 to 25', or '26' where all are alike."""
    return str(lengths.min()) if lengths.min() == lengths.max() else f'{lengths.min()} to {lengths.max()}'


def channel_statistics(data: LabelledSeries) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel over every value of every series (missing ones left out)."""
    values = np.concatenate([s for s in data.series], axis=1)
    mean, std = np.nanmean(values, 1), np.nanstd(values, 1)
    return mean.astype(np.float32), np.maximum(std, 1e-8).astype(np.float32)


def shuffled_classes(labels: Sequence, seed: int) -> Iterator[np.ndarray]:
    """The indices of each class's items (classes in sorted order), each class's in an order shuffled with `seed`:
    what stratified splits draw from."""
    labels = np.asarray(labels)
    generator = np.random.RandomState(seed)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        generator.shuffle(members)
        yield members


def stratified_indices(labels: Sequence[str], fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of the items kept and of the `fraction` carved out: per class, round(fraction x its items) of them
    (at least one of a class of two or more), drawn with `seed`."""
    kept, carved = [], []
    for members in shuffled_classes(labels, seed):
        count = int(round(fraction * len(members)))
        if fraction > 0 and len(members) > 1:
            count = min(max(count, 1), len(members) - 1)
        carved.append(members[:count])
        kept.append(members[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(carved))


class SeriesDataset(Dataset):
    """One split of a time-series classification dataset, prepared in full: items (x [C, length], class index);
    `classes` the class names, `notes` what the preparation imputed, padded or truncated."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, classes: Tuple[str, ...], notes: Sequence[str] = ()):
        self.items, self.labels, self.classes, self.notes = x, labels, classes, tuple(notes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return self.items[index], int(self.labels[index])


@dataclass(frozen=True)
class TrainingSeriesSummary:
    """What a run's configuration takes from its training data."""
    num_train: int  # series trained on (the validation split held out)
    num_channels: int
    longest: int  # steps of the longest series


def summarize_training_series(dataset: str, root: PathLike, val_fraction: float, seed: int,
                              sample_rate: int = 16000) -> TrainingSeriesSummary:
    """The summary of the training data of the time-series dataset `dataset` in `root`."""
    fmt, folder = _parse_name(dataset, root)
    train = read_part(fmt, folder, 'TRAIN', sample_rate)
    kept, _ = stratified_indices(train.labels, val_fraction, seed)
    return TrainingSeriesSummary(len(kept), train.num_channels, max(s.shape[1] for s in train.series))


def auto_batch_and_epochs(num_train: int) -> Tuple[int, int]:
    """The batch and epochs of a run on `num_train` series (`--global-batch-size auto --epochs auto`): a batch of
    about a tenth of them (InceptionTime's rule), 8 to 64 (batch norm statistics over at least 8 series), and
    `UPDATES` optimizer updates in 100 to 1000 epochs."""
    batch = int(min(64, max(8, 2 ** round(math.log2(max(num_train, 1) / 10)))))
    epochs = int(min(1000, max(100, round(UPDATES * batch / num_train))))
    return batch, epochs


def _parse_name(dataset: str, root: Optional[PathLike]) -> Tuple[str, Path]:
    """The format and folder of the dataset `dataset` ('FORMAT/NAME') in `root`."""
    if not is_series_dataset(dataset):
        raise ValueError(f"a time-series dataset is named FORMAT/NAME, FORMAT one of {', '.join(SERIES_FORMATS)}; "
                         f"got {dataset!r}")
    if not root:
        raise ValueError(f'{dataset} needs --data-dir: the folder that holds {dataset.split("/", 1)[1]}/')
    fmt, name = dataset.split('/', 1)
    return fmt, Path(root) / name


def is_series_dataset(dataset: Optional[str]) -> bool:
    """Whether `dataset` names a time-series dataset ('ts/NAME', 'npz/NAME', 'audio/NAME')."""
    return bool(dataset) and dataset.split('/', 1)[0] in SERIES_FORMATS and '/' in dataset


def _classes_of(train: LabelledSeries) -> Tuple[str, ...]:
    """The declared classes, else the training labels sorted (as numbers where they all are)."""
    if train.classes:
        return train.classes
    names = set(train.labels)
    try:
        return tuple(sorted(names, key=float))
    except ValueError:
        return tuple(sorted(names))


def split_series_dataset(dataset: str, root: PathLike, split: str, val_fraction: float = 0.2, seed: int = 0,
                         length: Optional[int] = None, normalize: str = 'channel',
                         sample_rate: int = 16000) -> SeriesDataset:
    """The `split` ('train', 'validation' or 'test') of the time-series dataset `dataset` ('ts/NAME', ...) in
    `root`: 'train' and 'validation' are the training data less and of a stratified `val_fraction` (drawn with
    `seed`); `length` None: the longest training series'."""
    fmt, folder = _parse_name(dataset, root)
    split = check_split(dataset, split, _SPLITS)
    if not 0 <= val_fraction < 1:
        raise ValueError(f'the validation fraction must be in [0, 1), got {val_fraction}')
    train = read_part(fmt, folder, 'TRAIN', sample_rate)
    classes = _classes_of(train)
    preparation = SeriesPreparation(length or max(s.shape[1] for s in train.series), normalize)
    stats = channel_statistics(train) if normalize == 'channel' else None
    if split == 'test':
        data = read_part(fmt, folder, 'TEST', sample_rate)
        unknown = sorted(set(data.labels) - set(classes))
        if unknown:
            raise ValueError(f'{data.source}: classes {unknown} do not occur in the training data ({", ".join(classes)})')
        if data.num_channels != train.num_channels:
            raise ValueError(f'{data.source}: {data.num_channels} channels, the training data has '
                             f'{train.num_channels}')
        indices = np.arange(len(data.labels))
    else:
        data = train
        kept, carved = stratified_indices(train.labels, val_fraction, seed)
        if split == 'validation' and len(carved) == 0:
            raise ValueError(f'{dataset}: no validation split with a validation fraction of {val_fraction}')
        indices = kept if split == 'train' else carved
    x, notes = preparation(data, stats)
    labels = torch.tensor([classes.index(data.labels[i]) for i in indices])
    return SeriesDataset(x[torch.from_numpy(indices)], labels, classes, notes)
