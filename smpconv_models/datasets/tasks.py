"""The data of the authors' sequence and CIFAR-10 experiments, prepared as their code prepares it.

| task | source | items | splits |
|---|---|---|---|
| `smnist`, `pmnist` | torchvision MNIST | [1, 784] pixels row by row (pMNIST: in a fixed random order) | train, test |
| `scifar10` | torchvision CIFAR-10 | [3, 1024] pixels row by row | train, test |
| `cifar10` | torchvision CIFAR-10 | [3, 32, 32] images | train, test |
| `speech-commands` | the archive of WAV files | [20, 161] MFCCs of 1 s clips | train, validation, test |
| `speech-commands-raw` | the archive of WAV files | [1, 16000] samples | train, validation, test |
| `char-trajectories` | the UEA archive's .ts files | [3, 182] pen trajectories | train, validation, test |
| `fashion-mnist-subset-seq` | bundled with the package | [1, 784] pixels row by row | train, validation |

Training items are augmented as the authors' are: MNIST by their "standard" policy (rotation, translation,
scaling, each with probability 0.5, then an 11 x 11 random erasing), CIFAR-10 by their "resnet" one
(horizontal flip, 4-pixel padded random crop); Speech Commands and Character Trajectories not at all.
`input_dropout` zeroes input values of training items (the authors' `net.dropout_in`, 0.1 for sMNIST/pMNIST).

Speech Commands and Character Trajectories are split 70/15/15 per class, and normalised per time step with
the training split's statistics (pooled over samples and channels), as the authors' code does. The split is
made from the files sorted by name with a fixed seed; the authors' depends on their file system's listing
order, so it cannot be reproduced exactly.
"""
import io
import tarfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from . import FashionMNISTSubset, check_split
from .mfcc import mfcc
from .timeseries import read_ts_file, read_wav, shuffled_classes

__all__ = ['TASKS', 'BUNDLED_TASK', 'create_task_dataset', 'pmnist_permutation', 'SpeechCommands', 'CharacterTrajectories',
           'stratified_split']

BUNDLED_TASK = 'fashion-mnist-subset-seq'
TASKS = ('smnist', 'pmnist', 'scifar10', 'cifar10', 'speech-commands', 'speech-commands-raw', 'char-trajectories',
         BUNDLED_TASK)
_SPLITS = ('train', 'validation', 'test')
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the authors' CIFAR-10 statistics


def pmnist_permutation(seed: int = 0) -> torch.Tensor:
    """The pixel order of permuted MNIST: the authors' is numpy's first draw after `np.random.seed(0)`, the same
    as `np.random.RandomState(0).permutation(784)` (MT19937, stable across numpy versions)."""
    return torch.from_numpy(np.random.RandomState(seed).permutation(784))


class Sequential:
    """An image [C, H, W] read pixel by pixel, row by row: [C, H * W], in another order when given one."""

    def __init__(self, order: Optional[torch.Tensor] = None):
        self.order = order

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        sequence = image.flatten(1)
        return sequence if self.order is None else sequence[:, self.order]


