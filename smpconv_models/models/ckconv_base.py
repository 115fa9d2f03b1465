"""What the authors' sequence TCN and CIFAR-10 ResNet share: a stem, then residual blocks of parallel SMP and
small kernels at full resolution, and the timm model API around them."""
from typing import Any, Dict, Optional, Sequence, Type

import torch
import torch.nn as nn
from timm.models import checkpoint_seq

from .base import SMPConvModel

__all__ = ['CKConvNet']


class CKConvNet(SMPConvModel):
    """A stem and a sequence of residual `blocks`; the subclass builds them and its `head`."""

    stages_name = 'blocks'

    def __init__(self, in_chans: int, num_classes: int, dropout: float, drop_rate: float):
        super().__init__()
        for name, rate in (('dropout', dropout), ('drop_rate', drop_rate)):
            if not 0. <= rate < 1.:
                raise ValueError(f'{name} takes a probability in [0, 1), got {rate!r}')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

    def _build_blocks(
            self,
            block: Type[nn.Module],
            in_chs: int,
            width: int,
            width_factors: Optional[Sequence[float]],
            depth: int,
            block_args: Dict[str, Any],
    ) -> None:
        """`depth` blocks, the i-th `width * width_factors[i]` wide (all `width` by default)."""
        factors = [1.] * depth if width_factors is None else list(width_factors)
        if len(factors) != depth:
            raise ValueError(f'width_factors needs one factor per block ({depth}), got {len(factors)}: {factors}')
        blocks = []
        self.feature_info = []
        for i, factor in enumerate(factors):
            out_chs = int(width * factor)
            blocks.append(block(in_chs, out_chs, **block_args))
            in_chs = out_chs
            self.feature_info.append(dict(num_chs=out_chs, reduction=1, module=f'blocks.{i}'))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = self.head_hidden_size = in_chs

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^blocks\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._forward_stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)
