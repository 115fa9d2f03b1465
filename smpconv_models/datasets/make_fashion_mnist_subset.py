"""Regenerates the bundled Fashion-MNIST subset (`fashion_mnist_subset.npz`) from the full data set.

    python -m smpconv_models.datasets.make_fashion_mnist_subset [--source /usr/share/datasets/fashion-mnist]

The source is Fashion-MNIST's IDX files, e.g. from Debian's package `dataset-fashion-mnist`. The subset is
class-balanced and drawn with a fixed seed: 100 training images per class from the training set and 20
validation images per class from the test set, so the held-out part is never trained on.
"""
import argparse
import gzip
from pathlib import Path

import numpy as np

TRAIN_PER_CLASS = 100
VALIDATION_PER_CLASS = 20
SEED = 20240601
OUTPUT = Path(__file__).with_name('fashion_mnist_subset.npz')


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array."""
    opener = gzip.open if path.suffix == '.gz' else open
    with opener(path, 'rb') as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `per_class` random samples of every class."""
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--source', type=Path, default=Path('/usr/share/datasets/fashion-mnist'))
    parser.add_argument('--output', type=Path, default=OUTPUT)
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, prefix, per_class in (('train', 'train', TRAIN_PER_CLASS),
                                     ('validation', 't10k', VALIDATION_PER_CLASS)):
        images = read_idx(args.source / f'{prefix}-images-idx3-ubyte.gz')
        labels = read_idx(args.source / f'{prefix}-labels-idx1-ubyte.gz')
        keep = balanced_subset(labels, per_class, rng)
        arrays[f'{split}_images'], arrays[f'{split}_labels'] = images[keep], labels[keep]
    np.savez_compressed(args.output, **arrays)
    print(f'wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KiB): '
          + ', '.join(f'{k} {v.shape}' for k, v in arrays.items()))


if __name__ == '__main__':
    main()
