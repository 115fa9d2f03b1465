"""Large-kernel depthwise convolution."""
from .depthwise import depthwise_conv2d

__all__ = ['depthwise_conv2d']
