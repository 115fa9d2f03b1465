#!/usr/bin/env python3
"""The FFT convolution's per-frequency products on the CPU: the C++ extension against PyTorch's bmm with the
transposing copies around it, at the sequence and CIFAR-10 models' sizes, side by side in one run.

    python benchmarks/spectral_products.py
    python benchmarks/spectral_products.py --repeats 25 --output products.json

Each pass multiplies spectra as a training step does (`ops/conv.py`): the forward pass x [B, C, F] by the kernel's
conjugate spectra [C, O, F], the input gradient dy [B, O, F] by the kernel's [O, C, F], the weight gradient
conj(dy) through a transposed view [O, B, F] by x [B, C, F]; complex64 spectra of an sMNIST layer (batch 64, a
period of 1152), a CIFAR-10 one (batch 64, 48 channels, 36 x 36) and a raw Speech Commands one (batch 32, 21600).
Medians of calls in turn, freed memory kept for reuse as in training. The extension sizes its tiles by the CPU's
vectors (AVX-512 or not): run this on a new kind of CPU before trusting its products there.
"""
import argparse
from unittest import mock

import torch

from smpconv_models.ops import conv, spectral_cpu
from smpconv_models.training import keep_freed_memory_for_reuse
from timing import environment, medians_in_turn, parse_args, report

# name: batch, in channels, out channels, frequencies
LAYERS = {'sMNIST': (64, 30, 30, 577), 'CIFAR-10': (64, 48, 48, 36 * 19), 'raw Speech Commands': (32, 30, 30, 10801)}


def passes(batch: int, channels: int, outputs: int, frequencies: int):
    """The three products of a training step, as calls."""
    def spectra(*shape):
        return torch.randn(*shape, frequencies, dtype=torch.complex64)
    x, grad, conj_kernel = spectra(batch, channels), spectra(batch, outputs), spectra(outputs, channels).conj()
    return {'forward': lambda: conv._products(x, conj_kernel.transpose(0, 1)),
            'input gradient': lambda: conv._products(grad, conj_kernel.conj()),
            'weight gradient': lambda: conv._products(grad.transpose(0, 1).conj(), x)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=15, help='timed calls of each (after 2 untimed)')
    args = parse_args(parser)
    if not spectral_cpu.available(torch.zeros(1, dtype=torch.complex64)):
        raise SystemExit('the C++ spectral products did not build on this machine (see the warning)')
    device = torch.device('cpu')
    keep_freed_memory_for_reuse()
    rows = []
    print('| layer | pass | extension (ms) | GFLOP/s | bmm and copies (ms) | extension faster |\n|---|---|---|---|---|---|')
    for layer, sizes in LAYERS.items():
        batch, channels, outputs, frequencies = sizes
        flops = 8 * batch * channels * outputs * frequencies  # a complex multiply-add is 8 real operations
        for name, call in passes(*sizes).items():
            def by_bmm():
                """The product by PyTorch's bmm on frequency-major copies, as where the extension does not build."""
                with mock.patch.object(spectral_cpu, 'available', lambda spectra: False):
                    call()
            medians = medians_in_turn({'extension': (call, args.repeats), 'bmm': (by_bmm, args.repeats)}, device)
            extension, bmm = medians['extension'], medians['bmm']
            rows.append(dict(layer=layer, sizes=sizes, product=name, extension_s=extension, bmm_s=bmm))
            print(f'| {layer} {list(sizes)} | {name} | {1e3 * extension:.2f} | {flops / extension / 1e9:.0f} | '
                  f'{1e3 * bmm:.2f} | {bmm / extension:.2f}x |', flush=True)
    report(dict(environment=environment(device, 'complex64'), rows=rows), args.output)


if __name__ == '__main__':
    main()
