#!/usr/bin/env python3
"""The paper's table 1 on this machine, and the sequence models' training steps, measured in one run.

    python benchmarks/ckconv.py                      # CPU: CIFAR-10 at batch 64, raw speech at 8 and 32, sMNIST at 64
    python benchmarks/ckconv.py --benchmarks cifar smnist --device cuda

Table 1, training throughput (examples/s of forward, backward and an Adam step on a batch of random 32x32
images) of
- `smpconv_resnet_cifar10`: 33x33 SMP kernels, convolved over the box of taps their points reach (issue 21), each
  pass on the faster of its FFT and direct paths (a step on the FFT keeps the spectra of x and of the kernel for
  the backward pass);
- `whole kernels`: the same, convolved over the whole 33x33 kernels, each pass on its own (this package before
  issue 21);
- `3x3 kernels`: the same network with dense 3x3 kernels where the SMP kernels are (`kernel_type='dense'`),
  convolved by this package's operator (on the faster of its backends: on CPUs, from the C++ 2-D FFTs on, often the
  FFT), or by PyTorch's convolution (`use_backend('torch')`: cuDNN or oneDNN, as for nn.Conv2d);
- `authors' way`: the SMP network computed as the authors' code does, a dense kernel through F.conv2d.

Raw Speech Commands (`smpconv_tcn_speech_raw`, 16,000 steps, kernels of 16,000 taps) and sequential MNIST
(`smpconv_tcn_smnist`, 784 steps and taps): the training step of the model, of the model with whole kernels,
and (raw speech) of the authors' way: their causal FFT convolution (the kernel padded to an odd length, the input
padded to M = N + L - 1, rfft, a complex einsum, irfft, differentiated by autograd) of the whole kernel.

The models are as created (seed 0) unless --checkpoint-dir holds weights for them (`<model>.safetensors`, a
run's model.safetensors, say): the boxes follow the points. Each figure is the median step time over `--steps`
steps after 2 untimed ones (which include the dispatcher's timing), a benchmark's models stepped in turn, one step
of each per round, so that a machine whose speed drifts moves them alike; ratios compare figures of this run, to
the first row of their benchmark. On a CPU, freed memory is kept for reuse as train_imagenet.py keeps it
(`--system-malloc`: glibc's defaults), for every model alike.
"""
import argparse
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import List, Tuple
from unittest import mock

import timm
import torch
import torch.nn.functional as F

from smpconv_models import CKConv, SMPKernel, create_from_checkpoint
from smpconv_models.ops import conv as long_convolution, use_backend
from smpconv_models.training import keep_freed_memory_for_reuse
from timing import environment, medians_in_turn, parse_args, report, training_step

ADAM = partial(torch.optim.Adam, lr=1e-4)  # the authors' optimizer for these models


