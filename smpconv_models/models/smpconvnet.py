""" SMPConv

Paper: `SMPConv: Self-moving Point Representations for Continuous Convolution` - https://arxiv.org/abs/2304.02330
@inproceedings{kim2023smpconv,
  title={SMPConv: Self-moving Point Representations for Continuous Convolution},
  author={Kim, Sanghyeon and Park, Eunbyung},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2023},
}

The ImageNet networks are RepLKNet (https://arxiv.org/abs/2203.06717) with every large depthwise kernel
generated from self-moving points. Original code: https://github.com/sangnekim/SMPConv (MIT licence).
"""
import math
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from safetensors import SafetensorError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, calculate_drop_path_rates, trunc_normal_
from timm.models import (build_model_with_cfg, checkpoint_seq, generate_default_cfgs, named_apply, register_model,
                         resolve_pretrained_cfg)

from ..checkpoint import fit_problems
from ..hub import HUB_ORG, pretrained_weights_error
from ..layers.continuous_blocks import ContinuousConvNormAct
from ..layers.imagenet import ConvFFNBlock, FusableConvNormAct, LargeKernelBlock
from ..official import to_package_layout
from ..ops import recording_graph, torch_ops_only
from ..ops.dispatch import transforming
from ..ops.resize import Scale
from ..smp import SMPKernel, points_for_kernel
from .base import SMPConvModel, paper_cfg

__all__ = ['SMPConvNet', 'checkpoint_filter_fn']

ImageSize = Union[int, Sequence[int]]

# The continuous layers that halve a map (downsample='smp'). Kernel size 5: downscaling stretches the kernel over
# k output pixels, so at 1/2 it reads 9 input pixels per axis, an anti-aliasing filter that covers the band a
# halving folds over (the 3x3 stride-2 convolution it replaces reads 3 and aliases); k = 3 would read only 5.
# 9 points: as many values per channel as that 3x3 kernel had weights, so the capacity of the layer is kept.
# The layer that resizes the image itself (resize_input) is the same, on the image's channels.
RESIZE_KERNEL_SIZE = 5
RESIZE_POINTS = 9


