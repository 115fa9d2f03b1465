#!/usr/bin/env python3
"""Train an SMPConv model with the paper's recipe, on one CPU, one GPU or many GPUs and nodes.

    python train_imagenet.py            # quickstart: a small SMPConv on the bundled Fashion-MNIST subset
    torchrun --nproc_per_node=8 train_imagenet.py --config configs/smpconv_t_in1k.yaml --data-dir /data/imagenet
    accelerate launch train_imagenet.py --config configs/smpconv_t_in1k.yaml --data-dir /data/imagenet

Any flag overrides the config file; `--help` lists them. A run writes its weights, training states, resolved
config and summary.csv to --output/--experiment; `--resume RUN_FOLDER` continues it where it stopped.
"""
import math
import sys
from datetime import datetime
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator, skip_first_batches
from accelerate.utils import gather_object, set_seed
from timm.data import resolve_data_config
from timm.utils import ModelEmaV3, update_summary

import smpconv_models  # noqa: F401  registers the SMPConv models
from smpconv_models.factory import create_model
from smpconv_models.ops import choices as depthwise_choices
from smpconv_models.training import (
    Checkpointer, ConfigError, Progress, create_datasets, create_eval_loader, create_loss, create_mixup,
    create_optimizer, create_scheduler, create_train_loader, evaluate, is_task, keep_freed_memory_for_reuse,
    latest_training_state, mixup_enabled, num_classes_of, parse_args, remove_leftovers, resolve_batch_size,
    resolved_config, restore_training_state, rng_state, scaled_lr, set_epoch, sync_batchnorm, train_one_epoch)

DEFAULT_CONFIG = Path(__file__).resolve().parent / 'configs' / 'quickstart.yaml'


