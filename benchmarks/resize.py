#!/usr/bin/env python3
"""The continuous resizing convolution against a strided one, forward and backward, measured side by side in one run.

    python benchmarks/resize.py                     # CPU, float32, the downsamplings of smpconv_t at 224x224
    python benchmarks/resize.py --device cuda --batch-size 64

Per layer (channels, input size), three rows: `dense s=1/2`, PyTorch's depthwise convolution of stride 2 with a
dense kernel of the footprint an SMP kernel of `--kernel-size` k has at scale 1/2 (2k - 2 taps per axis, the
issue's baseline); `smp s=1/2`, `SMPContinuousConv2d(scale=0.5)` (its kernel sampled from the points
included); `smp s=0.73`, the same layer at a scale with no short period. Each time is the median of a step
(forward, sum, backward into the input and the parameters); ratios are to the row above. Prints a markdown
table; --output also writes JSON.
"""
import argparse

import torch
import torch.nn.functional as F

from smpconv_models import SMPContinuousConv2d
from timing import environment, median_seconds, parse_args, report

# smpconv_t's stride-2 depthwise convolutions at 224x224: the stem's, then each stage transition's
LAYERS = ((96, 112), (192, 56), (384, 28), (768, 14))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--kernel-size', type=int, default=5, help='taps of the SMP kernel at scale 1')
    parser.add_argument('--points', type=int, default=8)
    parser.add_argument('--min-seconds', type=float, default=1.)
    args = parse_args(parser)
    device, k = torch.device(args.device), args.kernel_size
    rows = []
    print('| channels, input | step | ms | ratio |\n|---|---|---|---|')
    for channels, size in LAYERS:
        x = torch.randn(args.batch_size, channels, size, size, device=device, requires_grad=True)
        layer = SMPContinuousConv2d(channels, k, args.points, device=device)
        dense = torch.randn(channels, 1, 2 * k - 2, 2 * k - 2, device=device, requires_grad=True)
        steps = {
            'dense s=1/2': lambda: F.conv2d(x, dense, stride=2, padding=k - 2, groups=channels),
            'smp s=1/2': lambda: layer(x, scale=0.5),
            'smp s=0.73': lambda: layer(x, scale=0.73),
        }
        previous = None
        for name, step in steps.items():
            seconds = median_seconds(lambda: step().sum().backward(), device, min_seconds=args.min_seconds)
            ratio = '' if previous is None else f'{seconds / previous:.2f}x'
            print(f'| {channels}, {size}x{size} | {name} | {1e3 * seconds:.1f} | {ratio} |')
            rows.append(dict(channels=channels, size=size, step=name, seconds=seconds))
            previous = seconds
    report(dict(environment=environment(device, 'float32'), batch_size=args.batch_size, kernel_size=k,
                rows=rows), args.output)


if __name__ == '__main__':
    main()
