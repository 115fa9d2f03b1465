#!/usr/bin/env python3
"""Train an SMPConv model with the paper's recipe, on one CPU, one GPU or many GPUs and nodes.

    python train_imagenet.py            # quickstart: a small SMPConv on the bundled Fashion-MNIST subset
    torchrun --nproc_per_node=8 train_imagenet.py --config configs/smpconv_t_in1k.yaml --data-dir /data/imagenet
    accelerate launch train_imagenet.py --config configs/smpconv_t_in1k.yaml --data-dir /data/imagenet

Any flag overrides the config file; `--help` lists them. A run writes its weights, training states, resolved
config and summary.csv to --output/--experiment; `--resume RUN_FOLDER` continues it where it stopped, and
`--resume auto` continues the run of --experiment if it has begun (a relaunched command, on a requeue or a
restart), or starts it. SIGTERM or SIGUSR1 (a scheduler's preemption) stops a run after its update, with a training
state to continue from, and exit status 143 or 138.
"""
import signal
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, NoReturn

from accelerate.utils import set_seed

import smpconv_models  # noqa: F401  registers the SMPConv models
from smpconv_models.training import (RESUME_AUTO, ConfigError, Preempted, PreemptionSignals, Trainer,
                                     create_accelerator, create_trainer, exit_status, parse_args, resolve_device,
                                     resolve_training_config, resume_training_state, saved_batch)

DEFAULT_CONFIG = Path(__file__).resolve().parent / 'configs' / 'quickstart.yaml'


def train(flags: Mapping[str, Any]) -> Dict[str, float]:
    """Train with the flag values `flags`; the last epoch's evaluation. A preemption signal stops it after an
    update with a training state to continue from (`Preempted`)."""
    accelerator = create_accelerator(resolve_device(flags))
    resume = resume_training_state(flags['resume'], flags['output'], flags['experiment'])
    config = resolve_training_config(flags, accelerator.num_processes, saved_batch(resume[1]) if resume else None)
    set_seed(config.data.seed, device_specific=True)  # seeds differ per process: drop path and mixup draw per process
    trainer = create_trainer(config, accelerator, resume)
    if resume is None and flags['resume'] == RESUME_AUTO:
        accelerator.print(f'--resume auto: no training state in {trainer.run_dir}, starting the run')
    trainer.start()
    accelerator.print(
        f'{config.model.model} ({sum(p.numel() for p in trainer.unwrapped.parameters()) / 1e6:.2f}M params, '
        f'{trainer.num_classes} classes) on {trainer.train_images} training images, {accelerator.num_processes} '
        f'process(es) x batch {config.batch.batch_size} x {config.loop.grad_accum_steps} accumulation, '
        f'{trainer.num_epochs} epochs on {accelerator.device}; writing {trainer.run_dir}')
    results = {}
    with PreemptionSignals(accelerator) as preemption:
        for epoch in range(trainer.progress.epoch, trainer.num_epochs):
            train_metrics = trainer.train_epoch(epoch, stop_requested=preemption.requested)
            signum = preemption.requested()
            if signum is not None and trainer.mid_epoch:
                trainer.save_recovery()
                stop(trainer, signum)
            results = trainer.evaluate()
            trainer.save_epoch(epoch, train_metrics, results)
            accelerator.print(f'epoch {epoch}: train loss {train_metrics["loss"]:.4f}, '
                              + ', '.join(f'{k} {v:.3f}' for k, v in results.items()))
            signum = preemption.requested()
            if signum is not None:
                stop(trainer, signum)
            if trainer.stopped:
                break
    if results and accelerator.is_main_process:  # the best checkpoints are ranked on the main process
        report(trainer, results)
    accelerator.end_training()
    return results


def stop(trainer: Trainer, signum: int) -> NoReturn:
    """End a preempted run once its training state is on disk (every process waits for the main one's write)."""
    trainer.accelerator.wait_for_everyone()
    progress = trainer.progress
    trainer.accelerator.print(
        f'stopped by {signal.Signals(signum).name} after update {progress.num_updates} (epoch {progress.epoch}, '
        f'{progress.batches_done} of {trainer.batches_per_epoch} batches): its training state is in '
        f'{trainer.run_dir}; the same command with --resume auto continues it', flush=True)
    trainer.accelerator.end_training()
    raise Preempted(signum)


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
    except Preempted as e:  # the status of a process the signal ended: schedulers requeue or restart it
        return exit_status(e.signum)
    return 0


if __name__ == '__main__':
    sys.exit(main())
