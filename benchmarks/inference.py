#!/usr/bin/env python3
"""Inference latency and throughput of the SMPConv models against timm's ConvNeXt, measured in one run.

    python benchmarks/inference.py                                   # CPU: batch 1 and 16, both layouts
    python benchmarks/inference.py --device cuda --dtype bfloat16 --batch-sizes 1 256 --layouts channels_last --compile

Forms: `eval`, the training form in eval mode (SMP kernels sampled once, then cached); `fused`, after
timm's reparameterize_model (one depthwise convolution per large kernel, batch norms folded); with
--compile, `fused+compile` (torch.compile). ConvNeXt runs as `eval` (and `eval+compile`). Each SMPConv row
is also a ratio to the ConvNeXt of its size (smpconv_b: convnext_base, the others: convnext_tiny) in the
same layout, dtype and batch, compiled against compiled. Prints a markdown table; --output also writes JSON.
"""
import argparse

import timm
import torch
from timm.models import reparameterize_model

import smpconv_models  # noqa: F401  registers the SMPConv models
from timing import environment, median_seconds, parse_args, report

BASELINES = {'smpconv_b': 'convnext_base'}
DEFAULT_BASELINE = 'convnext_tiny'


def measure(model: torch.nn.Module, x: torch.Tensor, warmup: int, min_repeats: int, min_seconds: float) -> float:
    """Median seconds of one forward pass."""
    with torch.inference_mode():
        return median_seconds(lambda: model(x), x.device, warmup, min_repeats, min_seconds)


def forms(name: str, device: torch.device, dtype: torch.dtype, layout: torch.memory_format, compile_: bool):
    """(form, model) pairs of one architecture, ready to run."""
    model = timm.create_model(name).eval()
    if name.startswith('smpconv'):
        variants, compiled = {'eval': model, 'fused': reparameterize_model(model)}, 'fused'
    else:
        variants, compiled = {'eval': model}, 'eval'
    for form, variant in variants.items():
        variant = variant.to(device=device, dtype=dtype, memory_format=layout)
        yield form, variant
        if compile_ and form == compiled:
            yield f'{form}+compile', torch.compile(variant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16', 'float16'))
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 16])
    parser.add_argument('--layouts', nargs='+', default=['nchw', 'channels_last'], choices=('nchw', 'channels_last'))
    parser.add_argument('--models', nargs='+',
                        default=['smpconv_t', 'smpconv_b', 'smpconv_mobile31', 'smpconv_mobile51'])
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--compile', action='store_true', help='also time torch.compile (slow to compile on CPU)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--min-repeats', type=int, default=3)
    parser.add_argument('--min-seconds', type=float, default=2.)
    args = parse_args(parser)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    baselines = sorted({BASELINES.get(m, DEFAULT_BASELINE) for m in args.models})

    rows = []
    print('| batch | layout | model | form | latency (ms) | images/s | ratio |\n|---|---|---|---|---|---|---|')
    for batch_size in args.batch_sizes:
        for layout_name in args.layouts:
            layout = torch.channels_last if layout_name == 'channels_last' else torch.contiguous_format
            x = torch.randn(batch_size, 3, args.img_size, args.img_size, device=device, dtype=dtype)
            x = x.contiguous(memory_format=layout)
            reference = {}
            for name in baselines + args.models:
                for form, model in forms(name, device, dtype, layout, args.compile):
                    seconds = measure(model, x, args.warmup, args.min_repeats, args.min_seconds)
                    row = dict(batch=batch_size, layout=layout_name, model=name, form=form,
                               latency_ms=1e3 * seconds, images_per_s=batch_size / seconds)
                    if name in baselines:
                        reference[(name, form.endswith('compile'))] = seconds
                    else:
                        base = BASELINES.get(name, DEFAULT_BASELINE)
                        row['ratio'] = seconds / reference[(base, form.endswith('compile'))]
                        row['vs'] = base
                    rows.append(row)
                    print(f"| {batch_size} | {layout_name} | {name} | {form} | {row['latency_ms']:.1f} | "
                          f"{row['images_per_s']:.1f} | " + (f"{row['ratio']:.2f} x {row['vs']}" if 'ratio' in row
                                                             else '') + ' |', flush=True)

    report(dict(environment=environment(device, args.dtype), rows=rows), args.output)


if __name__ == '__main__':
    main()
