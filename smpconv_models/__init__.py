"""SMPConv models for timm: importing this package registers smpconv_t, smpconv_b, smpconv_mobile31 and
smpconv_mobile51 with `timm.create_model`."""
from .checkpoint import create_from_checkpoint, load_checkpoint, read_checkpoint
from .layers import ConvFFNBlock, LargeKernelBlock, SMPConv2d, SMPLargeKernelConv
from .ops import depthwise_conv2d
from .smp import SMPKernel, project_radii, smp_kernel
from .smpconv import SMPConvNet, checkpoint_filter_fn, from_official

__version__ = '0.1.0'

__all__ = [
    'ConvFFNBlock', 'LargeKernelBlock', 'SMPConv2d', 'SMPLargeKernelConv', 'depthwise_conv2d', 'SMPKernel',
    'project_radii', 'smp_kernel', 'SMPConvNet', 'checkpoint_filter_fn', 'from_official', 'load_checkpoint',
    'read_checkpoint', 'create_from_checkpoint',
]
