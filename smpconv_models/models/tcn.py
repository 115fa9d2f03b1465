""" SMPConv TCN: the authors' sequence classifier

Paper: `SMPConv: Self-moving Point Representations for Continuous Convolution` - https://arxiv.org/abs/2304.02330
(section 4.2). Original code: https://github.com/sangnekim/SMPConv, folder smp/ (MIT).

Residual blocks of causal convolutions whose SMP kernels are as long as the sequence, beside short causal kernels;
the last step of the last block is classified (sMNIST, pMNIST, sCIFAR10, Character Trajectories, Speech
Commands). Any sequence length runs. The authors' released checkpoints load with `from_official_ckconv`.
"""
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..layers.ckconv import TCNBlock, act_layer_of, norm_layer_of
from .base import paper_cfg
from .ckconv_base import CKConvNet

__all__ = ['SMPConvTCN', 'tap_spacings']

# smpconv_tcn_tsc's initial points, in tap spacings. The authors' fixed lengths in the kernel's domain (position
# std 0.1, radius about a tap) scatter them as spikes over the newest tenth of any kernel (distances from the newest
# step half-normal of scale 43 taps on a 427-step series); points that start together at the newest step, one
# compact kernel a few taps wide, and move from there classify far better (benchmarks/RESULTS.md, Time-series
# classification).
TSC_RADIUS_TAPS = 3.
TSC_SPREAD_TAPS = 1.  # the scale of the points' half-normal distances from the newest step


SEQUENCE_POOLS = ('last', 'avg')


