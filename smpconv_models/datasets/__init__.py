"""Data bundled with the package, so that training runs anywhere without a download."""
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

__all__ = ['FashionMNISTSubset', 'check_split']

_TRAIN_SPLITS = ('train', 'training')
_EVAL_SPLITS = ('validation', 'val', 'valid', 'eval', 'evaluation', 'test')


def check_split(dataset: str, split: str, splits: Sequence[str]) -> str:
    """`split` by its name among `splits` (the dataset's), 'val' read as 'validation'; a one-line error if the
    dataset has no such split."""
    names = {'val': 'validation', 'valid': 'validation', 'eval': 'validation', 'training': 'train'}
    split = names.get(split, split)
    if split not in splits:
        raise ValueError(f"{dataset} has the splits {', '.join(splits)}, not {split!r}")
    return split


class FashionMNISTSubset(torch.utils.data.Dataset):
    """A class-balanced Fashion-MNIST subset: 1,000 training and 200 validation images of 10 classes.

    Fashion-MNIST is (c) 2017 Zalando SE, MIT licence (`LICENSE-fashion-mnist` beside this file); the
    subset is made by `make_fashion_mnist_subset.py`. Images are returned as 32x32 RGB PIL images by default:
    the 28x28 grayscale originals padded with 2 background (black) pixels, so that a stride-32 network keeps
    a feature map after upsampling, and replicated to three channels, so that the ImageNet transforms and
    models apply unchanged; `padding=0, rgb=False` gives the originals.
    """
    classes = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
               'Ankle boot')
    file = Path(__file__).with_name('fashion_mnist_subset.npz')

    def __init__(self, split: str = 'train', transform: Optional[Callable] = None,
                 target_transform: Optional[Callable] = None, padding: int = 2, rgb: bool = True):
        if split in _TRAIN_SPLITS:
            prefix = 'train'
        elif split in _EVAL_SPLITS:
            prefix = 'validation'
        else:
            raise ValueError(f"unknown split {split!r} of the bundled Fashion-MNIST subset: "
                             f"use one of {_TRAIN_SPLITS + _EVAL_SPLITS}")
        with np.load(self.file) as data:
            self.images = np.pad(data[f'{prefix}_images'], ((0, 0), (padding, padding), (padding, padding)))
            self.labels = data[f'{prefix}_labels'].astype(np.int64)
        self.mode = 'RGB' if rgb else 'L'
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[object, object]:
        image = Image.fromarray(self.images[index]).convert(self.mode)
        target = int(self.labels[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target
