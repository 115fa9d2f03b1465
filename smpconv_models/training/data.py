"""Training and evaluation data: timm's datasets and transforms, loaders sharded across processes."""
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import create_dataset, create_transform, resolve_data_config
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Subset

from ..datasets import FashionMNISTSubset
from ..datasets.tasks import TASKS, create_task_dataset
from ..datasets.timeseries import is_series_dataset, split_series_dataset
from .config import BUNDLED_DATASET, ConfigError
from .preemption import ignore_preemption_signals
from .settings import AugmentSettings, DataSettings, SplitSettings

__all__ = ['create_datasets', 'create_eval_dataset', 'num_classes_of', 'resolve_image_config',
           'SeededAugmentation', 'RandomBatchScale', 'create_batch_scale', 'create_train_loader', 'create_eval_loader',
           'set_epoch']


# the split folder names timm's dataset factory looks for
_SPLIT_SYNONYMS = (('train', 'training'), ('validation', 'val', 'valid', 'eval', 'evaluation'))


def _timm_dataset(data: DataSettings, split: str, is_training: bool, num_samples: Optional[int],
                  batch_size: int) -> Dataset:
    is_file_dataset = '/' not in data.dataset  # a folder or tar, not 'hfds/...', 'wds/...', ...
    if is_file_dataset and not (data.data_dir and os.path.exists(data.data_dir)):
        raise ConfigError(f'dataset folder or tar not found: {data.data_dir!r} (set --data-dir, or leave out '
                          f'--data-dir and --dataset to train on the bundled {BUNDLED_DATASET})')
    if is_file_dataset and os.path.isdir(data.data_dir):
        # without a folder of its split, timm reads the whole root: training images would be validated on
        names = next((names for names in _SPLIT_SYNONYMS if split in names), (split,))
        if not any(os.path.isdir(os.path.join(data.data_dir, name)) for name in names):
            raise ConfigError(f'{data.data_dir} has no folder for the split {split!r} (looked for {", ".join(names)})')
    try:
        return create_dataset(
            data.dataset, root=data.data_dir, split=split, is_training=is_training, class_map=data.class_map,
            download=data.dataset_download, batch_size=batch_size, seed=data.seed, num_samples=num_samples,
            input_img_mode=data.input_img_mode)
    except RuntimeError as e:
        if 'Found 0 images' in str(e):
            raise ConfigError(f'no images for split {split!r} under {data.data_dir}: {e}') from e
        raise


def _is_task(dataset: str) -> bool:
    """Whether `dataset` is one of the authors' sequence and CIFAR-10 tasks, whose items come prepared (and
    augmented for training) as the authors prepare them, rather than through timm's image transforms."""
    return dataset in TASKS


def _comes_prepared(dataset: str) -> bool:
    """Whether the items of `dataset` come as tensors for the model: a task's or a time-series dataset's."""
    return _is_task(dataset) or is_series_dataset(dataset)


def _series_dataset(data: DataSettings, split: str) -> Dataset:
    try:
        return split_series_dataset(data.dataset, data.data_dir, split, data.val_fraction, data.seed,
                                    data.series_length, data.series_normalize, data.sample_rate)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _task_dataset(data: DataSettings, split: str, training: bool, input_dropout: float = 0.) -> Dataset:
    try:
        return create_task_dataset(data.dataset, split, data.data_dir, training=training,
                                   download=data.dataset_download, input_dropout=input_dropout,
                                   permutation_seed=data.permutation_seed)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from e
    except RuntimeError as e:  # torchvision: 'Dataset not found or corrupted. You can use download=True ...'
        raise ConfigError(f'{data.dataset} not found in {data.data_dir} ({e}); --dataset-download fetches it') from e


def create_eval_dataset(data: DataSettings, split: str, batch_size: int, num_samples: Optional[int] = None) -> Dataset:
    """The `split` of the dataset that `--dataset` and `--data-dir` name, for evaluation (`batch_size` shards an
    iterable dataset)."""
    if _is_task(data.dataset):
        return _task_dataset(data, split, training=False)
    if is_series_dataset(data.dataset):
        return _series_dataset(data, split)
    if data.dataset == BUNDLED_DATASET:
        _check_no_data_dir(data)
        return FashionMNISTSubset(split)
    return _timm_dataset(data, split, False, num_samples, batch_size)


