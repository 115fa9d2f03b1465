#!/usr/bin/env python3
"""Where SMP kernels are nonzero: per layer, the box of taps its points reach and the taps each filter has.

    python benchmarks/nonzero_box.py                               # the models as created (seed 0)
    python benchmarks/nonzero_box.py --checkpoint RUN/model.safetensors   # a run's weights (its model)

Per SMP layer (a module with points: the sequence and CIFAR-10 models' CKConv, the ImageNet models' SMPConv2d):
its kernel's taps; the box of taps any of its points reaches (`SMPKernel.nonzero_box`, taking in the current
position's tap, which the layers convolve with), as rows x columns or a band of the newest taps; the box's share
of the kernel; and the mean share of a filter's taps that are nonzero (the whole kernel sampled). The box is
what the layers' convolutions cost since issue 21; the share per filter is what a sparse path could save beyond.
"""
import argparse
from pathlib import Path

import timm
import torch

import smpconv_models
from smpconv_models.smp import SMPKernel

MODELS = ('smpconv_tcn_smnist', 'smpconv_tcn_speech_raw', 'smpconv_resnet_cifar10', 'smpconv_t')


def smp_layers(model: torch.nn.Module):
    """(name, layer, its points) of every layer that samples an SMP kernel."""
    for name, module in model.named_modules():
        points = getattr(module, 'points', None)
        if isinstance(points, SMPKernel) and hasattr(module, 'kernel_size'):
            yield name, module, points


def describe(model: torch.nn.Module) -> list:
    rows = []
    for name, layer, points in smp_layers(model):
        size = list(layer.kernel_size)
        causal = len(size) == 1
        keep = [size[0] - 1] if causal else [k // 2 for k in size]
        box = points.nonzero_box(size, keep)
        with torch.no_grad():
            kernel = points(size).flatten(0, -len(size) - 1)  # [filters (x inputs), *size]
        taps = kernel[0].numel()
        per_filter = kernel.ne(0).flatten(1).float().mean(1)
        extent = [stop - start for start, stop in box]
        rows.append(dict(layer=name, kernel=size, box=box, box_taps=extent,
                         box_share=torch.tensor(extent).prod().item() / taps,
                         nonzero_per_filter=per_filter.mean().item(), band=causal))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=list(MODELS))
    parser.add_argument('--checkpoint', default=None, help="a run's weights file: its model, instead of --models")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.checkpoint:
        models = {Path(args.checkpoint).parent.name: smpconv_models.create_from_checkpoint(args.checkpoint)}
    else:
        models = {name: timm.create_model(name) for name in args.models}
    print('| model | layer | kernel | nonzero box | box / kernel | nonzero taps per filter |')
    print('|---|---|---|---|---|---|')
    for model_name, model in models.items():
        for row in describe(model.eval()):
            kernel = ' x '.join(map(str, row['kernel']))
            box = (f"newest {row['box_taps'][0]}" if row['band'] else ' x '.join(map(str, row['box_taps'])))
            print(f"| {model_name} | {row['layer']} | {kernel} | {box} | {row['box_share']:.0%} | "
                  f"{row['nonzero_per_filter']:.0%} |")


if __name__ == '__main__':
    main()