def train(args) -> dict:
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('--device cuda, but no GPU is available')
    # accelerate forms a multi-process CPU group (gloo) only when told to use the CPU
    accelerator = Accelerator(
        cpu=args.device == 'cpu' or not torch.cuda.is_available(),
        mixed_precision={'bfloat16': 'bf16', 'float16': 'fp16'}[args.amp_dtype] if args.amp else 'no')
    if accelerator.device.type == 'cpu':
        keep_freed_memory_for_reuse()
    world_size, rank = accelerator.num_processes, accelerator.process_index
    resolve_batch_size(args, world_size, mixup=mixup_enabled(args))
    args.lr = scaled_lr(args)  # recorded in config.yaml as the rate the run used
    set_seed(args.seed, device_specific=True)  # seeds differ per process: drop path and mixup draw per process
    resume_path, resume_state = latest_training_state(args.resume) if args.resume else (None, None)

    train_set, val_set = create_datasets(args)
    num_classes = args.num_classes or num_classes_of(train_set)
    if not num_classes:
        raise ConfigError(f'--num-classes is needed: the dataset {args.dataset or args.data_dir} does not say')
    model_kwargs = dict(args.model_kwargs)
    if args.drop_path is not None:
        model_kwargs['drop_path_rate'] = args.drop_path
    try:
        model = create_model(args.model, pretrained=args.pretrained, num_classes=num_classes, drop_rate=args.drop,
                             **model_kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    data_config = None if is_task(args.dataset) else resolve_data_config(vars(args), model=model)
    if args.grad_checkpointing:
        model.set_grad_checkpointing()
    if world_size > 1 and args.sync_bn:
        model = sync_batchnorm(model, accelerator.device)
    model.to(accelerator.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup) if args.model_ema else None
    optimizer = create_optimizer(model, args)
    train_loader = create_train_loader(train_set, data_config, args, world_size, rank, accelerator.device)
    val_loader = create_eval_loader(val_set, data_config, args.validation_batch_size or args.batch_size, args,
                                    world_size, rank, accelerator.device)
    batches_per_epoch = len(train_loader)
    if batches_per_epoch == 0:
        raise ConfigError(f'{len(train_set)} training samples make no batch of {args.batch_size} per process')
    scheduler, num_epochs = create_scheduler(optimizer, args, math.ceil(batches_per_epoch / args.grad_accum_steps))
    mixup = create_mixup(args, num_classes)
    loss_fn = create_loss(args, mixup)

    run_dir = Path(args.output) / (args.experiment or datetime.now().strftime(f'%Y%m%d-%H%M%S-{args.model}'))
    if resume_path is not None and not args.experiment:
        run_dir = resume_path.parent  # continue the run in its own folder
    checkpointer = Checkpointer(run_dir, args.checkpoint_hist, args.eval_metric, args.model, args.model_kwargs)
    progress = Progress()
    if resume_state is not None:
        progress = restore_training_state(resume_state, model, optimizer, ema, accelerator.scaler, checkpointer, args,
                                          rank, world_size)
        scheduler.step_update(num_updates=progress.num_updates)
        accelerator.print(f'resuming from {resume_path}: epoch {progress.epoch}, {progress.batches_done} of '
                          f'{batches_per_epoch} batches done, {progress.num_updates} updates')

    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)

    def training_state() -> dict:
        """Everything --resume needs; called on every process (it gathers their random states)."""
        return dict(
            model_name=args.model, model=unwrapped.state_dict(), model_ema=ema.module.state_dict() if ema else None,
            optimizer=optimizer.state_dict(),
            scaler=accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            epoch=progress.epoch, batches_done=progress.batches_done, num_updates=progress.num_updates,
            rng=gather_object([rng_state()]), depthwise_backends=gather_object([depthwise_choices()]),
            config=resolved_config(args))

    def save_recovery() -> None:
        state = training_state()
        if accelerator.is_main_process:
            checkpointer.save_recovery(progress.epoch, progress.batches_done, state)

    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(run_dir)
        (run_dir / 'config.yaml').write_text(yaml.safe_dump(resolved_config(args), sort_keys=False))
        accelerator.print(
            f'{args.model} ({sum(p.numel() for p in unwrapped.parameters()) / 1e6:.2f}M params, {num_classes} '
            f'classes) on {len(train_set)} training images, {world_size} process(es) x batch {args.batch_size} x '
            f'{args.grad_accum_steps} accumulation, {num_epochs} epochs on {accelerator.device}; writing {run_dir}')

    results = {}
    for epoch in range(progress.epoch, num_epochs):
        progress.epoch = epoch
        set_epoch(train_loader, epoch)
        loader = skip_first_batches(train_loader, progress.batches_done) if progress.batches_done else train_loader
        if mixup is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            mixup.mixup_enabled = False
        train_metrics = train_one_epoch(
            model, loader, batches_per_epoch, optimizer, scheduler, loss_fn, accelerator, progress, args,
            ema=ema, mixup=mixup, on_recovery=save_recovery)
        if progress.batches_done == batches_per_epoch:
            progress.epoch, progress.batches_done = epoch + 1, 0
        results = evaluate(unwrapped, val_loader, accelerator, args.channels_last)
        if ema is not None:
            results.update({f'ema_{k}': v for k, v in evaluate(
                ema.module, val_loader, accelerator, args.channels_last, desc='eval EMA').items()})
        state = training_state()
        if accelerator.is_main_process:
            metric = results[f'ema_{args.eval_metric}' if ema is not None else args.eval_metric]
            checkpointer.save_epoch(epoch, state, state['model'], state['model_ema'], metric)
            update_summary(epoch, train_metrics, results, run_dir / 'summary.csv',
                           lr=optimizer.param_groups[0]['lr'])
            accelerator.print(f'epoch {epoch}: train loss {train_metrics["loss"]:.4f}, '
                              + ', '.join(f'{k} {v:.3f}' for k, v in results.items()))
        if args.max_updates is not None and progress.num_updates >= args.max_updates:
            break

    if accelerator.is_main_process and results:
        ema_note = f' (EMA {results["ema_top1"]:.2f}%)' if 'ema_top1' in results else ''
        best_metric, best_epoch = checkpointer.best[0]
        accelerator.print(f'top-1 on the {len(val_set)} held-out images: {results["top1"]:.2f}%{ema_note}; best '
                          f'{"EMA " if ema else ""}{args.eval_metric} {best_metric:.3f} at epoch {best_epoch}; '
                          f'weights and summary.csv in {run_dir}')
    accelerator.end_training()
    return results


def main(argv=None) -> int:
    try:
        train(parse_args(argv, default_config=DEFAULT_CONFIG))
    except (ConfigError, OSError) as e:  # OSError: a missing file, the Hub out of reach
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
