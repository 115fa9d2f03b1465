#!/usr/bin/env python3
"""What the eval-mode kernel cache saves and what checking it costs, at batch 1, in one run.

    python benchmarks/kernel_cache.py                      # smpconv_t, 224x224, CPU
    python benchmarks/kernel_cache.py --model smpconv_b --device cuda

In eval mode under no_grad an SMP layer reuses its sampled kernel while its points are the same value for
value (`SMPKernel._inference_kernel`). Forms, each timed interleaved with the others: `sampled` (every
forward samples every kernel, as in training), `cached` (the default), `fused` (re-parameterised: no SMP
kernels at all); and the check alone, comparing every layer's points with the copies it keeps.
"""
import argparse
import statistics

import timm
import torch
from timm.models import reparameterize_model

import smpconv_models  # noqa: F401  registers the SMPConv models
from smpconv_models.smp import SMPKernel, _same_values
from timing import environment, parse_args, report, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='smpconv_t')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--repeats', type=int, default=25)
    args = parse_args(parser)
    device = torch.device(args.device)
    model = timm.create_model(args.model).eval().to(device)
    fused = reparameterize_model(model)
    kernels = [m for m in model.modules() if isinstance(m, SMPKernel)]
    x = torch.randn(1, 3, args.img_size, args.img_size, device=device)

    def forward(net, cached):
        def run():
            for kernel in kernels:  # an instance attribute shadows the method: sample as in training
                if cached:
                    vars(kernel).pop('_serves_from_cache', None)
                else:
                    kernel._serves_from_cache = lambda: False
            net(x)
        return run

    def check():
        for kernel in kernels:
            _same_values((kernel.positions, kernel.radii, kernel.weights), kernel._cache_sources)

    def sample():
        for kernel in kernels:
            kernel._sample(list(kernel.kernel_size), kernel.grid, None)

    runs = {'sampled': forward(model, False), 'cached': forward(model, True), 'fused': forward(fused, True),
            'sampling alone': sample, 'check alone': check}
    times = {name: [] for name in runs}
    with torch.no_grad():
        for repeat in range(args.repeats + 2):  # the first two rounds warm up (and time the depthwise backends)
            for name, run in runs.items():
                elapsed = seconds(run, device)
                if repeat >= 2:
                    times[name].append(elapsed)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f'| {args.model}, batch 1, {args.img_size}x{args.img_size} | median (ms) | vs cached |\n|---|---|---|')
    for name, median in medians.items():
        print(f"| {name} | {1e3 * median:.2f} | {median / medians['cached']:.3f} |")
    report(dict(environment=environment(device, 'float32'), median_seconds=medians), args.output)


if __name__ == '__main__':
    main()
