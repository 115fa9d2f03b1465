"""What distributed training needs beyond accelerate: batch norm synchronised on any device, RNG states."""
import random
from typing import Any, Dict

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from timm.layers import BatchNormAct2d, convert_sync_batchnorm
from torch.distributed import _functional_collectives as functional_collectives

__all__ = ['CrossProcessBatchNorm2d', 'sync_batchnorm', 'rng_state', 'set_rng_state']


def _sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """All-reduce sum that autograd differentiates (its gradient is the all-reduced gradient). Functional
    collectives are what torch.distributed.nn.functional's deprecation points to."""
    return functional_collectives.all_reduce(tensor, 'sum', dist.group.WORLD)


class CrossProcessBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d (optionally with timm's fused drop and activation) normalising with the statistics of the
    whole distributed batch, on any device: torch's SyncBatchNorm runs on GPUs only.

    The statistics are two all-reduced passes (mean, then the centred sum of squares) in at least float32,
    as precise as a single process's batch norm over the same samples.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            x = self._normalize_across_processes(x)
        else:
            x = super().forward(x)
        if hasattr(self, 'drop'):
            x = self.drop(x)
        if hasattr(self, 'act'):
            x = self.act(x)
        return x

    def _normalize_across_processes(self, x: torch.Tensor) -> torch.Tensor:
        values = x.to(torch.promote_types(x.dtype, torch.float32))
        dims = (0, 2, 3)
        local = torch.cat([values.sum(dims), values.new_tensor([x.numel() // x.shape[1]])])
        sums = _sum_over_processes(local)
        count = sums[-1]
        mean = sums[:-1] / count
        centred = values - mean[None, :, None, None]
        var = _sum_over_processes(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1. / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


def _to_cross_process(module: nn.Module) -> nn.Module:
    """The same batch norm (and its fused drop and activation) as a CrossProcessBatchNorm2d."""
    out = CrossProcessBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats, device=module.running_mean.device,
                                  dtype=module.running_mean.dtype)
    out.load_state_dict(module.state_dict())
    if isinstance(module, BatchNormAct2d):
        out.drop, out.act = module.drop, module.act
    return out.train(module.training)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norms that share statistics across processes: timm's SyncBatchNorm on GPUs (it keeps the
    activations fused into timm's norm layers), CrossProcessBatchNorm2d elsewhere."""
    if device.type == 'cuda':
        return convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, _to_cross_process(child))
        else:
            sync_batchnorm(child, device)
    return model


def rng_state() -> Dict[str, Any]:
    """This process's random states, in types that torch.load(weights_only=True) reads back."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=(kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state['python'])
    kind, keys, position, has_gauss, cached_gaussian = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
