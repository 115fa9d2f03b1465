""" SMPConv ResNet for CIFAR-10, the authors'

Paper: `SMPConv: Self-moving Point Representations for Continuous Convolution` - https://arxiv.org/abs/2304.02330
(section 4.3). Original code: https://github.com/sangnekim/SMPConv, folder smp/ (MIT).

A stem and residual blocks at full resolution with 33 x 33 SMP kernels beside 3 x 3 ones, global average pooling.
Any image size runs. The authors' released checkpoints load with `from_official_ckconv`.
"""
from typing import Optional, Sequence

import torch.nn as nn
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..layers.ckconv import LargeSmallConv, ResNetBlock, act_layer_of, norm_layer_of
from .base import paper_cfg
from .ckconv_base import CKConvNet

__all__ = ['SMPConvResNet']


class SMPConvResNet(CKConvNet):
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
            kernel_scale: float = 1.,
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
            kernel_scale: Sample the SMP kernels for inputs this many times larger (`set_kernel_scale`).
            kernel_type: 'smp', or 'dense' for learned dense kernels of the same size, to compare with.
            norm: 'batchnorm' or 'layernorm' after every convolution.
            act: 'relu' or 'leaky_relu'.
            dropout: Dropout rate inside the blocks.
            global_pool: Global pooling type.
            drop_rate: Dropout rate before the classifier.
        """
        super().__init__(in_chans, num_classes, dropout, drop_rate)
        dd = {'device': device, 'dtype': dtype}
        conv_args = dict(kernel_size=kernel_size, small_kernel_size=small_kernel_size,
                         norm_layer=norm_layer_of(norm, 2), num_points=num_points, radius=radius,
                         position_std=position_std, bias=conv_bias, kernel_type=kernel_type, **dd)
        # relu(BN(SMP kernel convolution) + BN(small convolution, with a bias))
        self.stem = LargeSmallConv(in_chans, width, 2, small_bias=True, act_layer=act_layer_of(act), **conv_args)
        self._build_blocks(ResNetBlock, width, width, width_factors, depth,
                           dict(dropout=dropout, act_layer=act_layer_of(act), **conv_args))
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        if num_classes > 0:
            nn.init.kaiming_normal_(self.head.fc.weight)  # the authors' readout initialisation
            nn.init.zeros_(self.head.fc.bias)
        if kernel_scale != 1.:
            self.set_kernel_scale(kernel_scale)


# The authors' configuration (their smp/README.md command over cfg/config.yaml); the recipe is in configs/.
default_cfgs = generate_default_cfgs({
    'smpconv_resnet_cifar10': paper_cfg(
        num_classes=10, input_size=(3, 32, 32), pool_size=(32, 32), crop_pct=1.0, interpolation='bilinear',
        first_conv='stem.small', mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),  # ImageNet's, as theirs
})


@register_model
def smpconv_resnet_cifar10(pretrained: bool = False, **kwargs) -> SMPConvResNet:
    """The authors' CIFAR-10 ResNet with 33 x 33 kernels, 490K parameters."""
    return build_model_with_cfg(SMPConvResNet, 'smpconv_resnet_cifar10', pretrained,
                                feature_cfg=dict(flatten_sequential=True), **kwargs)
