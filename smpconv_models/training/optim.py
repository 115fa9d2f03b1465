"""The paper's optimisation recipe on timm's optimizer, scheduler, mixup and loss factories."""
import fnmatch
from typing import Any, Dict, List, Optional

import torch.nn as nn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from ..smp import SMPKernel
from .settings import MixupSettings, OptimizerSettings, ScheduleSettings

__all__ = ['param_groups', 'create_optimizer', 'create_scheduler', 'create_mixup', 'create_loss']


def param_groups(model: nn.Module, weight_decay: float, radius_lr_scale: float) -> List[Dict[str, Any]]:
    """The recipe's parameter groups: weight decay on weights only, the SMP radii apart at a fraction of the
    learning rate.

    No decay for 1-D parameters, biases and what `model.no_weight_decay()` lists (point positions and
    radii); radii also get `radius_lr_scale` times the learning rate (timm's schedulers honour `lr_scale`).
    """
    no_decay_patterns = getattr(model, 'no_weight_decay', lambda: set())()
    radius_params = {id(m.radii) for m in model.modules() if isinstance(m, SMPKernel)}
    decay, no_decay, radii = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in radius_params:
            radii.append(param)
        elif param.ndim <= 1 or name.endswith('.bias') or any(fnmatch.fnmatch(name, p) for p in no_decay_patterns):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.)]
    if radii:
        groups.append(dict(params=radii, weight_decay=0., lr_scale=radius_lr_scale))
    return groups


def create_optimizer(model: nn.Module, settings: OptimizerSettings):
    groups = param_groups(model, settings.weight_decay, settings.radius_lr_scale)
    extra = dict(betas=settings.opt_betas) if settings.opt_betas else {}
    return create_optimizer_v2(groups, opt=settings.opt, lr=settings.lr, weight_decay=settings.weight_decay,
                               momentum=settings.momentum, eps=settings.opt_eps, **extra)


def create_scheduler(optimizer, schedule: ScheduleSettings, updates_per_epoch: int):
    """A schedule stepped per optimizer update (`step_update`), as the authors' is: over `schedule.epochs` in all,
    a linear warm-up, then the cosine over the updates after it (timm's `warmup_prefix`)."""
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=schedule.sched, num_epochs=schedule.epochs - schedule.warmup_epochs,
        warmup_epochs=schedule.warmup_epochs, warmup_lr=schedule.warmup_lr, min_lr=schedule.min_lr,
        cooldown_epochs=schedule.cooldown_epochs, warmup_prefix=True, step_on_epochs=False,
        updates_per_epoch=updates_per_epoch)
    return scheduler, num_epochs


def create_mixup(settings: MixupSettings, num_classes: int) -> Optional[Mixup]:
    if not settings.enabled:
        return None
    return Mixup(mixup_alpha=settings.mixup, cutmix_alpha=settings.cutmix, cutmix_minmax=settings.cutmix_minmax,
                 prob=settings.mixup_prob, switch_prob=settings.mixup_switch_prob, mode=settings.mixup_mode,
                 label_smoothing=settings.smoothing, num_classes=num_classes)


def create_loss(smoothing: float, mixup: Optional[Mixup]) -> nn.Module:
    """Soft-target cross entropy under mixup (which smooths the targets), else label smoothing."""
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if smoothing:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()