class InputDropout:
    """Zero each input value with probability p, the others scaled by 1 / (1 - p)."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)


def _image_transform(kind: str, training: bool, extra: Sequence[Callable]):
    from torchvision import transforms
    if kind == 'mnist':
        normalize = transforms.Normalize((0.1307,), (0.3081,))
        augment = [
            transforms.RandomApply([transforms.RandomRotation(30)], p=0.5),
            transforms.RandomApply([transforms.RandomAffine(0, translate=(2 / 28, 2 / 28))], p=0.5),
            transforms.RandomApply([transforms.RandomAffine(0, scale=(0.75, 1.))], p=0.5),
        ]
        after = [transforms.RandomErasing(p=0.5, scale=(4 / 28, 4 / 28), ratio=(1., 1.), value=0)]
    elif kind == 'cifar':
        normalize = transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)
        augment = [transforms.RandomHorizontalFlip(), transforms.RandomCrop(32, padding=4)]
        after = []
    else:  # the bundled Fashion-MNIST subset: no augmentation, its own statistics
        normalize, augment, after = transforms.Normalize((0.286,), (0.353,)), [], []
    steps = [*augment, transforms.ToTensor(), normalize, *after] if training else [transforms.ToTensor(), normalize]
    return transforms.Compose(steps + list(extra))


def _root(task: str, root: Optional[Union[str, Path]]) -> Path:
    if not root:
        raise ValueError(f'{task} needs --data-dir: where its data is (or goes, with --dataset-download)')
    return Path(root)


def create_task_dataset(task: str, split: str, root: Optional[Union[str, Path]] = None, training: bool = False,
                        download: bool = False, input_dropout: float = 0., permutation_seed: int = 0) -> Dataset:
    """The `split` of a task's data (see the module docstring), as items (tensor, label); `training` adds the
    task's augmentation and the input dropout."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: one of {', '.join(TASKS)}")
    extra = [InputDropout(input_dropout)] if training and input_dropout else []
    if task in ('smnist', 'pmnist', 'scifar10', 'cifar10'):
        from torchvision.datasets import CIFAR10, MNIST
        split = check_split(task, split, ('train', 'test'))
        mnist = task in ('smnist', 'pmnist')
        order = pmnist_permutation(permutation_seed) if task == 'pmnist' else None
        to_items = [] if task == 'cifar10' else [Sequential(order)]
        transform = _image_transform('mnist' if mnist else 'cifar', training, to_items + extra)
        source = MNIST if mnist else CIFAR10
        return source(str(_root(task, root)), train=split == 'train', transform=transform, download=download)
    if task == BUNDLED_TASK:
        split = check_split(task, split, ('train', 'validation'))
        return FashionMNISTSubset(split, transform=_image_transform('fashion', training, [Sequential()] + extra),
                                  padding=0, rgb=False)
    if download:
        raise ValueError(f'{task} cannot be downloaded by this package: get its archive (see the README) and give '
                         'its folder or file with --data-dir')
    split = check_split(task, split, _SPLITS)
    if task == 'char-trajectories':
        dataset = CharacterTrajectories(_root(task, root), split)
    else:
        dataset = SpeechCommands(_root(task, root), split, mfcc=task == 'speech-commands')
    if extra:
        dataset.transform = extra[0]
    return dataset


# ---- splitting and normalising, as the authors do ---------------------------------------------------------------

def stratified_split(labels: Sequence[int], seed: int = 0, fractions: Tuple[float, float] = (0.7, 0.15)
                     ) -> Dict[str, np.ndarray]:
    """Indices of the train / validation / test splits: per class, 70% / 15% / the rest of its items in an order
    shuffled with `seed`."""
    splits = {name: [] for name in _SPLITS}
    for members in shuffled_classes(labels, seed):
        train_end = int(round(fractions[0] * len(members)))
        validation_end = train_end + int(round(fractions[1] * len(members)))
        splits['train'].append(members[:train_end])
        splits['validation'].append(members[train_end:validation_end])
        splits['test'].append(members[validation_end:])
    return {name: np.sort(np.concatenate(parts)) for name, parts in splits.items()}


def _normalise_per_step(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-5) per time step (the last axis), the statistics of the training items pooled over
    items and channels: the authors' normalisation."""
    pooled = train.transpose(0, -1).reshape(train.shape[-1], -1)
    mean, std = pooled.mean(1), pooled.std(1)
    return (x - mean) / (std + 1e-5)


