"""One training epoch and one evaluation, on any number of processes through accelerate."""
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm import tqdm

from ..smp import project_radii
from .settings import LoopSettings

__all__ = ['Progress', 'first_batch_statistics', 'train_one_epoch', 'evaluate']


@dataclass
class Progress:
    """Where a run stands: `batches_done` batches of `epoch` are done, after `num_updates` optimizer updates."""
    epoch: int = 0
    batches_done: int = 0
    num_updates: int = 0


@contextmanager
def first_batch_statistics(model: nn.Module) -> Iterator[None]:
    """Batch norms that have seen no batch yet take the statistics of the next one as their running statistics,
    instead of mixing them into PyTorch's placeholders (mean 0, variance 1).

    At the authors' initialisation (weights of std 0.02) the variances before a batch norm are 1e-3 to 1e-2:
    with momentum 0.1 the placeholder 1 still dominates the running variance after 45 updates (0.9^45 = 0.009),
    and a short run evaluates as if untrained (one class for every image). Statistics of later batches are
    averaged in as usual; a pretrained model's running statistics are left alone."""
    fresh = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and int(m.num_batches_tracked) == 0]
    momenta = [m.momentum for m in fresh]
    for m in fresh:
        m.momentum = 1.
    try:
        yield
    finally:
        for m, momentum in zip(fresh, momenta):
            m.momentum = momentum


def train_one_epoch(
        model: nn.Module,
        loader,
        batches_per_epoch: int,
        optimizer,
        scheduler,
        loss_fn: nn.Module,
        accelerator: Accelerator,
        progress: Progress,
        loop: LoopSettings,
        channels_last: bool = False,
        ema=None,
        mixup=None,
        on_recovery: Optional[Callable[[], None]] = None,
        batch_scale: Optional[Callable[[torch.Tensor, int, int], torch.Tensor]] = None,
        stop_requested: Optional[Callable[[], object]] = None,
) -> Dict[str, float]:
    """Train from `progress.batches_done` to the end of the epoch (or `loop.max_updates`), updating `progress`.

    `batch_scale(x, epoch, index)` resizes each batch (scale augmentation, see `RandomBatchScale`).

    After every optimizer update: the radius projection, the per-update learning rate schedule and the
    EMA update; every `loop.recovery_interval` updates, `on_recovery()` (which saves a training state); then
    `stop_requested()`, on every process, whose true answer ends the epoch there (a preemption).
    Returns the epoch's mean training loss over all processes.
    """
    model.train()
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    accum = loop.grad_accum_steps
    loss_sum = torch.zeros((), device=accelerator.device)
    num_losses = 0
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, total=batches_per_epoch, initial=progress.batches_done, desc=f'epoch {progress.epoch}',
               disable=not accelerator.is_main_process, dynamic_ncols=True)
    for x, y in bar:
        if progress.batches_done >= batches_per_epoch:  # an iterable dataset can run a batch long
            break
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        if mixup is not None:
            x, y = mixup(x, y)
        if batch_scale is not None:
            x = batch_scale(x, progress.epoch, progress.batches_done)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # the update closes each group of `accum` batches, or the shorter group that ends the epoch
        group_start = progress.batches_done // accum * accum
        group_size = min(accum, batches_per_epoch - group_start)
        is_update = progress.batches_done + 1 == group_start + group_size
        first_batch = progress.num_updates == 0 and progress.batches_done == 0
        with nullcontext() if is_update else accelerator.no_sync(model), \
                first_batch_statistics(model) if first_batch else nullcontext():
            loss = loss_fn(model(x), y)
            accelerator.backward(loss / group_size)
        loss_sum += loss.detach()
        num_losses += 1
        progress.batches_done += 1
        if not is_update:
            continue

        if loop.clip_grad is not None:
            if loop.clip_mode == 'norm':
                accelerator.clip_grad_norm_(model.parameters(), loop.clip_grad)
            else:
                accelerator.clip_grad_value_(model.parameters(), loop.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        project_radii(unwrapped)
        progress.num_updates += 1
        scheduler.step_update(num_updates=progress.num_updates)
        if ema is not None:
            ema.update(unwrapped, step=progress.num_updates)
        if progress.num_updates % loop.log_interval == 0:
            bar.set_postfix(loss=f'{loss.item():.4f}', lr=f'{optimizer.param_groups[0]["lr"]:.2e}')
        if on_recovery is not None and loop.recovery_interval and progress.num_updates % loop.recovery_interval == 0:
            on_recovery()
        if loop.max_updates is not None and progress.num_updates >= loop.max_updates:
            break
        if stop_requested is not None and stop_requested():
            break
    bar.close()
    totals = accelerator.reduce(torch.stack([loss_sum, loss_sum.new_tensor(num_losses)]), 'sum')
    return {'loss': (totals[0] / totals[1]).item() if totals[1] > 0 else math.nan}


@torch.no_grad()
def evaluate(model: nn.Module, loader, accelerator: Accelerator, channels_last: bool = False,
             desc: str = 'eval', num_classes: Optional[int] = None) -> Dict[str, Any]:
    """Loss, top-1 and top-5 (%) over the whole validation set, summed exactly over all processes; with
    `num_classes`, also the top-1 of each class ('class_top1') and its number of samples ('class_count')."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # loss, top-1, top-5, count
    per_class = torch.zeros(2, num_classes or 0, dtype=torch.float64, device=accelerator.device)  # correct, count
    for x, y in tqdm(loader, desc=desc, disable=not accelerator.is_main_process, leave=False, dynamic_ncols=True):
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            logits = model(x)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct = top.eq(y[:, None])
        totals += torch.stack([
            F.cross_entropy(logits.float(), y, reduction='sum').double(),
            correct[:, :1].sum().double(), correct.sum().double(), y.new_tensor(len(y)).double()])
        if num_classes:
            per_class[0].index_add_(0, y, correct[:, 0].double())
            per_class[1].index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
    totals = accelerator.reduce(totals, 'sum')
    count = totals[3].item()
    results: Dict[str, Any] = {'loss': totals[0].item() / count, 'top1': 100 * totals[1].item() / count,
                               'top5': 100 * totals[2].item() / count}
    if num_classes:
        correct_per_class, count_per_class = accelerator.reduce(per_class, 'sum').tolist()
        results['class_top1'] = [100 * c / n if n else math.nan for c, n in zip(correct_per_class, count_per_class)]
        results['class_count'] = [int(n) for n in count_per_class]
    return results
