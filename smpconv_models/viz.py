"""Pictures of SMP kernels: where the points went over the kernels they make (the paper's figure 4), and the
summed |kernel| of every stage, its receptive field (figure 5).

    python -m smpconv_models.viz                        # the latest training run in output/train, its EMA weights
    python -m smpconv_models.viz --model smpconv_t --pretrained --layer stages.0.blocks.0 --output viz
    python -m smpconv_models.viz --config output/train/<run>/config.yaml \\
        --checkpoint output/train/<run>/model.safetensors

Needs matplotlib (`pip install 'smpconv-models[viz]'`).
"""
import argparse
import copy
import sys
from pathlib import Path
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .factory import create_from_checkpoint, create_model
from .runs import latest_run, run_model_args
from .layers.continuous import SMPContinuousConv2d
from .layers.imagenet import SMPConv2d
from .ops.resize import resize_geometry

__all__ = ['plot_points', 'plot_receptive_fields', 'plot_resized_kernel', 'plot_alignment', 'bright_pixel_responses',
           'centroid', 'smp_layers']


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("drawing SMP kernels needs matplotlib: pip install 'smpconv-models[viz]' "
                          '(or pip install matplotlib)') from None
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def smp_layers(module: nn.Module) -> List[SMPConv2d]:
    return [m for m in module.modules() if isinstance(m, SMPConv2d)]


@torch.no_grad()
def plot_points(conv: SMPConv2d, path: Path, channels: int = 4, title: str = '') -> Path:
    """The first `channels` kernels of an SMP layer, each with the points over it: a dot per position and the
    diamond (L1 ball) of its radius, where its value reaches zero. The image's top is y = +1, as in the kernel."""
    plt = _pyplot()
    kernels = conv.kernel().float().cpu().numpy()
    positions = conv.points.positions.float().cpu().numpy()
    radii = conv.points.radii.clamp(conv.points.radius_min, conv.points.radius_max).float().cpu().numpy()
    channels = min(channels, kernels.shape[0])
    figure, axes = plt.subplots(1, channels, figsize=(3.2 * channels, 3.4), squeeze=False)
    for channel, axis in enumerate(axes[0]):
        kernel = kernels[channel]
        limit = abs(kernel).max() or 1.
        axis.imshow(kernel, cmap='RdBu_r', vmin=-limit, vmax=limit, extent=(-1, 1, -1, 1))
        for (x, y), r in zip(positions.tolist(), radii.tolist()):
            axis.plot([x - r, x, x + r, x, x - r], [y, y + r, y, y - r, y], color='k', linewidth=0.3, alpha=0.4)
        axis.scatter(positions[:, 0], positions[:, 1], s=3, c='k')
        axis.set_xlim(-1.1, 1.1)
        axis.set_ylim(-1.1, 1.1)
        axis.set_title(f'channel {channel}', fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title or f'{positions.shape[0]} points, {kernels.shape[-2]}x{kernels.shape[-1]} kernel')
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


