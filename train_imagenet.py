#!/usr/bin/env python3
"""Train an SMPConv model with the paper's recipe, on one CPU, one GPU or many GPUs and nodes.

    python train_imagenet.py            # quickstart: a small SMPConv on the bundled Fashion-MNIST subset
    torchrun --nproc_per_node=8 train_imagenet.py --config configs/smpconv_t_in1k.yaml --data-dir /data/imagenet
    accelerate launch train_imagenet.py --config configs/smpconv_t_in1k.yaml --data-dir /data/imagenet

Any flag overrides the config file; `--help` lists them. A run writes its weights, training states, resolved
config and summary.csv to --output/--experiment; `--resume RUN_FOLDER` continues it where it stopped.
"""
import sys
from pathlib import Path
from typing import Any, Dict, Mapping

from accelerate.utils import set_seed

import smpconv_models  # noqa: F401  registers the SMPConv models
from smpconv_models.training import (ConfigError, Trainer, create_accelerator, create_trainer, latest_training_state,
                                     parse_args, resolve_device, resolve_training_config)

DEFAULT_CONFIG = Path(__file__).resolve().parent / 'configs' / 'quickstart.yaml'


def train(flags: Mapping[str, Any]) -> Dict[str, float]:
    """Train with the flag values `flags`; the last epoch's evaluation."""
    accelerator = create_accelerator(resolve_device(flags))
    config = resolve_training_config(flags, accelerator.num_processes)
    set_seed(config.data.seed, device_specific=True)  # seeds differ per process: drop path and mixup draw per process
    resume = latest_training_state(config.run.resume) if config.run.resume else None
    trainer = create_trainer(config, accelerator, resume)
    trainer.start()
    accelerator.print(
        f'{config.model.model} ({sum(p.numel() for p in trainer.unwrapped.parameters()) / 1e6:.2f}M params, '
        f'{trainer.num_classes} classes) on {trainer.train_images} training images, {accelerator.num_processes} '
        f'process(es) x batch {config.batch.batch_size} x {config.loop.grad_accum_steps} accumulation, '
        f'{trainer.num_epochs} epochs on {accelerator.device}; writing {trainer.run_dir}')
    results = {}
    for epoch in range(trainer.progress.epoch, trainer.num_epochs):
        train_metrics = trainer.train_epoch(epoch)
        results = trainer.evaluate()
        trainer.save_epoch(epoch, train_metrics, results)
        accelerator.print(f'epoch {epoch}: train loss {train_metrics["loss"]:.4f}, '
                          + ', '.join(f'{k} {v:.3f}' for k, v in results.items()))
        if trainer.stopped:
            break
    if results and accelerator.is_main_process:  # the best checkpoints are ranked on the main process
        report(trainer, results)
    accelerator.end_training()
    return results


def report(trainer: Trainer, results: Dict[str, float]) -> None:
    """The last evaluation and the best checkpoint's."""
    ema_note = f' (EMA {results["ema_top1"]:.2f}%)' if 'ema_top1' in results else ''
    best_metric, best_epoch = trainer.checkpointer.best[0]
    best = f'{"EMA " if trainer.ema is not None else ""}{trainer.config.run.eval_metric} {best_metric:.3f}'
    trainer.accelerator.print(
        f'top-1 on the {trainer.val_images} held-out images: {results["top1"]:.2f}%{ema_note}; best {best} at '
        f'epoch {best_epoch}; weights and summary.csv in {trainer.run_dir}')


def main(argv=None) -> int:
    try:
        train(vars(parse_args(argv, default_config=DEFAULT_CONFIG)))
    except (ConfigError, OSError) as e:  # OSError: a missing file, the Hub out of reach
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
