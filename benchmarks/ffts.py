#!/usr/bin/env python3
"""The FFT convolutions' transforms on the CPU: the C++ FFTs (`ops/fft_cpu.py`) against PyTorch's, with the
padding and cropping copies that PyTorch's need, at the sequence, CIFAR-10 and ImageNet models' sizes, side by side
in one run.

    python benchmarks/ffts.py
    python benchmarks/ffts.py --repeats 25 --output ffts.json

Each row times a pass as a training step makes it (`ops/ffts.py`, the real-FFT operator that the long and the
depthwise convolutions' FFT backends call), forced to either backend: the spectra of x zero-padded to the period,
and the first samples of the inverse transform of spectra on the period. Medians of calls in turn, freed memory
kept for reuse as in training. The extension is compiled for the CPU it runs on and its speed against MKL's
transforms differs between CPUs; the dispatcher times the two where a model first runs a shape, and this table
shows what it chooses between.
"""
import argparse
from functools import partial
from typing import Callable

import torch

from smpconv_models.ops import fft_cpu, ffts, use_backend
from smpconv_models.ops.dispatch import fft_sizes
from smpconv_models.training import keep_freed_memory_for_reuse
from timing import environment, medians_in_turn, parse_args, report

# name: x's shape and layout, kernel size, the kernel's tap at the output position
LAYERS = {
    'sMNIST': ((64, 30, 784), torch.contiguous_format, (300,), (299,)),
    'sMNIST, whole kernel': ((64, 30, 784), torch.contiguous_format, (784,), (783,)),
    'Speech Commands (MFCC)': ((32, 30, 161), torch.contiguous_format, (161,), (160,)),
    'a 1-D period of 2048': ((64, 30, 1024), torch.contiguous_format, (1024,), (1023,)),
    'a 1-D period of 8192': ((16, 30, 4096), torch.contiguous_format, (4096,), (4095,)),
    'raw Speech Commands': ((8, 30, 16000), torch.contiguous_format, (5950,), (5949,)),
    'CIFAR-10 (9 x 9 box)': ((64, 48, 32, 32), torch.contiguous_format, (9, 9), (4, 4)),
    'CIFAR-10 (33 x 33)': ((64, 24, 32, 32), torch.contiguous_format, (33, 33), (16, 16)),
    'smpconv_t stage 1': ((8, 96, 56, 56), torch.channels_last, (31, 31), (15, 15)),
    'smpconv_t stage 3': ((8, 384, 14, 14), torch.channels_last, (27, 27), (13, 13)),
}


def passes(shape, layout, kernel_size, pad):
    """The period and the spectra and the cropped inverse of one layer, as calls."""
    size = shape[2:]
    sizes = fft_sizes(size, kernel_size, pad)
    x = torch.randn(*shape).contiguous(memory_format=layout)
    spectra = torch.randn(*shape[:2], *sizes[:-1], sizes[-1] // 2 + 1, dtype=torch.complex64).flatten(2)
    return sizes, {'spectra': lambda: ffts.spectra(x, sizes),
                   'cropped inverse': lambda: ffts.cropped_signals(spectra, sizes, size, x.dtype)}


def forced(backend: str, call: Callable[[], torch.Tensor]) -> None:
    """`call()` on the FFTs' backend `backend`."""
    with use_backend(backend):
        call()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=15, help='timed calls of each (after 2 untimed)')
    args = parse_args(parser)
    if not fft_cpu.available(torch.zeros(1)):
        raise SystemExit('the C++ FFTs did not build on this machine (see the warning)')
    device = torch.device('cpu')
    keep_freed_memory_for_reuse()
    rows = []
    print('| layer | period | pass | C++ (ms) | PyTorch (ms) | C++ faster |\n|---|---|---|---|---|---|')
    for layer, (shape, layout, kernel_size, pad) in LAYERS.items():
        sizes, calls = passes(shape, layout, kernel_size, pad)
        for name, call in calls.items():
            medians = medians_in_turn({backend: (partial(forced, backend, call), args.repeats)
                                       for backend in ('cpp', 'torch')}, device)
            rows.append(dict(layer=layer, shape=shape, period=sizes, transform=name, cpp_s=medians['cpp'],
                             torch_s=medians['torch']))
            print(f'| {layer} {list(shape)} | {sizes} | {name} | {1e3 * medians["cpp"]:.2f} | '
                  f'{1e3 * medians["torch"]:.2f} | {medians["torch"] / medians["cpp"]:.2f}x |', flush=True)
    report(dict(environment=environment(device, 'float32'), rows=rows), args.output)


if __name__ == '__main__':
    main()
