""" SMPConv sequence and CIFAR-10 models

Paper: `SMPConv: Self-moving Point Representations for Continuous Convolution` - https://arxiv.org/abs/2304.02330
(sections 4.2-4.3, tables 2-4 and 6-9). Original code: https://github.com/sangnekim/SMPConv, folder smp/ (MIT).

The authors' continuous-kernel networks ("CKConv" in their code, after Romero et al.), with SMP kernels: every
convolution is full (not depthwise), each output channel has points of its own, with a value per input
channel, and kernels are normalised by the number of points covering each tap (the paper's eq. 1).

- `SMPConvTCN`: residual blocks of causal convolutions whose kernels are as long as the sequence, beside
  short causal kernels; the last step of the last block is classified (sMNIST, pMNIST, sCIFAR10, Character
  Trajectories, Speech Commands).
- `SMPConvResNet`: a stem and residual blocks at full resolution with 33 x 33 kernels beside 3 x 3 ones,
  global average pooling (CIFAR-10).

Both run on any sequence length or image size: a kernel longer than the input is cropped to the taps that
meet it (exactly), a shorter one slides as usual.
"""
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
from timm.layers import ClassifierHead, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from .checkpoint import load_weights, read_checkpoint, select_state_dict
from .official import convert_official_ckconv_state_dict, official_ckconv_model_args
from .ops import causal_conv1d, conv2d_same
from .smp import SMPKernel, project_radii

__all__ = ['CKConv', 'CausalConv1d', 'LargeSmallConv', 'TCNBlock', 'ResNetBlock', 'SMPConvTCN', 'SMPConvResNet',
           'from_official_ckconv', 'CK_RADIUS_RANGE']

# the interval the authors' sequence and CIFAR-10 trainer clamps radii to after every step
CK_RADIUS_RANGE = (1e-4, 1.)


class CKConv(nn.Module):
    """Convolution with an SMP kernel of points per output channel, a value per input channel and the coverage
    normalisation of the paper's eq. (1): causal in 1D (the kernel's last tap is the current step), 'same' in
    2D. `kernel_type='dense'` learns a dense kernel of the same size instead, to compare with."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int,
            num_points: int,
            ndim: int,
            radius: float,
            position_std: float,
            bias: bool = False,
            kernel_type: str = 'smp',
            device=None,
            dtype=None,
    ):
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if ndim == 2 and kernel_size % 2 == 0:
            raise ValueError(f"'same' 2D convolution needs an odd kernel size, got {kernel_size}")
        self.ndim = ndim
        if kernel_type == 'smp':
            self.points = SMPKernel(
                out_chs, num_points, kernel_size, ndim=ndim, in_per_filter=in_chs, shared_positions=False,
                normalize=True, position_std=position_std, position_init='newest' if ndim == 1 else 'centre',
                init_radius=radius, radius_range=CK_RADIUS_RANGE, **dd)
            self.weight = None
        elif kernel_type == 'dense':
            self.points = None
            self.weight = nn.Parameter(torch.empty(out_chs, in_chs, *([kernel_size] * ndim), **dd))
            trunc_normal_(self.weight, std=.02)
        else:
            raise ValueError(f"kernel_type is 'smp' or 'dense', got {kernel_type!r}")
        self.bias = nn.Parameter(torch.zeros(out_chs, **dd)) if bias else None

    def kernel(self) -> torch.Tensor:
        """The dense kernel [O, C, L] or [O, C, L, L] the convolution applies."""
        if self.points is None:
            return self.weight
        return self.points()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ndim == 1:
            return causal_conv1d(x, self.kernel(), self.bias)
        return conv2d_same(x, self.kernel(), self.bias)


class CausalConv1d(nn.Conv1d):
    """Conv1d whose output step t sees the input steps t - k + 1 .. t."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, bias: bool = False, device=None, dtype=None):
        super().__init__(in_chs, out_chs, kernel_size, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, (self.kernel_size[0] - 1, 0)))


