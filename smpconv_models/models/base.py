"""What every SMPConv network shares: the timm model API around its SMP kernels, the pretrained-config
metadata of the paper, and the one table of the paper's accuracies (read by the Hub exports and hubconf.py)."""
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import get_device_dtype
from timm.models._features import feature_take_indices

from ..ops import torch_ops_only
from ..smp import SMPKernel, project_radii

__all__ = ['SMPConvModel', 'PAPER_RESULTS', 'paper_cfg']


class PaperResult(NamedTuple):
    """An accuracy the paper reports for a model: `accuracy` % on `benchmark`, in `source` (a table) where known."""
    accuracy: float
    benchmark: str
    source: str = ''

    def __str__(self) -> str:
        return f'{self.accuracy:g}% {self.benchmark}' + (f' ({self.source})' if self.source else '')


# The accuracy of every registered model the paper reports; the released ImageNet-1k weights are the EMA's
PAPER_RESULTS: Dict[str, PaperResult] = {
    'smpconv_t': PaperResult(82.5, 'ImageNet-1k top-1'),
    'smpconv_b': PaperResult(83.8, 'ImageNet-1k top-1'),
    'smpconv_mobile31': PaperResult(73.5, 'ImageNet-1k top-1', 'appendix B.1'),
    'smpconv_mobile51': PaperResult(73.7, 'ImageNet-1k top-1', 'appendix B.1'),
    'smpconv_tcn_smnist': PaperResult(99.75, 'sequential MNIST', 'table 2'),
    'smpconv_tcn_pmnist': PaperResult(99.10, 'permuted MNIST', 'table 2'),
    'smpconv_tcn_scifar10': PaperResult(84.86, 'sequential CIFAR-10', 'table 2'),
    'smpconv_tcn_chartraj': PaperResult(99.53, 'Character Trajectories', 'table 3'),
    'smpconv_tcn_speech_mfcc': PaperResult(97.71, 'Speech Commands (MFCC)', 'table 4'),
    'smpconv_tcn_speech_raw': PaperResult(94.95, 'Speech Commands (raw)', 'table 4'),
    'smpconv_resnet_cifar10': PaperResult(93.00, 'CIFAR-10', 'table 1'),
}


def paper_cfg(**kwargs) -> Dict[str, Any]:
    """A pretrained config with the paper's metadata (timm's `_cfg` fields for both model families)."""
    return {
        'url': '', 'classifier': 'head.fc',
        'license': 'mit', 'paper_ids': 'arXiv:2304.02330',
        'paper_name': 'SMPConv: Self-moving Point Representations for Continuous Convolution',
        'origin_url': 'https://github.com/sangnekim/SMPConv',
        **kwargs,
    }


class SMPConvModel(nn.Module):
    """The timm model API of an SMPConv network: a stem, a sequence of feature stages (the module that
    `stages_name` names), an optional final `norm` and a classifier `head` with a `reset()` and an `fc`."""

    stages_name = 'stages'
    input_axes = 'H, W'  # the axes of an input after its batch and channels, as an error names them

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # positions and radii are coordinates and extents, not magnitudes: decay would pull every point to the
        # centre and shrink its reach (the authors' optimizer groups leave them out too)
        return {'*.points.positions', '*.points.radii'}

    @torch.jit.ignore
    def set_kernel_scale(self, scale: float) -> None:
        """Sample every SMP kernel for inputs `scale` times larger (images) or longer (sequences), from the same
        points, keeping its value per unit of input; the parameters are unchanged."""
        layers = [m for m in self.modules() if isinstance(getattr(m, 'points', None), SMPKernel)]
        if not layers:
            raise ValueError('this model has no SMP kernels to re-sample (re-parameterised, or dense kernels): '
                             'set the scale before re-parameterising')
        for layer in layers:
            layer.set_kernel_scale(scale)

    @torch.jit.ignore
    def project_radii(self) -> None:
        """Clamp every SMP radius into its valid range; call after each optimizer step."""
        project_radii(self)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, in_features=self.num_features, **get_device_dtype(self))
        self.head_hidden_size = self.head.num_features

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Prune the stages (and the final norm and classifier) that the intermediates `indices` do not need."""
        stages = getattr(self, self.stages_name)
        take_indices, max_index = feature_take_indices(len(stages), indices)
        prune_end = max_index < len(stages) - 1
        if (prune_norm or prune_end) and 'norm' in self._modules:
            self.norm = nn.Identity()  # the final norm is sized for (and only applied to) the last stage
        setattr(self, self.stages_name, stages[:max_index + 1])
        if prune_end:
            self.num_features = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features that returns intermediates.

        Args:
            x: Input images (sequences [B, C, N] for a sequence model).
            indices: Take last n stages if int, all if None, select matching indices if sequence.
            norm: Apply the final norm to the last stage's output when it is taken.
            stop_early: Stop iterating over stages when last desired intermediate hit.
            output_fmt: Shape of intermediate feature outputs.
            intermediates_only: Only return intermediate features.

        Returns:
            List of intermediate features or tuple of (final features, intermediates).
        """
        assert output_fmt in ('NCHW',), 'Output shape must be NCHW (NCL for sequences).'
        intermediates = []
        stages = getattr(self, self.stages_name)
        take_indices, max_index = feature_take_indices(len(stages), indices)
        last_idx = len(stages) - 1

        x = self._forward_stem(x)
        if not torch.jit.is_scripting() and stop_early:  # can't slice stages in torchscript
            stages = stages[:max_index + 1]
        feat_idx = 0
        for feat_idx, stage in enumerate(stages):
            x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(self._final_norm(x) if norm and feat_idx == last_idx else x)

        if intermediates_only:
            return intermediates
        if feat_idx == last_idx:
            x = self._final_norm(x)
        return x, intermediates

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_scripting() or torch_ops_only()):
            self._check_input(x)
        return self.stem(x)

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        """A one-line error for an input of another rank or number of channels than the network takes."""
        if x.dim() != 2 + len(self.input_axes.split(', ')) or x.shape[1] != self.in_chans:
            raise ValueError(f'{type(self).__name__} takes inputs [B, {self.in_chans}, {self.input_axes}], got one of '
                             f'shape {tuple(x.shape)}')

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The norm after the last stage, where the network has one."""
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
