#!/usr/bin/env python3
"""The paper's table 1 on this machine, and the raw Speech Commands model's training step, measured in one run.

    python benchmarks/ckconv.py                      # CPU: CIFAR-10 at batch 64, raw speech at batch 32
    python benchmarks/ckconv.py --device cuda

Table 1, training throughput (examples/s of forward, backward and an Adam step on a batch of random 32x32
images) of
- `smpconv_resnet_cifar10`: 33x33 SMP kernels, each pass on the faster of its FFT and direct paths;
- `3x3 kernels`: the same network with dense 3x3 kernels where the SMP kernels are (`kernel_type='dense'`);
- `authors' way`: the SMP network computed as the authors' code does, a dense kernel through F.conv2d.

Raw Speech Commands: the training step of `smpconv_tcn_speech_raw` (batch 32, 16,000 steps, kernels of 16,000
taps) against the authors' way: their causal FFT convolution (the kernel padded to an odd length, the input
padded to M = N + L - 1, rfft, a complex einsum, irfft, differentiated by autograd).

Each figure is the median step time over `--steps` steps after 2 untimed ones (which include the dispatcher's
timing); ratios compare figures of this run.
"""
import argparse
import statistics
from contextlib import contextmanager, nullcontext

import timm
import torch
import torch.nn.functional as F

import smpconv_models.layers.ckconv
from smpconv_models.ops import use_backend
from timing import environment, parse_args, report, seconds


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


@contextmanager
def authors_convolution():
    """The models' causal convolutions computed by the authors' FFT function."""
    ours = smpconv_models.layers.ckconv.causal_conv1d
    smpconv_models.layers.ckconv.causal_conv1d = authors_causal_fftconv
    try:
        yield
    finally:
        smpconv_models.layers.ckconv.causal_conv1d = ours


def step_seconds(model: torch.nn.Module, x: torch.Tensor, steps: int, context) -> float:
    """Median seconds of a training step: forward, cross-entropy, backward, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    labels = torch.randint(0, model.num_classes, (x.shape[0],), device=x.device)

    def step():
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with context:
        return statistics.median([seconds(step, x.device) for _ in range(steps + 2)][2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--steps', type=int, default=3, help='timed steps per model')
    parser.add_argument('--authors-steps', type=int, default=1, help="timed steps of the authors' CIFAR-10 way")
    parser.add_argument('--cifar-batch', type=int, default=64)
    parser.add_argument('--speech-batch', type=int, default=32)
    args = parse_args(parser)
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows = []

    images = torch.randn(args.cifar_batch, 3, 32, 32, device=device)
    cifar = [
        ('smpconv_resnet_cifar10', {}, nullcontext(), args.steps),
        ('3x3 kernels', dict(kernel_type='dense', kernel_size=3), nullcontext(), args.steps),
        ("authors' way (dense kernel, F.conv2d)", {}, use_backend('torch'), args.authors_steps),
    ]
    for name, kwargs, context, steps in cifar:
        model = timm.create_model('smpconv_resnet_cifar10', **kwargs).to(device).train()
        step_s = step_seconds(model, images, steps, context)
        rows.append(dict(benchmark=f'CIFAR-10, batch {args.cifar_batch}', model=name, step_s=step_s,
                         examples_per_s=args.cifar_batch / step_s))

    audio = torch.randn(args.speech_batch, 1, 16000, device=device)
    for name, context in (('smpconv_tcn_speech_raw', nullcontext()), ("authors' way (their FFT convolution)",
                                                                       authors_convolution())):
        model = timm.create_model('smpconv_tcn_speech_raw').to(device).train()
        step_s = step_seconds(model, audio, args.steps, context)
        rows.append(dict(benchmark=f'raw Speech Commands, batch {args.speech_batch}', model=name, step_s=step_s,
                         examples_per_s=args.speech_batch / step_s))

    print('| benchmark | model | step (s) | examples/s | ratio to ours |\n|---|---|---|---|---|')
    for row in rows:
        ours = next(r for r in rows if r['benchmark'] == row['benchmark'])
        row['ratio'] = row['examples_per_s'] / ours['examples_per_s']
        print(f"| {row['benchmark']} | {row['model']} | {row['step_s']:.3f} | {row['examples_per_s']:.1f} | "
              f"{row['ratio']:.3f} |")
    report(dict(environment=environment(device, 'float32'), rows=rows), args.output)


if __name__ == '__main__':
    main()