class LargeSmallConv(nn.Module):
    """BN(SMP kernel convolution) + BN(small dense convolution), the authors' pair of parallel kernels, then an
    activation where one is given (the CIFAR-10 stem's)."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            ndim: int,
            kernel_size: int,
            small_kernel_size: int,
            norm_layer: Type[nn.Module],
            small_bias: bool = False,
            act_layer: Optional[Type[nn.Module]] = None,
            **ck_args,
    ):
        dd = {'device': ck_args.get('device'), 'dtype': ck_args.get('dtype')}
        super().__init__()
        self.large = CKConv(in_chs, out_chs, kernel_size, ndim=ndim, **ck_args)
        self.large_norm = norm_layer(out_chs, **dd)
        if ndim == 1:
            self.small = CausalConv1d(in_chs, out_chs, small_kernel_size, bias=small_bias, **dd)
        else:
            if small_kernel_size % 2 == 0:
                raise ValueError(f"'same' 2D convolution needs an odd small_kernel_size, got {small_kernel_size}")
            self.small = nn.Conv2d(in_chs, out_chs, small_kernel_size, padding=small_kernel_size // 2,
                                   bias=small_bias, **dd)
        self.small_norm = norm_layer(out_chs, **dd)
        self.act = nn.Identity() if act_layer is None else act_layer()
        trunc_normal_(self.small.weight, std=.02)
        if self.small.bias is not None:
            nn.init.zeros_(self.small.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.large_norm(self.large(x)) + self.small_norm(self.small(x)))


class _ResidualBlock(nn.Module):
    """Two pairs of parallel kernels and a shortcut (a 1x1 convolution where the width changes)."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            ndim: int,
            dropout: float,
            act_layer: Type[nn.Module],
            **conv_args,
    ):
        dd = {'device': conv_args.get('device'), 'dtype': conv_args.get('dtype')}
        super().__init__()
        self.conv1 = LargeSmallConv(in_chs, out_chs, ndim, **conv_args)
        self.conv2 = LargeSmallConv(out_chs, out_chs, ndim, **conv_args)
        if in_chs == out_chs:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = (nn.Conv1d if ndim == 1 else nn.Conv2d)(in_chs, out_chs, 1, **dd)
        self.act = act_layer()
        self.drop = nn.Dropout(dropout)


class TCNBlock(_ResidualBlock):
    """relu(drop(relu(conv2(h))) + shortcut(x)), h = drop(relu(conv1(x))): the authors' TCN block, with its
    activation both before and after the residual sum."""

    def __init__(self, in_chs: int, out_chs: int, **kwargs):
        super().__init__(in_chs, out_chs, ndim=1, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act(self.conv1(x)))
        return self.act(self.drop(self.act(self.conv2(h))) + self.shortcut(x))


class ResNetBlock(_ResidualBlock):
    """relu(conv2(h) + shortcut(x)), h = drop(relu(conv1(x))): the authors' CIFAR-10 ResNet block."""

    def __init__(self, in_chs: int, out_chs: int, **kwargs):
        super().__init__(in_chs, out_chs, ndim=2, **kwargs)
        if isinstance(self.shortcut, nn.Conv2d):  # the authors re-initialise 2D (not 1D) shortcuts
            trunc_normal_(self.shortcut.weight, std=.02)
            nn.init.zeros_(self.shortcut.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act(self.conv1(x)))
        return self.act(self.conv2(h) + self.shortcut(x))


_NORMS = {'batchnorm': {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}}
_ACTS = {'relu': nn.ReLU, 'leaky_relu': nn.LeakyReLU}


class _LayerNorm(nn.GroupNorm):
    """Layer norm over channels and positions (GroupNorm with one group), as the authors' `LayerNorm`."""

    def __init__(self, num_channels: int, eps: float = 1e-12, device=None, dtype=None):
        super().__init__(1, num_channels, eps=eps, device=device, dtype=dtype)


def _norm_layer(norm: str, ndim: int) -> Type[nn.Module]:
    if norm == 'layernorm':
        return _LayerNorm
    if norm not in _NORMS:
        raise ValueError(f"norm takes 'batchnorm' or 'layernorm', got {norm!r}")
    return _NORMS[norm][ndim]


def _act_layer(act: str) -> Type[nn.Module]:
    if act not in _ACTS:
        raise ValueError(f"act takes {' or '.join(map(repr, _ACTS))}, got {act!r}")
    return _ACTS[act]


def _widths(width: int, width_factors: Optional[Sequence[float]], depth: int) -> List[int]:
    """The output width of every block: `width` scaled by the block's factor (all 1 by default)."""
    factors = [1.] * depth if width_factors is None else list(width_factors)
    if len(factors) != depth:
        raise ValueError(f'width_factors needs one factor per block ({depth}), got {len(factors)}: {factors}')
    return [int(width * factor) for factor in factors]


