"""The paper's optimisation recipe on timm's optimizer, scheduler, mixup and loss factories."""
import fnmatch
import math
from typing import Any, Dict, List, Optional

import torch.nn as nn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from ..smp import SMPKernel
from .config import ConfigError

__all__ = ['param_groups', 'create_optimizer', 'create_scheduler', 'mixup_enabled', 'create_mixup', 'create_loss',
           'scaled_lr']


def param_groups(model: nn.Module, weight_decay: float, radius_lr_scale: float) -> List[Dict[str, Any]]:
    """SPEC section 3: weight decay on weights only, radii apart at a fraction of the learning rate.

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


def scaled_lr(args) -> float:
    """`--lr`, or `--lr-base` scaled from `--lr-base-size` to the global batch."""
    if args.lr is not None:
        return args.lr
    ratio = args.global_batch_size / args.lr_base_size
    return args.lr_base * (math.sqrt(ratio) if args.lr_base_scale == 'sqrt' else ratio)


def create_optimizer(model: nn.Module, args):
    groups = param_groups(model, args.weight_decay, args.radius_lr_scale)
    extra = dict(betas=tuple(args.opt_betas)) if args.opt_betas else {}
    return create_optimizer_v2(groups, opt=args.opt, lr=scaled_lr(args), weight_decay=args.weight_decay,
                               momentum=args.momentum, eps=args.opt_eps, **extra)


def create_scheduler(optimizer, args, updates_per_epoch: int):
    """A schedule stepped per optimizer update (`step_update`), as the authors' is: over `args.epochs` in all,
    a linear warm-up, then the cosine over the updates after it (timm's `warmup_prefix`)."""
    if not 0 <= args.warmup_epochs < args.epochs:
        raise ConfigError(f'--warmup-epochs ({args.warmup_epochs}) must be shorter than --epochs ({args.epochs})')
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs - args.warmup_epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, cooldown_epochs=args.cooldown_epochs, warmup_prefix=True,
        step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    return scheduler, num_epochs


def mixup_enabled(args) -> bool:
    return args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None


def create_mixup(args, num_classes: int) -> Optional[Mixup]:
    if not mixup_enabled(args):
        return None
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                 prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                 label_smoothing=args.smoothing, num_classes=num_classes)


def create_loss(args, mixup: Optional[Mixup]) -> nn.Module:
    """Soft-target cross entropy under mixup (which smooths the targets), else label smoothing."""
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if args.smoothing:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return nn.CrossEntropyLoss()