def _check_no_data_dir(data: DataSettings) -> None:
    if data.data_dir:
        raise ConfigError(f"--data-dir {data.data_dir} is given, but the dataset is the bundled "
                          f"{BUNDLED_DATASET}: add --dataset '' for a folder or tar (or another timm dataset)")


def create_datasets(data: DataSettings, splits: SplitSettings, batch_size: int,
                    input_dropout: float = 0.) -> Tuple[Dataset, Dataset]:
    """The training and validation datasets that `--dataset` and `--data-dir` name; `input_dropout` for the
    training items of a sequence task."""
    if _is_task(data.dataset):
        return (_task_dataset(data, splits.train_split, True, input_dropout),
                _task_dataset(data, splits.val_split, False))
    if is_series_dataset(data.dataset):
        return _series_dataset(data, splits.train_split), _series_dataset(data, splits.val_split)
    if data.dataset == BUNDLED_DATASET:
        _check_no_data_dir(data)
        return FashionMNISTSubset(splits.train_split), FashionMNISTSubset(splits.val_split)
    train = _timm_dataset(data, splits.train_split, True, splits.train_num_samples, batch_size)
    val = create_eval_dataset(data, splits.val_split, batch_size, splits.val_num_samples)
    train_classes = getattr(getattr(train, 'reader', None), 'class_to_idx', None)
    val_classes = getattr(getattr(val, 'reader', None), 'class_to_idx', None)
    if train_classes and val_classes and train_classes != val_classes:
        raise ConfigError(f'the {splits.train_split!r} and {splits.val_split!r} splits of {data.data_dir} have '
                          f'different classes ({len(train_classes)} and {len(val_classes)})')
    return train, val


def num_classes_of(dataset: Dataset) -> Optional[int]:
    """The number of classes a dataset declares, None when it does not say."""
    classes = getattr(dataset, 'classes', None)
    if classes is None:
        class_to_idx = getattr(getattr(dataset, 'reader', None), 'class_to_idx', None)
        classes = class_to_idx or None
    return len(classes) if classes else None


def resolve_image_config(data: DataSettings, model: nn.Module) -> Optional[Dict[str, Any]]:
    """timm's preprocessing of the images for `model` (input size, normalisation, crop), with the values `data`
    sets over the model's; None for a task or time series, whose items come prepared."""
    if _comes_prepared(data.dataset):
        return None
    return resolve_data_config(dict(input_size=data.input_size, crop_pct=data.crop_pct, mean=data.mean,
                                    std=data.std, interpolation=data.interpolation), model=model)