class SequenceHead(nn.Module):
    """The classifier of a sequence [B, C, N]: of its last step ('last', the authors') or of the mean over its
    steps ('avg', as time-series classifiers pool: every step is heard, whatever the reach of the kernels)."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = 'last', drop_rate: float = 0.,
                 device=None, dtype=None):
        super().__init__()
        self.in_features = self.num_features = in_features
        self.pool_type = self._checked(pool_type)
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._fc(num_classes, device, dtype)

    @staticmethod
    def _checked(pool_type: str) -> str:
        if pool_type not in SEQUENCE_POOLS:
            raise ValueError(f"a sequence is pooled by one of {', '.join(SEQUENCE_POOLS)}, got {pool_type!r}")
        return pool_type

    def _fc(self, num_classes: int, device, dtype) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        fc = nn.Linear(self.in_features, num_classes, device=device, dtype=dtype)
        nn.init.normal_(fc.weight, std=.01)  # the authors' readout initialisation
        nn.init.zeros_(fc.bias)
        return fc

    def reset(self, num_classes: int, pool_type: Optional[str] = None, in_features: Optional[int] = None,
              device=None, dtype=None) -> None:
        """A new classifier for `num_classes` (0 for none), and pooling `pool_type` where given."""
        if in_features is not None:
            self.in_features = self.num_features = in_features
        if pool_type is not None:
            self.pool_type = self._checked(pool_type)
        self.fc = self._fc(num_classes, device, dtype)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x[:, :, -1] if self.pool_type == 'last' else x.mean(-1))
        return x if pre_logits else self.fc(x)


class SMPConvTCN(CKConvNet):
    """The authors' TCN for sequence classification, with SMP kernels as long as the sequence."""

    input_axes = 'N'

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
            kernel_scale: float = 1.,
            kernel_type: str = 'smp',
            norm: str = 'batchnorm',
            act: str = 'relu',
            dropout: float = 0.,
            drop_rate: float = 0.,
            global_pool: str = 'last',
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
            kernel_scale: Sample the SMP kernels for inputs this many times longer (`set_kernel_scale`).
            kernel_type: 'smp', or 'dense' for learned dense kernels of the same size, to compare with.
            norm: 'batchnorm' or 'layernorm' after every convolution.
            act: 'relu' or 'leaky_relu'.
            dropout: Dropout rate inside the blocks.
            drop_rate: Dropout rate before the classifier.
            global_pool: What the classifier sees: the last step ('last', the authors'), or the mean over the
                steps ('avg').
        """
        super().__init__(in_chans, num_classes, dropout, drop_rate)
        dd = {'device': device, 'dtype': dtype}
        self.stem = nn.Identity()  # the first block takes the input channels
        ck_args = dict(num_points=num_points, radius=radius, position_std=position_std, bias=conv_bias,
                       kernel_type=kernel_type, **dd)
        block_args = dict(kernel_size=kernel_size, small_kernel_size=small_kernel_size,
                          norm_layer=norm_layer_of(norm, 1), dropout=dropout, act_layer=act_layer_of(act), **ck_args)
        self._build_blocks(TCNBlock, in_chans, width, width_factors, depth, block_args)
        self.head = SequenceHead(self.num_features, num_classes, global_pool, drop_rate, **dd)
        if kernel_scale != 1.:
            self.set_kernel_scale(kernel_scale)


def _create(variant: str, pretrained: bool = False, **kwargs) -> SMPConvTCN:
    return build_model_with_cfg(SMPConvTCN, variant, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs)


def _cfg(channels: int, length: int, **kwargs) -> Dict[str, Any]:
    """timm's input_size describes images: a sequence model's input is in its description."""
    return paper_cfg(**{'num_classes': 10, 'input_size': None,
                        'description': f'sequences [B, {channels}, {length}] (any length runs)', **kwargs})


# The authors' configurations (their smp/README.md commands over cfg/config.yaml); the recipes are in configs/.
default_cfgs = generate_default_cfgs({
    'smpconv_tcn_smnist': _cfg(1, 784),
    'smpconv_tcn_pmnist': _cfg(1, 784),
    'smpconv_tcn_scifar10': _cfg(3, 1024),
    'smpconv_tcn_chartraj': _cfg(3, 182, num_classes=20),
    'smpconv_tcn_speech_mfcc': _cfg(20, 161),
    'smpconv_tcn_speech_raw': _cfg(1, 16000),
    'smpconv_tcn_tsc': _cfg(1, 128, num_classes=2, origin_url='', paper_ids='', paper_name=''),
})


def tap_spacings(kernel_size: int, taps: float) -> float:
    """The length of `taps` tap spacings in the kernel domain [-1, 1] of a kernel of `kernel_size` taps."""
    return taps * 2 / max(kernel_size - 1, 1)


@register_model
def smpconv_tcn_smnist(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """The authors' TCN for sequential MNIST (784 steps), 371K parameters."""
    model_args = dict(in_chans=1, kernel_size=784, radius=0.002)
    return _create('smpconv_tcn_smnist', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_pmnist(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """The authors' TCN for permuted MNIST (784 steps in a fixed random order), 371K parameters."""
    model_args = dict(in_chans=1, kernel_size=784, radius=0.002)
    return _create('smpconv_tcn_pmnist', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_scifar10(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """The authors' TCN for sequential CIFAR-10 (1024 steps of 3 channels), 373K parameters."""
    model_args = dict(in_chans=3, kernel_size=1024, radius=0.002, conv_bias=True)
    return _create('smpconv_tcn_scifar10', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_chartraj(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """The authors' TCN for Character Trajectories (182 steps of 3 channels, 20 classes), 374K parameters."""
    model_args = dict(in_chans=3, num_classes=20, kernel_size=182, radius=0.012, conv_bias=True)
    return _create('smpconv_tcn_chartraj', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_speech_mfcc(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """The authors' TCN for Speech Commands, 20 MFCCs x 161 frames, 392K parameters."""
    model_args = dict(in_chans=20, kernel_size=161, radius=0.012, conv_bias=True, dropout=0.2)
    return _create('smpconv_tcn_speech_mfcc', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_speech_raw(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """The authors' TCN for Speech Commands, raw 16 kHz audio (16,000 steps), 371K parameters."""
    model_args = dict(in_chans=1, kernel_size=16000, radius=0.0002, dropout=0.1)
    return _create('smpconv_tcn_speech_raw', pretrained, **dict(model_args, **kwargs))


@register_model
def smpconv_tcn_tsc(pretrained: bool = False, **kwargs) -> SMPConvTCN:
    """A TCN for time-series classification on your own data (configs/tcn_ucr.yaml sizes it to the data): kernels
    as long as the series whose points start as a compact kernel of the same taps at any length, the mean over
    the steps classified."""
    kernel_size = kwargs.get('kernel_size', 128)
    model_args = dict(in_chans=1, num_classes=2, kernel_size=kernel_size, conv_bias=True, global_pool='avg',
                      radius=tap_spacings(kernel_size, TSC_RADIUS_TAPS),
                      # SMPKernel puts causal points 2|z| from the newest step, z ~ N(0, position_std)
                      position_std=tap_spacings(kernel_size, TSC_SPREAD_TAPS) / 2)
    return _create('smpconv_tcn_tsc', pretrained, **dict(model_args, **kwargs))
