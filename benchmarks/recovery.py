#!/usr/bin/env python3
"""What a recovery state costs a run: the seconds to write one, and how long the other processes wait for it.

    python benchmarks/recovery.py                          # smpconv_t and smpconv_b, 2 CPU processes (gloo)
    python benchmarks/recovery.py --output-dir /scratch    # on the file system a run writes to

Per model, 2 processes (gloo) each hold what a training process holds: the model, its EMA and AdamW's moments
(the recipe's optimizer, built from its config). Each repeat saves a recovery state as a run does
(`collect_training_state` on every process, `Checkpointer.save_recovery` on the main one: torch.save, fsync,
rename) and then meets the other process at a collective, as the next update's gradient all-reduce does. Printed:
the state's size, the main process's time to gather and write it, the other process's time from the same start
to the end of that collective (the stall it sees), medians of --repeats; and the cost per ImageNet epoch (the
recipe's 625 updates at a global batch of 2048) at the default --recovery-interval, with the state written at
the epoch's end (last.pth) included.
"""
import argparse
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from accelerate import Accelerator

import smpconv_models  # noqa: F401  registers the models
from smpconv_models.training import Checkpointer, Progress, create_optimizer, parse_args, resolve_training_config
from smpconv_models.training.checkpoint import collect_training_state
from smpconv_models.training.trainer import create_ema, create_training_model
from timing import environment, report
from timing import parse_args as parse_benchmark_args

ROOT = Path(__file__).resolve().parent.parent
MODELS = ('smpconv_t', 'smpconv_b')
WORLD_SIZE = 2
IMAGENET_TRAIN_IMAGES = 1_281_167


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _process(rank: int, model_name: str, output_dir: str, repeats: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD_SIZE))
    accelerator = Accelerator(cpu=True)
    config = resolve_training_config(vars(parse_args(['--config', str(ROOT / 'configs' / f'{model_name}_in1k.yaml')])),
                                     WORLD_SIZE)
    model = create_training_model(config.model, config.model_training, 1000, torch.device('cpu'), WORLD_SIZE)
    ema = create_ema(model, config.ema)
    optimizer = create_optimizer(model, config.optimizer)
    for p in model.parameters():  # one step allocates AdamW's moments
        p.grad = torch.zeros_like(p)
    optimizer.step()
    checkpointer = Checkpointer(Path(output_dir), 1, 'top1', model_name)
    written, waited = [], []
    for batch in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        state = collect_training_state(model, ema, optimizer, None, Progress(0, batch + 1, batch + 1),
                                       IMAGENET_TRAIN_IMAGES // config.batch.global_batch_size, config.recorded)
        if accelerator.is_main_process:
            checkpointer.save_recovery(0, batch + 1, state)
            written.append(time.perf_counter() - start)
        dist.all_reduce(torch.ones(1))  # the next update's gradient all-reduce
        waited.append(time.perf_counter() - start)
    if accelerator.is_main_process:
        results.update(write_s=statistics.median(written), main_total_s=statistics.median(waited),
                       bytes=next(Path(output_dir).glob('recovery-*.pth')).stat().st_size,
                       updates_per_epoch=IMAGENET_TRAIN_IMAGES // config.batch.global_batch_size,
                       recovery_interval=config.loop.recovery_interval)
    else:
        results.update(other_wait_s=statistics.median(waited))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=list(MODELS))
    parser.add_argument('--output-dir', default=None, help='where the states are written (default: a temporary folder)')
    parser.add_argument('--repeats', type=int, default=3)
    args = parse_benchmark_args(parser)
    rows = []
    print('| model | state (MB) | write, main process (s) | wait, other process (s) | states per epoch | s per epoch |')
    print('|---|---|---|---|---|---|')
    for model_name in args.models:
        with tempfile.TemporaryDirectory(dir=args.output_dir) as folder, mp.Manager() as manager:
            results = manager.dict()
            mp.spawn(_process, (model_name, folder, args.repeats, _free_port(), results), nprocs=WORLD_SIZE)
            row = dict(model=model_name, **results)
        interval, updates = row['recovery_interval'], row['updates_per_epoch']
        row['states_per_epoch'] = (updates // interval if interval else 0) + 1
        row['seconds_per_epoch'] = row['states_per_epoch'] * row['write_s']
        rows.append(row)
        print(f"| {model_name} | {row['bytes'] / 1e6:.0f} | {row['write_s']:.2f} | {row['other_wait_s']:.2f} | "
              f"{row['states_per_epoch']} | {row['seconds_per_epoch']:.1f} |", flush=True)
    report(dict(environment=environment(torch.device('cpu'), 'float32'), world_size=WORLD_SIZE, rows=rows),
           args.output)


if __name__ == '__main__':
    main()
