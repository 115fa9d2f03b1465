"""Several trained models as one classifier: the mean of their class probabilities (as InceptionTime ensembles
its networks)."""
import math
from typing import Sequence

import torch
import torch.nn as nn

__all__ = ['Ensemble']


class Ensemble(nn.Module):
    """Averages the class probabilities of `members`; returns their log (logits of the mean, whose softmax is the
    mean probability and whose cross-entropy is the ensemble's)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError('an ensemble needs at least one model')
        classes = {m.num_classes for m in members}
        if len(classes) != 1:
            raise ValueError(f'the members of an ensemble classify into the same classes; they have '
                             f'{sorted(classes)} classes')
        self.members = nn.ModuleList(members)
        self.num_classes = members[0].num_classes
        self.pretrained_cfg = members[0].pretrained_cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([m(x).float().log_softmax(-1) for m in self.members])
        return log_probs.logsumexp(0) - math.log(len(self.members))