def _check_rate(name: str, rate: float) -> None:
    if not 0. <= rate < 1.:
        raise ValueError(f'{name} takes a probability in [0, 1), got {rate!r}')


class _CKNet(nn.Module):
    """What the two networks share: blocks of parallel kernels, the timm model API around them."""

    def _build_blocks(self, block: Type[_ResidualBlock], in_chs: int, widths: List[int], block_args: Dict[str, Any]
                      ) -> None:
        blocks = []
        self.feature_info = []
        for i, out_chs in enumerate(widths):
            blocks.append(block(in_chs, out_chs, **block_args))
            in_chs = out_chs
            self.feature_info.append(dict(num_chs=out_chs, reduction=1, module=f'blocks.{i}'))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = self.head_hidden_size = in_chs
        self.grad_checkpointing = False

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^blocks\.(\d+)')

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # positions and radii are coordinates and extents, not magnitudes (the authors' optimizer groups)
        return {'*.points.positions', '*.points.radii'}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def project_radii(self) -> None:
        """Clamp every SMP radius into its valid range ([1e-4, 1], the authors'); call after each optimizer step."""
        project_radii(self)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Prune the blocks (and the classifier) that the intermediates `indices` do not need."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        prune_end = max_index < len(self.blocks) - 1
        self.blocks = self.blocks[:max_index + 1]
        if prune_end:
            self.num_features = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def _run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            stop_early: bool = False,
            intermediates_only: bool = False,
            **kwargs,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The blocks' outputs (all unless `indices` picks: the last n if an int), and the final features."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x = self.stem(x)
        intermediates = []
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        for i, block in enumerate(blocks):
            x = block(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class _LastStepHead(nn.Module):
    """The classifier of the last step of a sequence [B, C, N]."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0., device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._fc(num_classes, device, dtype)

    def _fc(self, num_classes: int, device, dtype) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        fc = nn.Linear(self.in_features, num_classes, device=device, dtype=dtype)
        nn.init.normal_(fc.weight, std=.01)  # the authors' readout initialisation
        nn.init.zeros_(fc.bias)
        return fc

    def reset(self, num_classes: int, device=None, dtype=None) -> None:
        self.fc = self._fc(num_classes, device, dtype)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x[:, :, -1])
        return x if pre_logits else self.fc(x)


class SMPConvTCN(_CKNet):
    """The authors' TCN for sequence classification, with SMP kernels as long as the sequence."""

    def __init__(
            self,
            in_chans: int = 1,
            num_classes: int = 10,
            depth: int = 6,
            width: int = 30,
            width_factors: Optional[Sequence[float]] = None,
            kernel_size: int = 784,
            num_points: int = 30,
            radius: float = 0.002,
            position_std: float = 0.1,
            small_kernel_size: int = 5,
            conv_bias: bool = False,
            kernel_type: str = 'smp',
            norm: str = 'batchnorm',
            act: str = 'relu',
            dropout: float = 0.,
            drop_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        """
        Args:
            in_chans: Channels of the input sequence [B, C, N].
            num_classes: Number of classes of the classifier, 0 for none.
            depth: Number of residual blocks.
            width: Channels of every block (times its width factor).
            width_factors: Per block, the factor of `width` it outputs (default: all 1).
            kernel_size: Taps of every SMP kernel: the sequence length the model is made for (any length runs).
            num_points: Points per output channel of every SMP kernel.
            radius: Initial radius of every point (in the kernel's [-1, 1] domain).
            position_std: Std of the (half-normal) distance of the initial points from the newest step.
            small_kernel_size: Taps of the parallel short causal kernels.
            conv_bias: A bias on the SMP convolutions.
            kernel_type: 'smp', or 'dense' for learned dense kernels of the same size, to compare with.
            norm: 'batchnorm' or 'layernorm' after every convolution.
            act: 'relu' or 'leaky_relu'.
            dropout: Dropout rate inside the blocks.
            drop_rate: Dropout rate before the classifier.
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        for name, rate in (('dropout', dropout), ('drop_rate', drop_rate)):
            _check_rate(name, rate)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.stem = nn.Identity()  # the first block takes the input channels
        ck_args = dict(num_points=num_points, radius=radius, position_std=position_std, bias=conv_bias,
                       kernel_type=kernel_type, **dd)
        block_args = dict(kernel_size=kernel_size, small_kernel_size=small_kernel_size,
                          norm_layer=_norm_layer(norm, 1), dropout=dropout, act_layer=_act_layer(act), **ck_args)
        self._build_blocks(TCNBlock, in_chans, _widths(width, width_factors, depth), block_args)
        self.head = _LastStepHead(self.num_features, num_classes, drop_rate, **dd)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, **_device_dtype(self))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


class SMPConvResNet(_CKNet):
    """The authors' CIFAR-10 ResNet: a stem and residual blocks at full resolution with 33 x 33 SMP kernels."""

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 10,
            depth: int = 7,
            width: int = 24,
            width_factors: Optional[Sequence[float]] = (1., 1., 1.5, 1.5, 1.5, 2., 2.),
            kernel_size: int = 33,
            num_points: int = 16,
            radius: float = 0.12,
            position_std: float = 0.05,
            small_kernel_size: int = 3,
            conv_bias: bool = False,
            kernel_type: str = 'smp',
            norm: str = 'batchnorm',
            act: str = 'relu',
            dropout: float = 0.1,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        """
        Args:
            in_chans: Channels of the input image.
            num_classes: Number of classes of the classifier, 0 for none.
            depth: Number of residual blocks.
            width: Channels of the stem, and of every block times its width factor.
            width_factors: Per block, the factor of `width` it outputs (default: the authors' CIFAR-10 widths).
            kernel_size: Height and width of every SMP kernel (odd).
            num_points: Points per output channel of every SMP kernel.
            radius: Initial radius of every point (in the kernel's [-1, 1]^2 domain).
            position_std: Std of the initial points' distance from the kernel's centre.
            small_kernel_size: Size of the parallel small kernels (odd).
            conv_bias: A bias on the SMP convolutions.
            kernel_type: 'smp', or 'dense' for learned dense kernels of the same size, to compare with.
            norm: 'batchnorm' or 'layernorm' after every convolution.
            act: 'relu' or 'leaky_relu'.
            dropout: Dropout rate inside the blocks.
            global_pool: Global pooling type.
            drop_rate: Dropout rate before the classifier.
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        for name, rate in (('dropout', dropout), ('drop_rate', drop_rate)):
            _check_rate(name, rate)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        conv_args = dict(kernel_size=kernel_size, small_kernel_size=small_kernel_size, norm_layer=_norm_layer(norm, 2),
                         num_points=num_points, radius=radius, position_std=position_std, bias=conv_bias,
                         kernel_type=kernel_type, **dd)
        # relu(BN(SMP kernel convolution) + BN(small convolution, with a bias))
        self.stem = LargeSmallConv(in_chans, width, 2, small_bias=True, act_layer=_act_layer(act), **conv_args)
        self._build_blocks(ResNetBlock, width, _widths(width, width_factors, depth),
                           dict(dropout=dropout, act_layer=_act_layer(act), **conv_args))
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        if num_classes > 0:
            nn.init.kaiming_normal_(self.head.fc.weight)  # the authors' readout initialisation
            nn.init.zeros_(self.head.fc.bias)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, in_features=self.num_features, **_device_dtype(self))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


def _device_dtype(module: nn.Module) -> Dict[str, Any]:
    parameter = next(module.parameters())
    return {'device': parameter.device, 'dtype': parameter.dtype}


def from_official_ckconv(
        checkpoint: Union[str, Any],
        *,
        in_channels: int,
        out_channels: int,
        net: Dict[str, Any],
        kernel: Dict[str, Any],
        conv: Dict[str, Any],
        sequence_length: Optional[int] = None,
        trust_pickle: bool = False,
) -> _CKNet:
    """Build the model the authors' `SeqData_TCN` or `Img_ResNet` describes and load its weights.

    Args:
        checkpoint: An official state dict or checkpoint (its 'model' entry, as the authors' trainer saves it), or
            the path of one (safetensors, or a PyTorch file read with the restricted unpickler).
        in_channels, out_channels: The official constructor's arguments.
        net, kernel, conv: The authors' config groups (`cfg/config.yaml` merged with a training command's
            overrides), as dicts.
        sequence_length: The kernel length of `conv['horizon'] = 'same'` ('full': twice it, minus one) where the
            checkpoint does not record it (its `train_length` buffers do once the model has run).
        trust_pickle: Unpickle fully a PyTorch file that the restricted unpickler refuses (it can run code).
    """
    if isinstance(checkpoint, Mapping):
        source, content = 'the official state dict', checkpoint
    else:
        source, content = str(checkpoint), read_checkpoint(checkpoint, trust_pickle=trust_pickle)
    state_dict, lengths = convert_official_ckconv_state_dict(select_state_dict(content))
    model_class, model_args = official_ckconv_model_args(in_channels, out_channels, net, kernel, conv,
                                                         recorded_lengths=lengths, sequence_length=sequence_length)
    model = SMPConvTCN(**model_args) if model_class == 'TCN' else SMPConvResNet(**model_args)
    load_weights(model, state_dict, source)
    return model


def _create(model_class: Type[_CKNet], variant: str, pretrained: bool = False, **kwargs) -> _CKNet:
    return build_model_with_cfg(model_class, variant, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 10, 'classifier': 'head.fc',
        'license': 'mit', 'paper_ids': 'arXiv:2304.02330',
        'paper_name': 'SMPConv: Self-moving Point Representations for Continuous Convolution',
        'origin_url': 'https://github.com/sangnekim/SMPConv',
        **kwargs,
    }


def _sequence_cfg(channels: int, length: int, **kwargs) -> Dict[str, Any]:
    """timm's input_size describes images: a sequence model's input is in its description."""
    return _cfg(input_size=None, description=f'sequences [B, {channels}, {length}] (any length runs)', **kwargs)


# The authors' configurations (their smp/README.md commands over cfg/config.yaml); the recipes are in configs/.
# Their released checkpoints load with `from_official_ckconv`.
default_cfgs = generate_default_cfgs({
    'smpconv_tcn_smnist': _sequence_cfg(1, 784),
    'smpconv_tcn_pmnist': _sequence_cfg(1, 784),
    'smpconv_tcn_scifar10': _sequence_cfg(3, 1024),
    'smpconv_tcn_chartraj': _sequence_cfg(3, 182, num_classes=20),
    'smpconv_tcn_speech_mfcc': _sequence_cfg(20, 161),
    'smpconv_tcn_speech_raw': _sequence_cfg(1, 16000),
    'smpconv_resnet_cifar10': _cfg(
        input_size=(3, 32, 32), pool_size=(32, 32), crop_pct=1.0, interpolation='bilinear', first_conv='stem.small',
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),  # the authors normalise with ImageNet's
})


@register_model
def smpconv_tcn_smnist(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """Sequential MNIST (784 steps): 99.75% (paper table 2)."""
    model_args = dict(in_chans=1, kernel_size=784, radius=0.002)
    return _create(SMPConvTCN, 'smpconv_tcn_smnist', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_pmnist(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """Permuted MNIST (784 steps in a fixed random order): 99.10% (paper table 2)."""
    model_args = dict(in_chans=1, kernel_size=784, radius=0.002)
    return _create(SMPConvTCN, 'smpconv_tcn_pmnist', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_scifar10(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """Sequential CIFAR-10 (1024 steps of 3 channels): 84.86% (paper table 2)."""
    model_args = dict(in_chans=3, kernel_size=1024, radius=0.002, conv_bias=True)
    return _create(SMPConvTCN, 'smpconv_tcn_scifar10', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_chartraj(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """Character Trajectories (182 steps of 3 channels, 20 classes): 99.53% (paper table 3)."""
    model_args = dict(in_chans=3, num_classes=20, kernel_size=182, radius=0.012, conv_bias=True)
    return _create(SMPConvTCN, 'smpconv_tcn_chartraj', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_speech_mfcc(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """Speech Commands, 20 MFCCs x 161 frames: 97.71% (paper table 4)."""
    model_args = dict(in_chans=20, kernel_size=161, radius=0.012, conv_bias=True, dropout=0.2)
    return _create(SMPConvTCN, 'smpconv_tcn_speech_mfcc', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_speech_raw(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """Speech Commands, raw 16 kHz audio (16,000 steps): 94.95% (paper table 4)."""
    model_args = dict(in_chans=1, kernel_size=16000, radius=0.0002, dropout=0.1)
    return _create(SMPConvTCN, 'smpconv_tcn_speech_raw', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_resnet_cifar10(pretrained: bool = False, **kwargs) -> SMPConvResNet:
    """CIFAR-10 ResNet with 33 x 33 kernels: 93.00% (paper table 1)."""
    return _create(SMPConvResNet, 'smpconv_resnet_cifar10', pretrained, **kwargs)