@torch.no_grad()
def plot_receptive_fields(model: nn.Module, path: Path) -> Path:
    """Per stage, the sum of |kernel| over its SMP layers and channels, each stage scaled to its maximum."""
    plt = _pyplot()
    stages = [stage for stage in getattr(model, 'stages', [model]) if smp_layers(stage)]
    figure, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 3.4), squeeze=False)
    for index, (stage, axis) in enumerate(zip(stages, axes[0])):
        field = sum(conv.kernel().abs().sum(0).float().cpu() for conv in smp_layers(stage)).numpy()
        axis.imshow(field / field.max(), cmap='viridis', vmin=0, vmax=1, extent=(-1, 1, -1, 1))
        axis.set_title(f'stage {index}: {field.shape[0]}x{field.shape[1]}', fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle('summed |kernel| per stage')
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


@torch.no_grad()
def plot_resized_kernel(conv: SMPContinuousConv2d, path: Path, scales=(0.5, 1., 2.), in_size: int = 32,
                        channel: int = 0) -> Path:
    """One channel's kernel as a resizing layer applies it at each of `scales`: the taps of the first output
    pixel, drawn at their offsets from its centre in input pixels (downscaling stretches the kernel over more
    input pixels, with smaller values; upscaling keeps its footprint)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(scales), figsize=(3.2 * len(scales), 3.6), squeeze=False)
    for scale, axis in zip(scales, axes[0]):
        rows, cols = resize_geometry((in_size, in_size), conv.kernel_size, scale)
        kernel = conv.bank(rows, cols)[channel, 0, 0, :, 0, :].float().cpu().numpy()
        row_offsets, col_offsets = rows.offsets()[0].tolist(), cols.offsets()[0].tolist()
        limit = abs(kernel).max() or 1.
        extent = (col_offsets[0] - .5, col_offsets[-1] + .5, row_offsets[-1] + .5, row_offsets[0] - .5)
        axis.imshow(kernel, cmap='RdBu_r', vmin=-limit, vmax=limit, extent=extent)
        axis.plot(0, 0, marker='+', color='k')  # the output pixel's centre
        axis.set_title(f'scale {scale:g}: {kernel.shape[0]}x{kernel.shape[1]} taps, |max| {limit:.3g}', fontsize=9)
        axis.set_xlabel('input pixels from the output centre', fontsize=8)
    figure.suptitle(f'one kernel of {conv.points.num_points} points ({conv.kernel_size[0]} taps at scale 1)')
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def centroid(response: torch.Tensor) -> Tuple[float, float]:
    """The (row, column) centroid of a response map [H, W], in its pixels."""
    weight = response / response.sum()
    rows, cols = (torch.arange(n, dtype=response.dtype, device=response.device) for n in response.shape)
    return float((weight.sum(1) * rows).sum()), float((weight.sum(0) * cols).sum())


@torch.no_grad()
def bright_pixel_responses(conv: SMPContinuousConv2d, position: int, depth: int, in_size: int,
                           strided_kernel: int = 3) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The responses [H, W] to one bright pixel at (position, position) of an in_size x in_size image after each of
    `depth` halvings: (a chain of stride-2 box convolutions of `strided_kernel` taps with padding k // 2, the
    depthwise layer `conv` at scale 1/2, its channel 0), in float64."""
    conv = copy.deepcopy(conv).to(torch.float64)
    image = torch.zeros(1, conv.points.weights.shape[0], in_size, in_size, dtype=torch.float64)
    image[..., position, position] = 1.
    box = torch.ones(1, 1, strided_kernel, strided_kernel, dtype=torch.float64)
    strided, continuous, responses = image[:, :1], image, []
    for _ in range(depth):
        strided = F.conv2d(strided, box, stride=2, padding=strided_kernel // 2)
        continuous = conv(continuous, scale=0.5)
        responses.append((strided[0, 0], continuous[0, 0]))
    return responses


@torch.no_grad()
def plot_alignment(conv: SMPContinuousConv2d, path: Path, position: int = 21, depth: int = 3, in_size: int = 64,
                   strided_kernel: int = 3, window: int = 3) -> Path:
    """Where a bright pixel lands after each of `depth` halvings (`bright_pixel_responses`): the strided chain's and
    the continuous layer's responses, `window` pixels around where interpolation puts the pixel (+), and each
    response's centroid (x), with its distance from there in output pixels."""
    plt = _pyplot()
    responses = bright_pixel_responses(conv, position, depth, in_size, strided_kernel)
    figure, axes = plt.subplots(2, depth, figsize=(2.3 * depth, 4.9), squeeze=False)
    for halvings, pair in enumerate(responses, 1):
        expected = (position + 0.5) / 2 ** halvings - 0.5
        centre = round(expected)
        for name, response, axis in zip((f'stride 2, {strided_kernel}x{strided_kernel}', 'continuous, s = 1/2'),
                                        pair, axes[:, halvings - 1]):
            low, high = max(centre - window, 0), min(centre + window, response.shape[0] - 1)
            crop = response[low:high + 1, low:high + 1].float().numpy()
            axis.imshow(crop, cmap='Greys', vmin=min(crop.min(), 0.), extent=(low - .5, high + .5, high + .5, low - .5))
            row, col = centroid(response)
            axis.plot(expected, expected, marker='+', color='tab:blue', markersize=14, mew=2)
            axis.plot(col, row, marker='x', color='tab:red', markersize=9, mew=2)
            axis.set_title(f'{name}\n{halvings} halving{"s" if halvings > 1 else ""}: {row - expected:+.3f} px',
                           fontsize=8)
            axis.tick_params(labelsize=7)
    figure.suptitle(f'a bright pixel at {position}: interpolation puts it at +, the response at x', fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default=None, help="a registered SMPConv model (default: the checkpoint's, "
                                                      'else the latest training run\'s, else smpconv_t untrained)')
    parser.add_argument('--pretrained', action='store_true')
    parser.add_argument('--checkpoint', default='', help='weights, a training state or an official checkpoint')
    parser.add_argument('--config', default=None, help="a training run's config.yaml: its model and model_kwargs")
    parser.add_argument('--layer', default='stages.0.blocks.0', help='a module holding an SMP layer')
    parser.add_argument('--channels', type=int, default=4)
    parser.add_argument('--output', type=Path, default=Path('viz'))
    args = parser.parse_args(argv)
    if not (args.model or args.checkpoint or args.config or args.pretrained):
        run = latest_run()
        if run is None:
            print('no checkpoint, training run or --pretrained: drawing an untrained smpconv_t, its points where '
                  'they start')
        else:
            args.config, args.checkpoint = map(str, run)
            print(f'drawing the latest training run: {args.checkpoint}')
    try:
        model_name, model_kwargs = run_model_args(args.config) if args.config else (args.model, {})
        if args.checkpoint:
            model = create_from_checkpoint(args.checkpoint, model_name, **model_kwargs)
        else:
            model = create_model(model_name or 'smpconv_t', pretrained=args.pretrained, **model_kwargs)
        model.eval()
        layer = model.get_submodule(args.layer)
    except (ValueError, FileNotFoundError, AttributeError, RuntimeError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    convs = smp_layers(layer)
    if not convs:
        print(f'error: {args.layer} holds no SMP layer', file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    points = plot_points(convs[0], args.output / f'points-{args.layer}.png', args.channels,
                         title=f"{model.pretrained_cfg['architecture']} {args.layer}")
    fields = plot_receptive_fields(model, args.output / 'receptive-fields.png')
    print(f'wrote {points} and {fields}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
