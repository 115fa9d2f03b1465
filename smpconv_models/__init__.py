"""SMPConv models for timm."""
from .ops import depthwise_conv2d
from .smp import SMPKernel, project_radii, smp_kernel

__version__ = '0.1.0'

__all__ = ['depthwise_conv2d', 'SMPKernel', 'project_radii', 'smp_kernel']