class SeededAugmentation(Dataset):
    """Seeds every sample's random augmentation from (seed, epoch, index).

    A sample is then augmented the same way whichever process, loader worker or step loads it: a run that
    resumes mid-epoch continues exactly as the uninterrupted run would have, and a run on N processes
    sees the same images as one process with the same global batch. The caller's random states are left
    as they were.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample_seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed)
                random.seed(sample_seed)
                np.random.seed(sample_seed)
                return self.dataset[index]
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


@dataclass(frozen=True)
class RandomBatchScale:
    """Resizes each training batch by a factor drawn log-uniformly from `factors` (scale augmentation at the
    layer: a model that adapts to the input size learns every scale of its stem).

    The factor depends on (seed, epoch, batch index) alone: every process resizes its part of a batch alike, and
    a resumed run draws what the uninterrupted one did. Whole batches, as tensors: a batch needs one size.
    Sizes are rounded to a multiple of `multiple` pixels: the continuous layers then resize by factors of short
    period (16 px steps of a 64 px model: 4/m at its stem), which their polyphase path computes as a few strided
    convolutions; an arbitrary factor takes the banded path, several times slower (docs/resizing.md, Speed).
    """
    factors: Tuple[float, float]
    seed: int
    multiple: int = 16

    def size(self, height: int, width: int, epoch: int, index: int) -> Tuple[int, int]:
        """The size batch `index` of `epoch` is trained at, for images of `height` x `width`."""
        low, high = (math.log(f) for f in self.factors)
        factor = math.exp(np.random.default_rng([self.seed, epoch, index]).uniform(low, high))
        return tuple(max(self.multiple, self.multiple * round(n * factor / self.multiple)) for n in (height, width))

    def __call__(self, x: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        size = self.size(x.shape[-2], x.shape[-1], epoch, index)
        if size == tuple(x.shape[-2:]):
            return x
        # antialiased: a smaller batch is what the images resized from their originals would look like
        return F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=True)


def create_batch_scale(augment: AugmentSettings, data: DataSettings) -> Optional[RandomBatchScale]:
    """The resizing of training batches that --scale-augmentation asks for, None without."""
    return None if augment.scale_augmentation is None else RandomBatchScale(augment.scale_augmentation, data.seed)


def _loader_kwargs(data: DataSettings, device: torch.device, dataset: Dataset) -> Dict[str, Any]:
    if hasattr(dataset, 'set_loader_cfg'):  # timm's iterable readers split their shards over the workers
        dataset.set_loader_cfg(num_workers=data.workers)
    # a loader of its own RNG: a new iterator (after a resume, say) leaves the global RNG untouched
    return dict(num_workers=data.workers, pin_memory=data.pin_mem and device.type == 'cuda',
                generator=torch.Generator().manual_seed(data.seed),
                worker_init_fn=ignore_preemption_signals if data.workers else None)


def create_train_loader(dataset: Dataset, data_config: Optional[Dict[str, Any]], augment: AugmentSettings,
                        batch_size: int, data: DataSettings, world_size: int, rank: int,
                        device: torch.device) -> DataLoader:
    """Augmented, shuffled batches of `batch_size`; each process gets every world_size-th sample. Images get
    timm's training transform of `data_config`; a task's dataset (data_config None) comes augmented."""
    if data_config is not None:
        dataset.transform = create_transform(
            data_config['input_size'], is_training=True, no_aug=augment.no_aug, scale=augment.scale,
            ratio=augment.ratio, hflip=augment.hflip, vflip=augment.vflip, color_jitter=augment.color_jitter,
            auto_augment=augment.aa or None, interpolation=augment.train_interpolation,
            mean=data_config['mean'], std=data_config['std'], re_prob=augment.reprob, re_mode=augment.remode,
            re_count=augment.recount)
    if isinstance(dataset, IterableDataset):  # timm's iterable readers shard across processes themselves
        return DataLoader(dataset, batch_size=batch_size, drop_last=True, **_loader_kwargs(data, device, dataset))
    # The sampler's shuffle depends on (seed, epoch) alone: one process with batch N*B takes the same
    # samples per step as N processes with batch B. Workers are started afresh each epoch, so that they
    # carry the dataset's current epoch.
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=data.seed,
                                 drop_last=True)
    return DataLoader(SeededAugmentation(dataset, data.seed), batch_size=batch_size, sampler=sampler,
                      drop_last=True, **_loader_kwargs(data, device, dataset))


def create_eval_loader(dataset: Dataset, data_config: Optional[Dict[str, Any]], batch_size: int, data: DataSettings,
                       world_size: int, rank: int, device: torch.device) -> DataLoader:
    """Every validation sample exactly once over all processes (no padding, so metrics are exact); images through
    timm's evaluation transform of `data_config`, a task's dataset (data_config None) as it comes."""
    if data_config is not None:
        dataset.transform = create_transform(
            data_config['input_size'], is_training=False, interpolation=data_config['interpolation'],
            mean=data_config['mean'], std=data_config['std'], crop_pct=data_config['crop_pct'])
    if not isinstance(dataset, IterableDataset):
        dataset = Subset(dataset, range(rank, len(dataset), world_size))
    return DataLoader(dataset, batch_size=batch_size, persistent_workers=data.workers > 0,
                      **_loader_kwargs(data, device, dataset))


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Point the loader's shuffling and augmentation seeds at `epoch`."""
    for part in (loader.sampler, loader.dataset):
        if hasattr(part, 'set_epoch'):
            part.set_epoch(epoch)