class SMPConvStage(nn.Module):
    """Optional downsampling transition ('conv' or 'smp', see `SMPConvNet`) resizing by `downsample_scale`, then
    `depth` pairs of large-kernel and FFN blocks."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            depth: int,
            kernel_size: int,
            num_points: int,
            downsample: Optional[str] = 'conv',
            downsample_scale: Scale = 0.5,
            ffn_ratio: float = 4.,
            dw_ratio: float = 1.,
            small_kernel_size: Optional[int] = 5,
            kernel_type: str = 'smp',
            drop_path_rates: Optional[List[float]] = None,
            inference_mode: bool = False,
            device=None,
            dtype=None,
    ):
        layer_kwargs = dict(inference_mode=inference_mode, device=device, dtype=dtype)
        super().__init__()
        self.grad_checkpointing = False
        if downsample is not None:
            self.downsample = nn.Sequential(
                FusableConvNormAct(in_chs, out_chs, 1, **layer_kwargs),
                _resizing_layer(out_chs, downsample, downsample_scale, **layer_kwargs),
            )
        else:
            self.downsample = nn.Identity()
        drop_path_rates = drop_path_rates or [0.] * depth
        if len(drop_path_rates) != depth:
            raise ValueError(f'{depth} block pairs need as many drop path rates, got {drop_path_rates}')
        blocks = []
        for rate in drop_path_rates:
            blocks += [
                LargeKernelBlock(
                    out_chs,
                    int(out_chs * dw_ratio),
                    kernel_size=kernel_size,
                    num_points=num_points,
                    small_kernel_size=small_kernel_size,
                    kernel_type=kernel_type,
                    drop_path=rate,
                    **layer_kwargs,
                ),
                ConvFFNBlock(out_chs, int(out_chs * ffn_ratio), drop_path=rate, **layer_kwargs),
            ]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x


class SMPConvStem(nn.Sequential):
    """3x3 stride-2 conv, 3x3 depthwise, 1x1, depthwise halving layer: RepLKNet's stem, to 1/4 resolution.

    With continuous layers (downsample='smp') one of them resizes by the factor, per axis, that gives images of the
    set input size the maps of `img_size`, the size the stages are built for: the halving layer (by 1/2 for
    `img_size` itself, by 1/4 for images twice as large) or, with `resize_input`, a layer on the image's channels
    before all others, so that every later layer sees the scale it was trained at. With `dynamic_img_size`, it
    resizes to that size from any image.
    """
    __jit_unused_properties__ = ['resizer']  # a module, which TorchScript cannot type: used only outside forward

    def __init__(self, in_chans: int, out_chs: int, downsample: str = 'conv', img_size: ImageSize = 224,
                 dynamic_img_size: bool = False, resize_input: bool = False, **kwargs):
        for flag, value in (('dynamic_img_size', dynamic_img_size), ('resize_input', resize_input)):
            if value and downsample != 'smp':
                raise ValueError(f"{flag} needs downsample='smp': strided convolutions cannot resize a map to a "
                                 "given size")
        input_layers = [_resizing_layer(in_chans, 'smp', 1., apply_act=False, **kwargs)] if resize_input else []
        super().__init__(
            *input_layers,
            FusableConvNormAct(in_chans, out_chs, 3, stride=2, **kwargs),
            FusableConvNormAct(out_chs, out_chs, 3, groups=out_chs, **kwargs),
            FusableConvNormAct(out_chs, out_chs, 1, **kwargs),
            _resizing_layer(out_chs, downsample, 0.5, **kwargs),
        )
        self.resize_input = resize_input
        self.built_size = _image_size(img_size)
        # the map size the first stage is built for: img_size's at 1/2, floor(H / 2) as the layers size their outputs
        # (None: strided convolutions, whose maps follow the input)
        self.grid_size = tuple(_stem_input(n) // 2 for n in self.built_size) if downsample == 'smp' else None
        self.dynamic_img_size = dynamic_img_size
        self.set_input_size(img_size)

    @property
    def fixed_factor(self) -> bool:
        """Whether the stem resizes by a set factor (so that small images can leave a stage no pixel)."""
        return self.grid_size is not None and not self.dynamic_img_size

    @property
    def resizer(self) -> nn.Module:
        """The layer whose factor follows the input size."""
        return self[0] if self.resize_input else self[-1]

    def _resized_size(self) -> Tuple[int, int]:
        """The size the resizing layer gives every input: `img_size` (the image), or the first stage's map."""
        return self.built_size if self.resize_input else self.grid_size

    def _resizer_input(self, size: int) -> int:
        """The resizing layer's input size along an axis, for images of `size`."""
        return size if self.resize_input else _stem_input(size)

    @torch.jit.ignore
    def set_input_size(self, img_size: ImageSize) -> None:
        self.img_size = _image_size(img_size)
        if self.grid_size is None:
            return
        if self.dynamic_img_size:
            self.resizer.resize_to(self._resized_size())
        else:
            self.resizer.resize_by(tuple(_factor(self._resizer_input(n), m)
                                         for n, m in zip(self.img_size, self._resized_size())))

    def map_size(self, size: int, axis: int) -> int:
        """The size along `axis` of the stem's output for images of `size`, at the set factor."""
        scale = _axis_scale(self.resizer.scale, axis)
        if self.resize_input:
            return _stem_input(math.floor(size * scale)) // 2
        return math.floor(_stem_input(size) * scale)


@torch.compiler.disable  # raised as it is where torch.compile traces the check
def _raise_too_small(height: int, width: int, img_size: Tuple[int, int], smallest: List[int]) -> None:
    raise ValueError(f'a {height} x {width} image is smaller than this network accepts, set up for {img_size[0]} x '
                     f'{img_size[1]} images: at least {smallest[0]} x {smallest[1]} (or use set_input_size or '
                     f'dynamic_img_size=True)')


