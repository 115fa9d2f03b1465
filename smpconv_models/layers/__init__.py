"""The layers of the two model families: `imagenet` (SMPConvNet's RepLKNet blocks, depthwise SMP kernels) and
`ckconv` (the sequence TCN's and CIFAR-10 ResNet's full SMP kernel convolutions and blocks)."""
from .ckconv import CKConv
from .continuous import SMPContinuousConv1d, SMPContinuousConv2d
from .imagenet import ConvFFNBlock, LargeKernelBlock, SMPConv2d, SMPLargeKernelConv

__all__ = ['SMPConv2d', 'SMPLargeKernelConv', 'LargeKernelBlock', 'ConvFFNBlock', 'CKConv', 'SMPContinuousConv1d', 'SMPContinuousConv2d']
