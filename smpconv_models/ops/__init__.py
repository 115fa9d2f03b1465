"""Large-kernel depthwise convolution, and full convolutions with long kernels."""
from .conv import causal_conv1d, conv2d_same, conv_taps
from .depthwise import ENV_VAR, depthwise_conv2d, useful_window
from .dispatch import choices, clear_choices, recording_graph, restore_choices, torch_ops_only, use_backend

__all__ = ['depthwise_conv2d', 'causal_conv1d', 'conv2d_same', 'conv_taps', 'recording_graph', 'torch_ops_only',
           'useful_window', 'use_backend', 'choices', 'restore_choices', 'clear_choices', 'ENV_VAR']
