"""The SMPConv networks, registered with timm on import: `smpconvnet` (ImageNet: smpconv_nano, _t, _b,
_mobile31, _mobile51), `tcn` (the authors' sequence models, smpconv_tcn_*) and `resnet_cifar`
(smpconv_resnet_cifar10); `base` holds what they share and the paper's accuracies."""
from .base import PAPER_RESULTS
from .resnet_cifar import SMPConvResNet
from .smpconvnet import SMPConvNet, checkpoint_filter_fn
from .tcn import SMPConvTCN

__all__ = ['SMPConvNet', 'SMPConvTCN', 'SMPConvResNet', 'checkpoint_filter_fn', 'PAPER_RESULTS']