class SMPConvNet(SMPConvModel):
    """SMPConv ImageNet network: a RepLKNet whose large depthwise kernels come from self-moving points.

    With downsample='smp', continuous SMP layers halve the maps, and the stem's resizes by whatever factor keeps the
    stages' maps those of `img_size` (see `SMPConvStem`): after `set_input_size`, or for every input with
    `dynamic_img_size`, as timm's ViTs adapt to the input size.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            depths: Sequence[int] = (2, 2, 8, 2),
            dims: Sequence[int] = (96, 192, 384, 768),
            kernel_sizes: Sequence[int] = (31, 29, 27, 13),
            num_points: Optional[Sequence[int]] = None,
            points_divisor: int = 4,
            ffn_ratio: float = 4.,
            dw_ratio: float = 1.,
            small_kernel_size: Optional[int] = 5,
            kernel_scale: float = 1.,
            kernel_type: str = 'smp',
            learn_positions: bool = True,
            learn_radii: bool = True,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            downsample: str = 'conv',
            stage_scale: float = 0.5,
            resize_input: bool = False,
            img_size: ImageSize = 224,
            dynamic_img_size: bool = False,
            inference_mode: bool = False,
            device=None,
            dtype=None,
    ):
        """
        Args:
            in_chans: Number of input image channels.
            num_classes: Number of classes for classification head, 0 for none.
            global_pool: Global pooling type.
            depths: Number of (large-kernel block, FFN block) pairs in each stage.
            dims: Feature dimension of each stage.
            kernel_sizes: Size of the SMP kernels in each stage (odd).
            num_points: Points per SMP kernel in each stage; default floor(k^2 / points_divisor).
            points_divisor: The paper's point density: 4 for SMPConv-T/B, 8 for the mobile models.
            ffn_ratio: Hidden width of the FFN blocks relative to the stage width.
            dw_ratio: Width of the large-kernel branch relative to the stage width.
            small_kernel_size: Size of the parallel dense depthwise kernel (odd), None for none.
            kernel_scale: Sample the SMP kernels at round-to-odd(kernel_scale * k) (see `set_kernel_scale`).
            kernel_type: 'smp', or 'dense' for learned dense large kernels (RepLKNet), to compare with.
            learn_positions: Let the points move; False keeps them where they were initialised.
            learn_radii: Let the radii change; False keeps their initial value.
            drop_rate: Head pre-classifier dropout rate.
            drop_path_rate: Stochastic depth rate, reached linearly at the last block pair.
            downsample: Depthwise halving layers: 'conv', 3x3 stride-2 convolutions; 'smp', continuous SMP ones.
            stage_scale: The factor each stage transition resizes its maps by (downsample='smp' for any but 1/2;
                see `_transition_scales`).
            resize_input: Resize the image itself to the maps of `img_size`, before the stem's first layer, with a
                continuous layer on its channels (downsample='smp'), instead of the stem's halving layer.
            img_size: The input size the stages are built for (trained at; default the pretrained config's).
            dynamic_img_size: Give every input the stage maps of `img_size` (downsample='smp').
            inference_mode: Build the re-parameterised form (`timm.models.reparameterize_model`), to load
                its weights: batch norms folded, one depthwise convolution per large kernel.
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        _check_args(depths, dims, kernel_sizes, num_points, points_divisor, drop_rate, drop_path_rate)
        num_points = num_points or [points_for_kernel(k, points_divisor) for k in kernel_sizes]
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        folding = dict(inference_mode=inference_mode, **dd)
        self.stem = SMPConvStem(in_chans, dims[0], downsample, img_size, dynamic_img_size, resize_input, **folding)
        if stage_scale != 0.5 and downsample != 'smp':
            raise ValueError(f"stage_scale {stage_scale} needs downsample='smp': strided convolutions only halve")
        scales = _transition_scales(self.stem.grid_size, stage_scale, len(depths))

        dp_rates = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stage_args = dict(ffn_ratio=ffn_ratio, dw_ratio=dw_ratio, small_kernel_size=small_kernel_size,
                          kernel_type=kernel_type, **folding)
        self.stages = nn.Sequential(*[
            SMPConvStage(dims[max(i - 1, 0)], dims[i], depths[i], kernel_sizes[i], num_points[i],
                         downsample if i else None, scales[i], drop_path_rates=dp_rates[i], **stage_args)
            for i in range(len(depths))
        ])
        self.feature_info = [dict(num_chs=dim, reduction=_reduction(stage_scale, i), module=f'stages.{i}')
                             for i, dim in enumerate(dims)]
        self.num_features = dims[-1]

        self.norm = nn.BatchNorm2d(self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.head_hidden_size = self.head.num_features
        named_apply(_init_weights, self)
        if kernel_scale != 1.:
            self.set_kernel_scale(kernel_scale)
        _learn_points(self, learn_positions, learn_radii)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^norm', (99999,)),
            ]
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    @property
    def adapts_to_input_size(self) -> bool:
        """Whether the stages see the maps of the size the network is built for (`img_size`) from images of other
        sizes (downsample='smp'); strided convolutions' maps follow the input."""
        return self.stem.grid_size is not None

    @property
    def dynamic_img_size(self) -> bool:
        """Whether every input gets the stage maps of the size the network was built for (timm's attribute)."""
        return self.stem.dynamic_img_size

    @torch.jit.ignore
    def set_input_size(self, img_size: Optional[ImageSize] = None) -> None:
        """Set the network up for images of `img_size` (None: as it is): with downsample='smp', the stem resizes
        their maps to those of the size it was built for, so every stage sees the map size it was trained on.
        Strided convolutions have no factor to set: their maps follow the input; the size is only recorded."""
        if img_size is None:
            return
        self.stem.set_input_size(img_size)
        # timm's record of the input size a model is set up for (what `update_model_input_size` writes there);
        # the construction arguments keep the size the stages were built for
        self._traits = dict(getattr(self, '_traits', {}), img_size=self.stem.img_size)

    @torch.jit.unused
    def _check_image_size(self, x: torch.Tensor) -> None:
        """A one-line error for images whose maps the set resize factors would empty before the last stage."""
        if torch.compiler.is_compiling():
            # a graph per image size, as the resize layers' geometry makes anyway: torch.compile takes a size that
            # changed between calls as a symbol, which the floors below cannot take
            torch._dynamo.mark_static(x)
        height, width = x.shape[-2], x.shape[-1]

        def last_map(n: int, axis: int) -> int:
            n = self.stem.map_size(n, axis)
            for stage in self.stages[1:]:
                n = math.floor(n * _axis_scale(stage.downsample[-1].scale, axis))
            return n

        if min(last_map(n, axis) for axis, n in enumerate((height, width))) >= 1:
            return
        smallest = [next(n for n in range(1, 1 << 30) if last_map(n, axis) >= 1) for axis in range(2)]
        _raise_too_small(height, width, self.stem.img_size, smallest)

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_scripting() or torch_ops_only()):
            self._check_input(x)
        if self.stem.fixed_factor and not (torch.jit.is_scripting() or recording_graph()):
            self._check_image_size(x)
        return self.stem(_cpu_layout(x))

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._forward_stem(x)
        x = self.stages(x)
        x = self.norm(x)
        return x


