#!/usr/bin/env python3
"""smpconv_t against convnext_tiny, measured side by side in one run: a training step, evaluation, the first
forward pass of a new shape, and where a step spends its time.

    python benchmarks/training.py                          # CPU, float32, 224x224, batch 8 and 32, both layouts
    python benchmarks/training.py --profile --batch-sizes 8  # and torch.profiler's operator table of a step
    python benchmarks/training.py --autocast bfloat16      # bf16 autocast (worth it where the CPU has AMX)
    python benchmarks/training.py --compile                # both models through torch.compile (inductor)
    python benchmarks/training.py --system-malloc          # glibc's default malloc, as before train_imagenet.py set it
    python benchmarks/training.py --whole-kernels          # and smpconv_t convolving with its whole kernels
    python benchmarks/training.py --without-large-kernels  # and smpconv_t with its large-kernel pairs left out
    python benchmarks/training.py --checkpoint RUN/model.safetensors  # smpconv_t with trained weights

A training step is forward, cross-entropy, backward and an AdamW step (median of --steps steps after 2
untimed ones, which include the depthwise dispatcher's timing; the models' steps taken in turn, one of each per
round, so that a machine whose speed drifts moves them alike). `eval` is a no_grad forward pass at the
largest batch (median, after a first call, which is reported apart: it includes choosing the depthwise
backends for the new shapes, from an empty cache). smpconv_t convolves with the box of taps its points reach
(issue 21); `smpconv_t, whole kernels` (--whole-kernels) with its whole kernels, as before;
`smpconv_t, no large-kernel pairs` (--without-large-kernels) with each pair (the SMP convolution and the small
depthwise one beside it) an identity: what the rest of the network costs, a floor that no depthwise convolution,
however fast, takes smpconv_t under. smpconv_t is created with seed 0, or with the weights of --checkpoint (a
run's, or the authors'), whose kernels' boxes are those its points have learned, with the model arguments and
classes the checkpoint records (layers whose sampling grid a checkpoint sets, where the authors' EMA weights
averaged it away from the exact grid, convolve with their whole kernels: `SMPKernel.nonzero_box`).
"""
import argparse
import statistics
from contextlib import nullcontext
from functools import partial
from typing import Optional
from unittest import mock

import timm
import torch
from torch.profiler import ProfilerActivity, profile

from smpconv_models import SMPConv2d, SMPLargeKernelConv, create_from_checkpoint
from smpconv_models.ops import clear_choices
from smpconv_models.training import keep_freed_memory_for_reuse
from timing import environment, medians_in_turn, parse_args, report, seconds, training_step

MODELS = ('smpconv_t', 'convnext_tiny')
ADAMW = partial(torch.optim.AdamW, lr=1e-4)


def whole_kernels():
    """smpconv_t's SMP layers convolving with every tap that meets the image, zero or not."""
    return mock.patch.object(SMPConv2d, '_nonzero_window', lambda layer, window: window)


def without_large_kernel_pairs():
    """smpconv_t's large-kernel pairs as identities: the cost of everything else in the network."""
    return mock.patch.object(SMPLargeKernelConv, 'forward', lambda layer, x: x)


# smpconv_t measured otherwise: (option, what the table says of it, context that makes it so)
VARIANTS = (('whole_kernels', 'whole kernels', whole_kernels),
            ('without_large_kernels', 'no large-kernel pairs', without_large_kernel_pairs))


def autocast_context(device: torch.device, dtype: str):
    return nullcontext() if dtype == 'float32' else torch.autocast(device.type, dtype=getattr(torch, dtype))