def authors_causal_fftconv(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """The authors' causal_fftconv (smp/ckconv/nn/functional/causal_conv.py), as their architecture notes describe
    it; exact on even lengths, the only ones their FFT configs use."""
    if weight.shape[-1] % 2 == 0:
        weight = F.pad(weight, (1, 0))
    length = x.shape[-1]
    x = F.pad(x, (weight.shape[-1] - 1, 0))
    spectrum_x = torch.fft.rfft(x, dim=-1)
    spectrum_w = torch.fft.rfft(F.pad(weight, (0, x.shape[-1] - weight.shape[-1])), dim=-1)
    y = torch.fft.irfft(torch.einsum('bi...,oi...->bo...', spectrum_x, spectrum_w.conj()), dim=-1).float()
    y = y[..., :length]
    return y if bias is None else y + bias.view(1, -1, 1)


def authors_conv2d(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """The authors' CIFAR-10 convolution: the dense kernel through F.conv2d."""
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)


@contextmanager
def whole_kernels(convolve=None):
    """The SMP layers convolving with their whole kernel: by this package's operator as before issue 21 (each pass
    on its own, no spectra kept between them, every point sampled at every tap), or by `convolve(x, kernel,
    bias)`."""
    if convolve is None:
        with mock.patch.object(CKConv, '_convolve_nonzero_taps', CKConv.convolve_whole_kernel), \
                mock.patch.object(long_convolution, '_convolve', long_convolution._forward), \
                mock.patch.object(SMPKernel, '_sampled_point_by_point', lambda self: False):
            yield
    else:
        with mock.patch.object(CKConv, '_convolve_nonzero_taps',
                               lambda layer, x: convolve(x, layer.kernel(), layer.bias)):
            yield


def create(name: str, checkpoint_dir, device, **kwargs) -> torch.nn.Module:
    """The model as created (seed 0), or with its weights in `checkpoint_dir`."""
    torch.manual_seed(0)
    weights = None if checkpoint_dir is None else Path(checkpoint_dir) / f'{name}.safetensors'
    if weights is not None and weights.exists() and not kwargs:
        model = create_from_checkpoint(str(weights))
    else:
        model = timm.create_model(name, **kwargs)
    return model.to(device).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--benchmarks', nargs='+', default=['cifar', 'speech', 'smnist'],
                        choices=('cifar', 'speech', 'smnist'))
    parser.add_argument('--steps', type=int, default=3, help='timed steps per model')
    parser.add_argument('--authors-steps', type=int, default=1,
                        help="timed steps of the authors' CIFAR-10 way (2 minutes each on a 2-core CPU; 0: left out)")
    parser.add_argument('--cifar-batch', type=int, default=64)
    parser.add_argument('--speech-batches', type=int, nargs='+', default=[8, 32])
    parser.add_argument('--smnist-batch', type=int, default=64)
    parser.add_argument('--checkpoint-dir', default=None, help='weights of the models, <model>.safetensors')
    parser.add_argument('--system-malloc', action='store_true',
                        help="glibc's default allocator settings, not those train_imagenet.py sets on the CPU")
    args = parse_args(parser)
    device = torch.device(args.device)
    freed_memory_kept = device.type == 'cpu' and not args.system_malloc and keep_freed_memory_for_reuse()
    rows = []

    def measure(benchmark: str, name: str, x: torch.Tensor, candidates: List[Tuple]) -> None:
        """Step the candidates (label, context, steps, model kwargs) of `name` in turn on x; one row each."""
        medians = medians_in_turn({
            label: (training_step(create(name, args.checkpoint_dir, device, **kwargs), x, ADAM, context), steps)
            for label, context, steps, kwargs in candidates if steps > 0}, device)
        for label, step_s in medians.items():
            rows.append(dict(benchmark=benchmark, model=label, step_s=step_s, examples_per_s=x.shape[0] / step_s))
            print(f'{benchmark}, {label}: {step_s:.3f} s', flush=True)

    if 'cifar' in args.benchmarks:
        images = torch.randn(args.cifar_batch, 3, 32, 32, device=device)
        name = 'smpconv_resnet_cifar10'
        measure(f'CIFAR-10, batch {args.cifar_batch}', name, images, [
            (name, nullcontext, args.steps, {}),
            ('whole kernels', whole_kernels, args.steps, {}),
            ('3x3 kernels (same layout)', nullcontext, args.steps, dict(kernel_type='dense', kernel_size=3)),
            ("3x3 kernels, PyTorch's convolution", partial(use_backend, 'torch'), args.steps,
             dict(kernel_type='dense', kernel_size=3)),
            ("authors' way (dense kernel, F.conv2d)", partial(whole_kernels, authors_conv2d), args.authors_steps, {}),
        ])
    if 'speech' in args.benchmarks:
        for batch in args.speech_batches:
            audio = torch.randn(batch, 1, 16000, device=device)
            name = 'smpconv_tcn_speech_raw'
            measure(f'raw Speech Commands, batch {batch}', name, audio, [
                (name, nullcontext, args.steps, {}),
                ('whole kernels', whole_kernels, args.steps, {}),
                ("authors' way (their FFT convolution)", partial(whole_kernels, authors_causal_fftconv), args.steps,
                 {}),
            ])
    if 'smnist' in args.benchmarks:
        pixels = torch.randn(args.smnist_batch, 1, 784, device=device)
        name = 'smpconv_tcn_smnist'
        measure(f'sMNIST, batch {args.smnist_batch}', name, pixels, [
            (name, nullcontext, args.steps, {}),
            ('whole kernels', whole_kernels, args.steps, {}),
        ])

    print('| benchmark | model | step (s) | examples/s | ratio to ours |\n|---|---|---|---|---|')
    for row in rows:
        ours = next(r for r in rows if r['benchmark'] == row['benchmark'])
        row['ratio'] = row['examples_per_s'] / ours['examples_per_s']
        print(f"| {row['benchmark']} | {row['model']} | {row['step_s']:.3f} | {row['examples_per_s']:.1f} | "
              f"{row['ratio']:.3f} |")
    machine = environment(device, 'float32')
    if device.type == 'cpu':
        machine['malloc'] = 'freed memory kept for reuse' if freed_memory_kept else 'default'
    report(dict(environment=machine, rows=rows), args.output)


if __name__ == '__main__':
    main()