def _cpu_layout(x: torch.Tensor) -> torch.Tensor:
    """Images in channels_last on a CPU, where the network then runs in channels_last throughout.

    oneDNN's convolutions and batch norms and this package's depthwise backends are all faster there in
    channels_last than in NCHW (`python benchmarks/training.py` times a step in both layouts). Only the strides
    change, not the values. Under vmap, which cannot make other layouts, they stay as they are (`transforming`).
    """
    if x.device.type != 'cpu' or x.dim() != 4 or (not torch.jit.is_scripting() and transforming()):
        return x
    return x.contiguous(memory_format=torch.channels_last)


torch.fx.wrap('_cpu_layout')  # FX graphs keep the device test, not the layout of the device they were traced on


def _resizing_layer(channels: int, downsample: str, scale: Scale, **kwargs) -> nn.Module:
    """The depthwise layer that resizes a map by `scale`: a continuous SMP one (a factor the network may change, see
    `SMPConvNet.set_input_size`), or a 3x3 stride-2 convolution, which only halves."""
    if downsample == 'smp':
        return ContinuousConvNormAct(channels, RESIZE_KERNEL_SIZE, RESIZE_POINTS, scale=scale, **kwargs)
    if downsample == 'conv':
        return FusableConvNormAct(channels, channels, 3, stride=2, groups=channels, **kwargs)
    raise ValueError(f"downsample takes 'conv' (strided convolutions) or 'smp' (continuous SMP layers), "
                     f"got {downsample!r}")