class _PreparedSplit(Dataset):
    """One split of a dataset prepared in full (tensors of every item), items (x, label)."""
    classes: Tuple[str, ...] = ()

    def _set(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.items, self.labels = x, labels
        self.transform: Optional[Callable] = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        x = self.items[index]
        return (x if self.transform is None else self.transform(x)), int(self.labels[index])


# ---- Speech Commands ------------------------------------------------------------------------------------------------

class SpeechCommands(_PreparedSplit):
    """Speech Commands v0.02 (Warden 2018, CC BY 4.0) as the authors use it: the clips of ten words that last
    exactly 1 s at 16 kHz, as MFCCs [20, 161] or raw samples [1, 16000].

    `root` is the archive `speech_commands_v0.02.tar.gz` or the folder it was extracted to (one folder of WAV
    files per word). The clips are prepared once and kept in `smpconv-processed/` in that folder (beside the
    archive).
    """
    classes = ('yes', 'no', 'up', 'down', 'left', 'right', 'on', 'off', 'stop', 'go')
    length = 16000
    rate = 16000

    def __init__(self, root: Union[str, Path], split: str, mfcc: bool = True):
        split = check_split('Speech Commands', split, _SPLITS)
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f'Speech Commands not found at {root}: give the archive '
                                    'speech_commands_v0.02.tar.gz or the folder it was extracted to')
        kind = 'mfcc' if mfcc else 'raw'
        cache = root / 'smpconv-processed' / f'{kind}.pt' if root.is_dir() else \
            root.parent / 'smpconv-processed' / f'{root.name}-{kind}.pt'
        if cache.is_file():
            prepared = torch.load(cache, weights_only=True)
        else:
            prepared = self._prepare(root, mfcc)
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(prepared, cache)
        self._set(prepared[f'{split}_x'], prepared[f'{split}_y'])

    @classmethod
    def _is_clip(cls, path: str) -> bool:
        """A WAV file in the folder of one of the ten words."""
        return path.endswith('.wav') and Path(path).parent.name in cls.classes

    @classmethod
    def _clips(cls, root: Path) -> List[Tuple[str, bytes]]:
        """(path, WAV bytes) of the ten words' clips, sorted by path."""
        if root.is_dir():
            files = sorted(p for p in root.rglob('*.wav') if p.parent.name in cls.classes)
            return [(str(p.relative_to(root)), p.read_bytes()) for p in files]
        with tarfile.open(root) as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile() and cls._is_clip(m.name)),
                             key=lambda m: m.name)
            return [(m.name, archive.extractfile(m).read()) for m in members]

    @classmethod
    def _prepare(cls, root: Path, as_mfcc: bool) -> Dict[str, torch.Tensor]:
        clips, labels = [], []
        for path, data in cls._clips(root):
            samples, rate = read_wav(io.BytesIO(data), path)
            if rate != cls.rate:
                raise ValueError(f'{path}: sampled at {rate} Hz; Speech Commands clips are at {cls.rate} Hz')
            if len(samples) == cls.length:  # the authors drop the shorter clips
                clips.append(samples)
                labels.append(cls.classes.index(Path(path).parent.name))
        if not clips:
            raise ValueError(f'no 1 s clip of the words {", ".join(cls.classes)} in {root}')
        audio = torch.from_numpy(np.stack(clips))
        x = torch.cat([mfcc(chunk) for chunk in audio.split(1024)]) if as_mfcc else audio[:, None]
        labels = torch.tensor(labels)
        splits = stratified_split(labels.numpy())
        train = x[splits['train']]
        prepared = {}
        for name, indices in splits.items():
            prepared[f'{name}_x'] = _normalise_per_step(x[indices], train)
            prepared[f'{name}_y'] = labels[indices]
        return prepared


# ---- Character Trajectories ---------------------------------------------------------------------------------------

class CharacterTrajectories(_PreparedSplit):
    """Character Trajectories (UCI; the UEA archive's .ts files) as the authors use it: the train and test files
    together, 2,858 pen trajectories [3, 182] of 20 characters, each channel padded to the longest series with its
    last value, split 70/15/15.

    `root` is a folder holding `CharacterTrajectories_TRAIN.ts` and `CharacterTrajectories_TEST.ts`, directly or
    in `CharacterTrajectories/` (as in the UEA archive `Multivariate2018_ts.zip`, `Multivariate_ts/`)."""

    def __init__(self, root: Union[str, Path], split: str):
        split = check_split('Character Trajectories', split, _SPLITS)
        files = self._files(Path(root))
        series, names = [], []
        for path in files:
            read = read_ts_file(path)
            series += read.series
            names += read.labels
        self.classes = tuple(dict.fromkeys(names))  # in order of first appearance, as the authors number them
        length = max(s.shape[1] for s in series)
        x = torch.from_numpy(np.stack([np.concatenate([s, np.repeat(s[:, -1:], length - s.shape[1], axis=1)], 1)
                                       for s in series]))
        labels = torch.tensor([self.classes.index(name) for name in names])
        indices = stratified_split(labels.numpy())
        self._set(_normalise_per_step(x[indices[split]], x[indices['train']]), labels[indices[split]])

    @staticmethod
    def _files(root: Path) -> List[Path]:
        for folder in (root, root / 'CharacterTrajectories', root / 'Multivariate_ts' / 'CharacterTrajectories'):
            files = [folder / f'CharacterTrajectories_{part}.ts' for part in ('TRAIN', 'TEST')]
            if all(f.is_file() for f in files):
                return files
        raise FileNotFoundError(f'CharacterTrajectories_TRAIN.ts and _TEST.ts not found in {root} (nor in its '
                                'CharacterTrajectories/ folder)')
