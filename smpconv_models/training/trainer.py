"""A training run, set up from its configuration: its model, optimisation, data and files, run epoch by epoch."""
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import yaml
from accelerate import Accelerator, skip_first_batches
from timm.data import Mixup
from timm.utils import ModelEmaV3, update_summary
from torch.utils.data import DataLoader

from ..factory import create_model
from .checkpoint import (Checkpointer, collect_training_state, epoch_batches, remove_leftovers,
                         restore_training_state, saved_world_size)
from .config import ConfigError
from .data import (RandomBatchScale, create_batch_scale, create_datasets, create_eval_loader, create_train_loader,
                   num_classes_of, resolve_image_config, set_epoch)
from .distributed import sync_batchnorm
from .engine import Progress, evaluate, train_one_epoch
from .optim import create_loss, create_mixup, create_optimizer, create_scheduler
from .settings import EmaSettings, ModelSettings, ModelTrainingSettings, RunSettings, TrainingConfig

__all__ = ['Trainer', 'create_trainer']


@dataclass
class Trainer:
    """A run that is set up: what its epochs work with, and where it stands (`progress`)."""
    config: TrainingConfig
    accelerator: Accelerator
    model: nn.Module  # as accelerate prepared it (wrapped when distributed, compiled with --torchcompile)
    unwrapped: nn.Module  # the model itself, which is evaluated and saved
    ema: Optional[ModelEmaV3]
    optimizer: Any
    scheduler: Any
    mixup: Optional[Mixup]
    batch_scale: Optional[RandomBatchScale]
    loss_fn: nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    batches_per_epoch: int
    num_epochs: int
    num_classes: int
    train_images: int
    val_images: int
    checkpointer: Checkpointer
    progress: Progress
    data_notes: Tuple[str, ...] = ()  # what the data's preparation imputed, padded or truncated

    @property
    def run_dir(self) -> Path:
        return self.checkpointer.run_dir

    @property
    def stopped(self) -> bool:
        """Whether the run made its --max-updates."""
        max_updates = self.config.loop.max_updates
        return max_updates is not None and self.progress.num_updates >= max_updates

    def start(self) -> None:
        """Prepare the run folder and write the run's config.yaml (on the main process)."""
        if not self.accelerator.is_main_process:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.run_dir)
        notes = ''.join(f'# data: {note}\n' for note in self.data_notes)
        (self.run_dir / 'config.yaml').write_text(notes + yaml.safe_dump(dict(self.config.recorded), sort_keys=False))
        for note in self.data_notes:
            print(f'data: {note}')

    @property
    def mid_epoch(self) -> bool:
        """Whether the run stands within an epoch (stopped by --max-updates or a preemption)."""
        return self.progress.batches_done > 0

    def train_epoch(self, epoch: int, stop_requested: Optional[Callable[[], object]] = None) -> Dict[str, float]:
        """Train `epoch` from where the run stands (to its end, to --max-updates, or to the update after which
        `stop_requested()` answers true); its mean training loss."""
        progress, config = self.progress, self.config
        progress.epoch = epoch
        set_epoch(self.train_loader, epoch)
        loader = self.train_loader
        if progress.batches_done:
            loader = skip_first_batches(loader, progress.batches_done)
        if self.mixup is not None and config.mixup.mixup_off_epoch and epoch >= config.mixup.mixup_off_epoch:
            self.mixup.mixup_enabled = False
        metrics = train_one_epoch(
            self.model, loader, self.batches_per_epoch, self.optimizer, self.scheduler, self.loss_fn,
            self.accelerator, progress, config.loop, config.model.channels_last, ema=self.ema, mixup=self.mixup,
            on_recovery=self.save_recovery, batch_scale=self.batch_scale, stop_requested=stop_requested)
        if progress.batches_done == self.batches_per_epoch:
            progress.epoch, progress.batches_done = epoch + 1, 0
        return metrics

    def evaluate(self) -> Dict[str, float]:
        """Loss, top-1 and top-5 of the model, and of its EMA (`ema_` names) when there is one."""
        channels_last = self.config.model.channels_last
        results = evaluate(self.unwrapped, self.val_loader, self.accelerator, channels_last)
        if self.ema is not None:
            results.update({f'ema_{k}': v for k, v in evaluate(
                self.ema.module, self.val_loader, self.accelerator, channels_last, desc='eval EMA').items()})
        return results

    def training_state(self) -> Dict[str, Any]:
        """Everything --resume needs; called on every process (it gathers their random states)."""
        return collect_training_state(self.unwrapped, self.ema, self.optimizer, self.accelerator.scaler,
                                      self.progress, self.batches_per_epoch, self.config.recorded)

    def save_recovery(self) -> None:
        state = self.training_state()
        if self.accelerator.is_main_process:
            self.checkpointer.save_recovery(self.progress.epoch, self.progress.batches_done, state)

    def save_epoch(self, epoch: int, train_metrics: Dict[str, float], results: Dict[str, float]) -> None:
        """The epoch's weights, training state and summary.csv row; the evaluation ranks its checkpoint."""
        state = self.training_state()
        if not self.accelerator.is_main_process:
            return
        eval_metric = self.config.run.eval_metric
        metric = results[f'ema_{eval_metric}' if self.ema is not None else eval_metric]
        self.checkpointer.save_epoch(epoch, state, state['model'], state['model_ema'], metric)
        update_summary(epoch, train_metrics, results, self.run_dir / 'summary.csv',
                       lr=self.optimizer.param_groups[0]['lr'])


