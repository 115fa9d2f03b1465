"""SMPConv models for timm: importing this package registers the ImageNet models (smpconv_t, smpconv_b,
smpconv_mobile31, smpconv_mobile51, smpconv_nano) and the authors' sequence and CIFAR-10 models (smpconv_tcn_*,
smpconv_resnet_cifar10) with `timm.create_model`."""
from .checkpoint import load_checkpoint, read_checkpoint
from .factory import create_from_checkpoint, from_official, from_official_ckconv
from .layers import (CKConv, ConvFFNBlock, LargeKernelBlock, SMPContinuousConv1d, SMPContinuousConv2d, SMPConv2d,
                     SMPLargeKernelConv)
from .layers.continuous_blocks import ContinuousConvNormAct
from .models import SMPConvNet, SMPConvResNet, SMPConvTCN, checkpoint_filter_fn
from .ops import causal_conv1d, conv2d_same, depthwise_conv2d
from .smp import SMPKernel, project_radii, smp_kernel

__version__ = '0.1.0'

__all__ = [
    'ConvFFNBlock', 'LargeKernelBlock', 'SMPConv2d', 'SMPLargeKernelConv', 'depthwise_conv2d', 'SMPKernel',
    'project_radii', 'smp_kernel', 'SMPConvNet', 'checkpoint_filter_fn', 'from_official', 'load_checkpoint',
    'read_checkpoint', 'create_from_checkpoint', 'CKConv', 'SMPConvTCN', 'SMPConvResNet', 'from_official_ckconv',
    'causal_conv1d', 'conv2d_same', 'SMPContinuousConv2d', 'SMPContinuousConv1d', 'ContinuousConvNormAct',
]