def _transition_scales(grid_size: Optional[Tuple[int, int]], stage_scale: float, num_stages: int) -> List[Scale]:
    """The factor each stage's transition resizes by (stage 0 has none): the maps of the stages are
    floor(grid * stage_scale^i) per axis, of the first stage's `grid_size` (None: strided convolutions, 1/2).

    A transition resizes by `stage_scale` itself where that gives its map (always at 1/2: floor(floor(n / 2) / 2)
    = floor(n / 4)), else by the factor to it: repeated flooring would lose a pixel at every non-integer step
    (16 x 2^(-1/2) x 2^(-1/2) = 11.3 x 0.71 = 7.8, where the grid's 8 x 8 is the map size wanted).
    """
    if grid_size is None:
        return [stage_scale] * num_stages

    def axis_scales(grid: int) -> List[float]:
        sizes = [max(1, math.floor(grid * stage_scale ** i + 1e-9)) for i in range(num_stages)]
        return [stage_scale] + [stage_scale if math.floor(n * stage_scale) == m else _factor(n, m)
                                for n, m in zip(sizes, sizes[1:])]

    return [scale_y if scale_y == scale_x else (scale_y, scale_x)
            for scale_y, scale_x in zip(*(axis_scales(grid) for grid in grid_size))]


def _reduction(stage_scale: float, stage: int) -> Union[int, float]:
    """The nominal reduction of a stage's maps: 4 after the stem, over stage_scale per transition (an integer at
    1/2, as timm's feature_info has it)."""
    reduction = 4 / stage_scale ** stage
    return round(reduction) if abs(reduction - round(reduction)) < 1e-9 else round(reduction, 2)


def _axis_scale(scale: Scale, axis: int) -> float:
    """A layer's factor along `axis`, given as one number or one per axis."""
    return scale if isinstance(scale, (int, float)) else scale[axis]


def _stem_input(size: int) -> int:
    """The size of the stem's first map (its 3x3 stride-2 convolution's output) for images of `size`."""
    return -(-size // 2)


def _factor(size: int, resized: int) -> float:
    """resized / size, rounded up where float rounding would make the resize op's output, floor(size * factor),
    one short of `resized`."""
    factor = resized / size
    while math.floor(size * factor) < resized:
        factor = math.nextafter(factor, math.inf)
    return factor


def _image_size(value: ImageSize) -> Tuple[int, int]:
    """(height, width) of an image size given as one number or two; a one-line error for anything else."""
    size = (value, value) if isinstance(value, int) else value
    if not (isinstance(size, Sequence) and len(size) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in size)):
        raise ValueError(f'img_size takes a positive integer or a pair of them (height, width), got {value!r}')
    return tuple(size)


