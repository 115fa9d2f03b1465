#!/usr/bin/env python3
"""The depthwise convolution's backends on every large-kernel layer shape of the SMPConv models at 224x224.

    python benchmarks/dwconv.py                                    # CPU: batch 2, float32, NCHW input
    python benchmarks/dwconv.py --train-step                       # and smpconv_t's training step, batch 8
    python benchmarks/dwconv.py --device cuda --dtype bfloat16 --batch-size 64 --layouts nchw channels_last
    python benchmarks/dwconv.py --device cuda --dtype bfloat16 --batch-size 64 --zero-taps   # SMP kernels' zeros

For each distinct layer shape (channels, map size, kernel after cropping to the taps that meet a pixel) and
input layout: the forward and forward+backward (input and weight gradients) time of every backend that runs
on the device, through `depthwise_conv2d` with the backend forced, and of `auto` (the dispatcher's choice),
each as a ratio to PyTorch's best (the faster of its NCHW convolution on NCHW input and its channels_last
convolution on channels_last input: a model runs in one layout throughout).
`floor` is the least time a direct method can take: the larger of its FLOPs over the measured peak of the
unit (a large matmul in the same dtype: tensor cores on a GPU) and its minimum bytes (each tensor read or
written once) over the measured memory bandwidth (a large copy). Its FLOPs count only the taps that meet a
pixel (a direct method skips the rest); FFT convolution does asymptotically less work and can beat it.
The totals weight each shape by the number of layers of the model that have it. --zero-taps times instead, per
layer shape of smpconv_t, each backend on the kernel the model's first layer of that shape samples (as created,
seed 0: zero wherever no point reaches) against the same kernel with its zeros made nonzero: what skipping the
zero taps saves (the Triton kernels visit only the columns each row's nonzero taps reach). --train-step times one
training step of smpconv_t (forward, backward, AdamW) with the dispatcher against PyTorch's NCHW
convolution, the plain F.conv2d path.
"""
import argparse
from collections import Counter
from functools import partial
from typing import Callable, Dict, List, Tuple

import timm
import torch

import smpconv_models  # noqa: F401  registers the SMPConv models
from smpconv_models.layers import SMPConv2d
from smpconv_models.ops import clear_choices, depthwise_conv2d, use_backend
from smpconv_models.ops.depthwise import BACKENDS
from timing import environment, median_seconds, parse_args, report, training_step

LAYOUTS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
# PyTorch's own convolutions, each in the layout it runs natively
NATIVE_LAYOUTS = {'torch': 'nchw', 'torch_channels_last': 'channels_last'}
Shape = Tuple[int, int, int, int, int]  # channels, height, width, kernel height, kernel width


def visit_large_kernel_layers(model: torch.nn.Module, img_size: int,
                              visit: Callable[[SMPConv2d, Shape, torch.Tensor], None]) -> None:
    """`visit(layer, its shape, its input)` for every large-kernel layer of the model, in one no-grad forward pass
    of an image on the model's device."""
    def hook(module: SMPConv2d, inputs: tuple, output: torch.Tensor) -> None:
        _, channels, height, width = inputs[0].shape
        visit(module, (channels, height, width, *module.touched_window(inputs[0])), inputs[0])

    hooks = [module.register_forward_hook(hook) for module in model.modules() if isinstance(module, SMPConv2d)]
    device = next(model.parameters()).device
    with torch.no_grad():
        model(torch.zeros(1, 3, img_size, img_size, device=device))
    for handle in hooks:
        handle.remove()


def layer_shapes(model_name: str, img_size: int) -> Counter:
    """How many large-kernel layers of the model have each shape, from one forward pass on the meta device."""
    shapes = Counter()
    visit_large_kernel_layers(timm.create_model(model_name, device='meta'), img_size,
                              lambda layer, shape, x: shapes.update([shape]))
    return shapes