def make(name: str, device: torch.device, layout: torch.memory_format, compile_model: bool,
         checkpoint: Optional[str]) -> torch.nn.Module:
    """The model as created (seed 0), smpconv_t with `checkpoint`'s weights where one is given."""
    torch.manual_seed(0)
    if checkpoint is not None and name == MODELS[0]:
        model = create_from_checkpoint(checkpoint, name)
    else:
        model = timm.create_model(name)
    model = model.to(device=device, memory_format=layout)
    if not compile_model:
        return model
    torch.compiler.reset()  # each model and variant compiled afresh, none counting toward another's recompile limit
    return torch.compile(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[8, 32])
    parser.add_argument('--layouts', nargs='+', default=['nchw', 'channels_last'], choices=('nchw', 'channels_last'))
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--autocast', default='float32', choices=('float32', 'bfloat16', 'float16'))
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile both models (compiled in the untimed steps and first calls)')
    parser.add_argument('--system-malloc', action='store_true',
                        help="glibc's default allocator settings, not those train_imagenet.py sets on the CPU")
    parser.add_argument('--profile', action='store_true', help="print torch.profiler's operator table of a step")
    parser.add_argument('--checkpoint', default=None,
                        help="smpconv_t's weights (a run's model.safetensors, the authors' checkpoint)")
    parser.add_argument('--whole-kernels', action='store_true',
                        help='also smpconv_t convolving with its whole kernels (before issue 21)')
    parser.add_argument('--without-large-kernels', action='store_true',
                        help='also smpconv_t with its large-kernel pairs as identities (a floor for its step)')
    args = parse_args(parser)
    # (label, model, context) of each model measured
    models = [(MODELS[0], MODELS[0], nullcontext)] + [
        (f'{MODELS[0]}, {what}', MODELS[0], context) for option, what, context in VARIANTS if getattr(args, option)] + [
        (MODELS[1], MODELS[1], nullcontext)]
    device = torch.device(args.device)
    freed_memory_kept = device.type == 'cpu' and not args.system_malloc and keep_freed_memory_for_reuse()
    autocast = autocast_context(device, args.autocast)
    create = partial(make, device=device, compile_model=args.compile, checkpoint=args.checkpoint)
    rows = []

    def record(measure, batch, layout, name, seconds):
        rows.append(dict(measure=measure, batch=batch, layout=layout, model=name, seconds=seconds))
        print(f'{measure}, batch {batch}, {layout}, {name}: {seconds:.3f} s', flush=True)

    for layout_name in args.layouts:
        layout = torch.channels_last if layout_name == 'channels_last' else torch.contiguous_format
        for batch in args.batch_sizes:
            x = torch.randn(batch, 3, args.img_size, args.img_size, device=device).contiguous(memory_format=layout)
            clear_choices()
            steps = {name: (training_step(create(model_name, layout=layout).train(), x, ADAMW, context, autocast),
                            args.steps)
                     for name, model_name, context in models}
            for name, step_s in medians_in_turn(steps, device).items():
                record('training step', batch, layout_name, name, step_s)
                if args.profile:
                    with profile(activities=[ProfilerActivity.CPU]) as prof:
                        steps[name][0]()
                    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=25), flush=True)
        batch = max(args.batch_sizes)
        x = torch.randn(batch, 3, args.img_size, args.img_size, device=device).contiguous(memory_format=layout)
        for name, model_name, context in models:
            clear_choices()
            model = create(model_name, layout=layout).eval()
            with torch.no_grad(), autocast, context():
                first = seconds(lambda: model(x), device)
                later = statistics.median(seconds(lambda: model(x), device) for _ in range(args.steps))
            record('eval, first call', batch, layout_name, name, first)
            record('eval', batch, layout_name, name, later)

    print('\n| measure | batch | layout | smpconv_t (s) | convnext_tiny (s) | ratio |\n|---|---|---|---|---|---|')
    for row in rows:
        if row['model'] == MODELS[1]:
            continue
        base = next(r for r in rows if r['model'] == MODELS[1] and
                    (r['measure'], r['batch'], r['layout']) == (row['measure'], row['batch'], row['layout']))
        variant = row['model'].partition(', ')[2]
        measure = row['measure'] + (f' ({variant})' if variant else '')
        print(f"| {measure} | {row['batch']} | {row['layout']} | {row['seconds']:.3f} | "
              f"{base['seconds']:.3f} | {row['seconds'] / base['seconds']:.2f}x |")
    machine = environment(device, args.autocast)
    if device.type == 'cpu':
        machine['malloc'] = 'freed memory kept for reuse' if freed_memory_kept else 'default'
    machine['smpconv_t weights'] = args.checkpoint or 'as created (seed 0)'
    report(dict(environment=machine, rows=rows), args.output)


if __name__ == '__main__':
    main()