def _check_args(depths, dims, kernel_sizes, num_points, points_divisor, drop_rate, drop_path_rate) -> None:
    """One-line errors for arguments the layers would otherwise fail on obscurely, or accept silently."""
    for name, values in (('depths', depths), ('dims', dims), ('kernel_sizes', kernel_sizes)):
        if not isinstance(values, Sequence) or not all(isinstance(v, int) and v >= 1 for v in values):
            raise ValueError(f'{name} takes a sequence of positive integers, one per stage, got {values!r}')
    points = kernel_sizes if num_points is None else num_points  # the default has one entry per kernel size
    if not len(dims) == len(kernel_sizes) == len(points) == len(depths):
        raise ValueError(f'depths, dims, kernel_sizes and num_points need one entry per stage, got '
                         f'{len(depths)}, {len(dims)}, {len(kernel_sizes)} and {len(points)}')
    if not (isinstance(points_divisor, int) and points_divisor >= 1):
        raise ValueError(f'points_divisor takes a positive integer (4 for SMPConv-T/B, 8 for the mobile models), '
                         f'got {points_divisor!r}')
    for name, rate in (('drop_rate', drop_rate), ('drop_path_rate', drop_path_rate)):
        if not 0. <= rate < 1.:
            raise ValueError(f'{name} takes a probability in [0, 1), got {rate!r}')


def _learn_points(model: nn.Module, positions: bool, radii: bool) -> None:
    """Let the points of every SMP kernel move and their radii change, or keep them as initialised."""
    for kernel in model.modules():
        if isinstance(kernel, SMPKernel):
            kernel.positions.requires_grad_(positions)
            kernel.radii.requires_grad_(radii)