def valid_taps(size: int, kernel: int) -> int:
    """Over the outputs along one axis of a 'same' convolution, how many taps meet an input pixel."""
    return sum(min(size - 1, i + kernel // 2) - max(0, i - kernel // 2) + 1 for i in range(size))


def pass_bytes(batch: int, shape: Shape, itemsize: int, backward: bool) -> int:
    """Forward: x read, y written, w read; backward adds dy read, x read again, dx and dw written."""
    channels, height, width, kh, kw = shape
    activation, weight = batch * channels * height * width * itemsize, channels * kh * kw * itemsize
    return 2 * activation + weight + (3 * activation + weight if backward else 0)


def peaks(device: torch.device, dtype: torch.dtype) -> Tuple[float, float]:
    """Measured FLOP/s of a large matmul in `dtype` and bytes/s of a large copy."""
    n = 4096 if device.type == 'cuda' else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    flop_rate = 2 * n ** 3 / median_seconds(lambda: a @ b, device)
    source = torch.empty(2 ** (28 if device.type == 'cuda' else 25), device=device, dtype=torch.uint8)
    target = torch.empty_like(source)
    byte_rate = 2 * source.numel() / median_seconds(lambda: target.copy_(source), device)
    return flop_rate, byte_rate


def time_backend(name: str, x: torch.Tensor, weight: torch.Tensor, backward: bool, min_seconds: float) -> float:
    """Median seconds of one pass through depthwise_conv2d on backend `name` ('auto': the dispatcher's)."""
    x, weight = x.detach().requires_grad_(backward), weight.detach().requires_grad_(backward)
    grad_y = torch.randn_like(x)

    def run():
        y = depthwise_conv2d(x, weight)
        if backward:
            torch.autograd.grad(y, (x, weight), grad_y)

    with use_backend(None if name == 'auto' else name):
        return median_seconds(run, x.device, warmup=1, min_repeats=2, min_seconds=min_seconds)


def benchmark_shapes(args, device: torch.device, dtype: torch.dtype) -> List[Dict]:
    flop_rate, byte_rate = peaks(device, dtype)
    print(f'measured peaks: {flop_rate / 1e12:.2f} TFLOP/s ({args.dtype} matmul), {byte_rate / 1e9:.0f} GB/s (copy)')
    counts = {name: layer_shapes(name, args.img_size) for name in args.models}
    shapes = sorted({shape for count in counts.values() for shape in count}, reverse=True)
    probe = torch.empty(1, device=device, dtype=dtype)
    backends = [name for name, backend in BACKENDS.items() if backend.supports(probe)] + ['auto']
    rows = []
    print(f"| layout | C | H x W | kernel | pass | {' | '.join(backends)} | floor |\n|"
          + '---|' * (len(backends) + 6))
    for shape in shapes:
        channels, height, width, kh, kw = shape
        x = torch.randn(args.batch_size, channels, height, width, device=device, dtype=dtype)
        weight = torch.randn(channels, kh, kw, device=device, dtype=dtype) / kh
        for backward in (False, True):
            # PyTorch's best: its NCHW convolution on NCHW input, or its channels_last one on channels_last input
            native = {name: time_backend(name, x.contiguous(memory_format=LAYOUTS[layout]), weight, backward,
                                         args.min_seconds) for name, layout in NATIVE_LAYOUTS.items()}
            best_pytorch = min(native.values())
            valid_flops = 2 * args.batch_size * channels * valid_taps(height, kh) * valid_taps(width, kw)
            floor = max((3 if backward else 1) * valid_flops / flop_rate,
                        pass_bytes(args.batch_size, shape, x.element_size(), backward) / byte_rate)
            for layout_name in args.layouts:
                x_in_layout = x.contiguous(memory_format=LAYOUTS[layout_name])
                seconds = {name: native[name] if NATIVE_LAYOUTS.get(name) == layout_name
                           else time_backend(name, x_in_layout, weight, backward, args.min_seconds)
                           for name in backends}
                rows.append(dict(layout=layout_name, shape=shape, backward=backward, seconds=seconds,
                                 pytorch_best=best_pytorch, floor=floor,
                                 layers={name: count[shape] for name, count in counts.items() if shape in count}))
                print(f"| {layout_name} | {channels} | {height} x {width} | {kh} x {kw} | "
                      f"{'fwd+bwd' if backward else 'fwd'} | "
                      + ' | '.join(f'{seconds[n] / best_pytorch:.2f}' for n in backends)
                      + f' | {floor / best_pytorch:.3f} |', flush=True)
    print('\nTotals over each model\'s large-kernel layers, as ratios to PyTorch\'s best of each layer '
          '(milliseconds in brackets):')
    print(f"| model | layout | pass | PyTorch's best | {' | '.join(backends)} | floor |\n|"
          + '---|' * (len(backends) + 5))
    for model_name in args.models:
        for layout_name in args.layouts:
            for backward in (False, True):
                selected = [(r, r['layers'][model_name]) for r in rows if r['layout'] == layout_name
                            and r['backward'] == backward and model_name in r['layers']]
                pytorch = sum(r['pytorch_best'] * n for r, n in selected)
                totals = {name: sum(r['seconds'][name] * n for r, n in selected) for name in backends}
                floor = sum(r['floor'] * n for r, n in selected)
                print(f"| {model_name} | {layout_name} | {'fwd+bwd' if backward else 'fwd'} | "
                      f'1 ({1e3 * pytorch:.1f}) | '
                      + ' | '.join(f'{totals[n] / pytorch:.2f} ({1e3 * totals[n]:.1f})' for n in backends)
                      + f' | {floor / pytorch:.3f} ({1e3 * floor:.2f}) |', flush=True)
    return rows


def smp_kernels(model_name: str, img_size: int, dtype: torch.dtype) -> Dict[Shape, torch.Tensor]:
    """Per large-kernel layer shape, the kernel (cropped as the layer crops it) of the model's first layer of that
    shape, as created with seed 0."""
    torch.manual_seed(0)
    kernels = {}

    def record(layer: SMPConv2d, shape: Shape, x: torch.Tensor) -> None:
        if shape not in kernels:
            kernels[shape] = layer.kernel(list(shape[3:])).to(dtype)

    visit_large_kernel_layers(timm.create_model(model_name).eval(), img_size, record)
    return kernels


def benchmark_zero_taps(args, device: torch.device, dtype: torch.dtype) -> List[Dict]:
    probe = torch.empty(1, device=device, dtype=dtype)
    backends = [name for name, backend in BACKENDS.items() if backend.supports(probe)]
    rows = []
    print(f"| C | H x W | kernel | nonzero taps | pass | {' | '.join(backends)} |\n|" + '---|' * (len(backends) + 5))
    for shape, kernel in smp_kernels('smpconv_t', args.img_size, dtype).items():
        channels, height, width, kh, kw = shape
        kernel = kernel.to(device)
        # the same magnitudes, no zero left: the work of a kernel without zero taps
        filled = torch.where(kernel == 0, kernel.abs().max() * 1e-3, kernel)
        x = torch.randn(args.batch_size, channels, height, width, device=device, dtype=dtype)
        for backward in (False, True):
            ratios = {name: time_backend(name, x, kernel, backward, args.min_seconds)
                      / time_backend(name, x, filled, backward, args.min_seconds) for name in backends}
            nonzero = (kernel != 0).float().mean().item()
            rows.append(dict(shape=shape, backward=backward, nonzero_taps=nonzero, time_ratio=ratios))
            print(f"| {channels} | {height} x {width} | {kh} x {kw} | {nonzero:.0%} | "
                  f"{'fwd+bwd' if backward else 'fwd'} | " + ' | '.join(f'{ratios[n]:.2f}' for n in backends) + ' |',
                  flush=True)
    return rows


def training_step_seconds(model: torch.nn.Module, x: torch.Tensor, backend, steps: int) -> float:
    """Median seconds of a forward, backward and AdamW step, after one untimed step (the dispatcher's timing)."""
    step = training_step(model, x, partial(torch.optim.AdamW, lr=1e-6))
    with use_backend(backend):
        return median_seconds(step, x.device, warmup=1, min_repeats=steps, min_seconds=0.)


def benchmark_training_step(args, device: torch.device, dtype: torch.dtype) -> Dict:
    model = timm.create_model('smpconv_t').to(device=device, dtype=dtype).train()
    x = torch.randn(args.train_batch_size, 3, args.img_size, args.img_size, device=device, dtype=dtype)
    clear_choices()
    seconds = {name: training_step_seconds(model, x, backend, args.train_steps)
               for name, backend in (('auto', None), ('plain F.conv2d', 'torch'))}
    print(f"\nsmpconv_t training step, batch {args.train_batch_size}, NCHW: dispatcher {seconds['auto']:.1f} s, "
          f"plain F.conv2d {seconds['plain F.conv2d']:.1f} s: "
          f"{seconds['plain F.conv2d'] / seconds['auto']:.1f}x faster")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16', 'float16'))
    parser.add_argument('--batch-size', type=int, default=None, help='default: 2 on CPU, 64 on GPU')
    parser.add_argument('--layouts', nargs='+', default=['nchw'], choices=tuple(LAYOUTS))
    parser.add_argument('--models', nargs='+', default=['smpconv_t', 'smpconv_b', 'smpconv_mobile51'])
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--min-seconds', type=float, default=0.2, help='least time spent timing each pass')
    parser.add_argument('--zero-taps', action='store_true',
                        help="smpconv_t's SMP kernels against the same kernels without zero taps, instead")
    parser.add_argument('--train-step', action='store_true', help="also time smpconv_t's training step")
    parser.add_argument('--train-batch-size', type=int, default=8)
    parser.add_argument('--train-steps', type=int, default=1)
    args = parse_args(parser)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.batch_size is None:
        args.batch_size = 64 if device.type == 'cuda' else 2

    results = dict(environment=environment(device, args.dtype), batch_size=args.batch_size)
    if args.zero_taps:
        results['zero_taps'] = benchmark_zero_taps(args, device, dtype)
    else:
        results['shapes'] = benchmark_shapes(args, device, dtype)
    if args.train_step:
        results['training_step_seconds'] = benchmark_training_step(args, device, dtype)
    report(results, args.output)


if __name__ == '__main__':
    main()