def create_training_model(model: ModelSettings, training: ModelTrainingSettings, num_classes: int,
                          device: torch.device, world_size: int) -> nn.Module:
    """The model a run trains, on `device`, its batch norms synchronised across processes if asked."""
    model_kwargs = dict(model.model_kwargs)
    if training.drop_path is not None:
        model_kwargs['drop_path_rate'] = training.drop_path
    try:
        network = create_model(model.model, pretrained=model.pretrained, num_classes=num_classes,
                               drop_rate=training.drop, **model_kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if training.grad_checkpointing:
        network.set_grad_checkpointing()
    if world_size > 1 and training.sync_bn:
        network = sync_batchnorm(network, device)
    network.to(device)
    if model.channels_last:
        network.to(memory_format=torch.channels_last)
    return network


def create_ema(model: nn.Module, ema: EmaSettings) -> Optional[ModelEmaV3]:
    return ModelEmaV3(model, decay=ema.model_ema_decay, use_warmup=ema.model_ema_warmup) if ema.model_ema else None


def run_folder(run: RunSettings, model_name: str, resume_path: Optional[Path]) -> Path:
    """--output/--experiment; unnamed, the folder of the state a run resumes, else a new date-time-model one."""
    if run.experiment or resume_path is None:
        return Path(run.output) / (run.experiment or datetime.now().strftime(f'%Y%m%d-%H%M%S-{model_name}'))
    return resume_path.parent


def _elastic_note(saved_world: int, world_size: int, config: TrainingConfig, progress: Progress) -> str:
    """What the resume line says of a run continued on another number of processes."""
    if saved_world == world_size:
        return ''
    batch = config.batch
    samples = progress.batches_done * batch.batch_size * world_size
    return (f'; saved on {saved_world} process(es), continued on {world_size}: {config.loop.grad_accum_steps} '
            f'accumulation step(s) of {batch.batch_size} per process keep the global batch of '
            f'{batch.global_batch_size} and the updates per epoch, the epoch goes on after its {samples} samples '
            f'seen, with fresh random states (drop path, mixup) and sums in another order: not bit for bit the run '
            f'on {saved_world}')


def create_trainer(config: TrainingConfig, accelerator: Accelerator,
                   resume: Optional[Tuple[Path, Dict[str, Any]]] = None) -> Trainer:
    """The run of `config` on `accelerator`, from its start or from the training state `resume` (path, state)."""
    world_size, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    batch = config.batch
    train_set, val_set = create_datasets(config.data, config.splits, batch.batch_size, config.augment.input_dropout)
    num_classes = config.model.num_classes or num_classes_of(train_set)
    if not num_classes:
        raise ConfigError(f'--num-classes is needed: the dataset {config.data.dataset or config.data.data_dir} '
                          'does not say')
    model = create_training_model(config.model, config.model_training, num_classes, device, world_size)
    data_config = resolve_image_config(config.data, model)
    ema = create_ema(model, config.ema)
    optimizer = create_optimizer(model, config.optimizer)
    train_loader = create_train_loader(train_set, data_config, config.augment, batch.batch_size, config.data,
                                       world_size, rank, device)
    val_loader = create_eval_loader(val_set, data_config, batch.validation_batch_size, config.data, world_size,
                                    rank, device)
    resume_path, resume_state = resume or (None, None)
    batches_per_epoch = len(train_loader)
    saved_epoch = None if resume_state is None else epoch_batches(resume_state, world_size)
    if saved_epoch is not None:  # on another number of processes, the run's epochs, update for update
        batches_per_epoch = min(batches_per_epoch, saved_epoch)
    if batches_per_epoch == 0:
        raise ConfigError(f'{len(train_set)} training samples make no batch of {batch.batch_size} per process')
    scheduler, num_epochs = create_scheduler(optimizer, config.schedule,
                                             math.ceil(batches_per_epoch / config.loop.grad_accum_steps))
    mixup = create_mixup(config.mixup, num_classes)

    checkpointer = Checkpointer(run_folder(config.run, config.model.model, resume_path), config.run.checkpoint_hist,
                                config.run.eval_metric, config.model.model, config.model.model_kwargs,
                                getattr(train_set, 'classes', None))
    progress = Progress()
    if resume_state is not None:
        progress = restore_training_state(resume_state, model, optimizer, ema, accelerator.scaler, checkpointer,
                                          config.recorded, rank, world_size)
        scheduler.step_update(num_updates=progress.num_updates)
        accelerator.print(f'resuming from {resume_path}: epoch {progress.epoch}, {progress.batches_done} of '
                          f'{batches_per_epoch} batches done, {progress.num_updates} updates'
                          + _elastic_note(saved_world_size(resume_state), world_size, config, progress))
    if config.model.torchcompile:
        model = torch.compile(model, backend=config.model.torchcompile)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    return Trainer(
        config, accelerator, prepared, accelerator.unwrap_model(prepared, keep_torch_compile=False), ema, optimizer,
        scheduler, mixup, create_batch_scale(config.augment, config.data), create_loss(config.mixup.smoothing, mixup),
        train_loader, val_loader, batches_per_epoch, num_epochs, num_classes, len(train_set), len(val_set),
        checkpointer, progress, tuple(dict.fromkeys(getattr(train_set, 'notes', ()) + getattr(val_set, 'notes', ()))))