def _init_weights(module: nn.Module, name: Optional[str] = None) -> None:
    """Truncated-normal conv and linear weights, zero biases, as the authors initialise them."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module, strict: bool = True) -> Dict[str, Any]:
    """Convert official checkpoints to this package's layout (native ones pass through untouched) and, unless
    `strict=False`, check that they hold every weight of the model but the classifier's: timm drops the
    classifier for another number of classes and then loads without checking what else is missing."""
    state_dict = to_package_layout(state_dict)
    if strict:
        classifier = getattr(model, 'pretrained_cfg', {}).get('classifier', 'head.fc')
        problems = fit_problems(model, state_dict, ignore=(classifier,), shapes=False)
        if problems:
            raise ValueError('the pretrained weights do not fit the model: ' + '; '.join(problems))
    return state_dict


def _create_smpconv(variant: str, pretrained: bool = False, **kwargs) -> SMPConvNet:
    # timm's own flag for partial loads, which the filter then allows
    strict = kwargs.get('pretrained_strict', True)
    if kwargs.get('img_size') is None:  # the size the weights were trained at
        cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
        kwargs['img_size'] = tuple(cfg.input_size[-2:])
    try:
        return build_model_with_cfg(
            SMPConvNet, variant, pretrained,
            pretrained_filter_fn=partial(checkpoint_filter_fn, strict=strict),
            feature_cfg=dict(out_indices=tuple(range(len(kwargs['depths']))), flatten_sequential=True),
            **kwargs,
        )
    except SafetensorError as e:
        raise ValueError(f'the pretrained weights of {variant} are not a readable safetensors file (truncated or '
                         f'corrupt?): {e}') from e
    except OSError as e:
        if not pretrained:
            raise
        # one message instead of huggingface_hub's chain of three tracebacks
        raise pretrained_weights_error(variant, e, kwargs.get('pretrained_cfg'),
                                       kwargs.get('pretrained_cfg_overlay')) from None


def _cfg(**kwargs) -> Dict[str, Any]:
    return paper_cfg(
        num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875, interpolation='bicubic',
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, **{'first_conv': 'stem.0.conv', **kwargs})


# the authors' ImageNet-1k EMA weights, converted by `python -m smpconv_models.convert`; the mobile variants
# of the paper's appendix were not released
default_cfgs = generate_default_cfgs({
    'smpconv_nano': _cfg(),
    'smpconv_nano_cc': _cfg(),
    'smpconv_nano_ci': _cfg(first_conv='stem.1.conv'),
    'smpconv_nano_gradual': _cfg(),
    'smpconv_t.in1k': _cfg(hf_hub_id=f'{HUB_ORG}/smpconv_t.in1k'),
    'smpconv_b.in1k': _cfg(hf_hub_id=f'{HUB_ORG}/smpconv_b.in1k'),
    'smpconv_mobile31': _cfg(),
    'smpconv_mobile51': _cfg(),
})


_NANO_ARGS = dict(
    depths=(1, 1, 1, 1), dims=(32, 64, 128, 256), kernel_sizes=(31, 29, 27, 13), points_divisor=8, ffn_ratio=2.)


@register_model
def smpconv_nano(pretrained: bool = False, **kwargs) -> SMPConvNet:
    """A 0.9M-parameter SMPConv (this package's, not the paper's) for quick CPU runs and tests."""
    return _create_smpconv('smpconv_nano', pretrained=pretrained, **dict(_NANO_ARGS, **kwargs))


@register_model
def smpconv_nano_cc(pretrained: bool = False, **kwargs) -> SMPConvNet:
    """smpconv_nano with continuous SMP downsampling layers: any input size, the trained map sizes."""
    model_args = dict(_NANO_ARGS, downsample='smp')
    return _create_smpconv('smpconv_nano_cc', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_nano_ci(pretrained: bool = False, **kwargs) -> SMPConvNet:
    """smpconv_nano_cc whose stem resizes the image itself first: every layer sees the scale it was trained at."""
    model_args = dict(_NANO_ARGS, downsample='smp', resize_input=True)
    return _create_smpconv('smpconv_nano_ci', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_nano_gradual(pretrained: bool = False, **kwargs) -> SMPConvNet:
    """smpconv_nano_cc with maps that shrink by 2^(1/2) between 7 groups of blocks instead of by 2 between 4
    stages, the channels growing by about 2^(1/2): a network only continuous resizing layers allow."""
    model_args = dict(
        depths=(1,) * 7, dims=(32, 45, 64, 91, 128, 181, 256), kernel_sizes=(31, 31, 29, 29, 27, 19, 13),
        points_divisor=8, ffn_ratio=2., downsample='smp', stage_scale=2 ** -0.5)
    return _create_smpconv('smpconv_nano_gradual', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_t(pretrained: bool = False, **kwargs) -> SMPConvNet:
    """SMPConv-T, 26.7M parameters."""
    model_args = dict(
        depths=(2, 2, 8, 2), dims=(96, 192, 384, 768), kernel_sizes=(31, 29, 27, 13), drop_path_rate=0.1)
    return _create_smpconv('smpconv_t', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_b(pretrained: bool = False, **kwargs) -> SMPConvNet:
    """SMPConv-B, 79.5M parameters."""
    model_args = dict(
        depths=(2, 2, 20, 2), dims=(128, 256, 512, 1024), kernel_sizes=(31, 29, 27, 13), drop_path_rate=0.5)
    return _create_smpconv('smpconv_b', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_mobile31(pretrained: bool = False, **kwargs) -> SMPConvNet:
    """SMPConv mobile with 31x31 first-stage kernels, 2.9M parameters."""
    model_args = dict(
        depths=(2, 2, 2, 2), dims=(64, 128, 256, 320), kernel_sizes=(31, 29, 27, 13), points_divisor=8,
        ffn_ratio=2.)
    return _create_smpconv('smpconv_mobile31', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_mobile51(pretrained: bool = False, **kwargs) -> SMPConvNet:
    """SMPConv mobile with 51x51 first-stage kernels, 3.1M parameters."""
    model_args = dict(
        depths=(2, 2, 2, 2), dims=(64, 128, 256, 320), kernel_sizes=(51, 49, 47, 13), points_divisor=8,
        ffn_ratio=2.)
    return _create_smpconv('smpconv_mobile51', pretrained=pretrained, **dict(model_args, **kwargs))
