#!/usr/bin/env python3
"""Any input size, the trained map sizes, and a gradual architecture (issue 18, models 2 and 3): models trained at
64 px on the bundled Fashion-MNIST subset, on a CPU.

    python benchmarks/resize_models.py                  # the quickstart trainings (~2-4 min each on 2 cores), eval
    python benchmarks/resize_models.py --sizes 48 64 96 128 192 --output /tmp/resize-models.json
    python benchmarks/resize_models.py --gradual        # smpconv_nano_gradual beside smpconv_nano(_cc), timed

Trains each model of RUNS with the quickstart recipe (configs/quickstart.yaml: 64 px, 20 epochs; a finished run
in --runs is kept), then evaluates the EMA weights on the 200 held-out images at each size: smpconv_nano as it is
(its maps follow the input) and with its kernels re-sampled by size / 64 (kernel_scale); the continuous models
with dynamic_img_size, every image's maps resized to the 64 px ones (a run records the size it was trained at).
Prints a markdown table of top-1 and writes the numbers with the machine's description to --output as JSON.

--gradual prints instead, for smpconv_nano, smpconv_nano_cc and smpconv_nano_gradual: held-out top-1 at 64 px,
parameters, MACs of a 64 px image, and the seconds of a training step (batch 64) and of an inference batch (200
images), timed side by side, interleaved, in one process.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import timm
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import smpconv_models  # noqa: F401  registers the models
from timing import environment, median_seconds, report

ROOT = Path(__file__).resolve().parent.parent
TRAINED_SIZE = 64  # configs/quickstart.yaml's input size
QUICKSTART_BATCH = 64  # its global batch

# kernel sizes for the 64 px maps (the quickstart's for smpconv_nano: 2H - 1 taps for a map of H pixels)
NANO_KERNELS = '(31, 15, 7, 3)'
GRADUAL_KERNELS = '(31, 21, 15, 9, 7, 3, 3)'  # maps 16, 11, 8, 5, 4, 2, 2

# run name: model and the training flags beside the quickstart's
RUNS: Dict[str, Tuple[str, List[str]]] = {
    'smpconv_nano': ('smpconv_nano', []),
    'smpconv_nano_cc': ('smpconv_nano_cc', []),
    'smpconv_nano_cc_scale_aug': ('smpconv_nano_cc', [
        '--model-kwargs', f'kernel_sizes={NANO_KERNELS}', 'dynamic_img_size=True',
        '--scale-augmentation', '0.75', '3']),
    'smpconv_nano_ci': ('smpconv_nano_ci', []),
    'smpconv_nano_ci_scale_aug': ('smpconv_nano_ci', [
        '--model-kwargs', f'kernel_sizes={NANO_KERNELS}', 'dynamic_img_size=True',
        '--scale-augmentation', '0.75', '3']),
    'smpconv_nano_gradual': ('smpconv_nano_gradual', ['--model-kwargs', f'kernel_sizes={GRADUAL_KERNELS}']),
}

DYNAMIC = {'dynamic_img_size': True}

# table row: run, the evaluated model's arguments for a size
ROWS: Dict[str, Tuple[str, Callable[[int], dict]]] = {
    'smpconv_nano, as trained': ('smpconv_nano', lambda size: {}),
    'smpconv_nano, kernels re-sampled by size / 64': (
        'smpconv_nano', lambda size: {'kernel_scale': size / TRAINED_SIZE}),
    'smpconv_nano_cc, dynamic_img_size': ('smpconv_nano_cc', lambda size: DYNAMIC),
    'smpconv_nano_cc, dynamic_img_size, scale augmentation 0.75-3': (
        'smpconv_nano_cc_scale_aug', lambda size: {}),
    'smpconv_nano_ci, dynamic_img_size': ('smpconv_nano_ci', lambda size: DYNAMIC),
    'smpconv_nano_ci, dynamic_img_size, scale augmentation 0.75-3': (
        'smpconv_nano_ci_scale_aug', lambda size: {}),
}

GRADUAL_RUNS = ('smpconv_nano', 'smpconv_nano_cc', 'smpconv_nano_gradual')


def train(run: str, runs: Path) -> Path:
    """The quickstart run `run` in `runs` (trained now unless its EMA weights are there)."""
    run_dir = runs / run
    if not (run_dir / 'model_ema.safetensors').is_file():
        model, flags = RUNS[run]
        subprocess.run([sys.executable, 'train_imagenet.py', '--model', model, '--experiment', run,
                        '--output', str(runs), *flags], cwd=ROOT, check=True)
    return run_dir


def top1(run_dir: Path, size: int, model_kwargs: dict) -> float:
    """Held-out top-1 (%) of the run's EMA weights on images resized to `size` x `size`."""
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / 'results.json'
        kwargs = [f'{k}={v!r}' for k, v in model_kwargs.items()]
        subprocess.run([sys.executable, 'validate.py', '--config', str(run_dir / 'config.yaml'),
                        '--checkpoint', str(run_dir / 'model_ema.safetensors'), '--input-size', '3', str(size),
                        str(size), '--results-file', str(results), *(['--model-kwargs', *kwargs] if kwargs else [])],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return json.loads(results.read_text())['top1']


def print_table(header: List[str], rows: Dict[str, List[str]]) -> None:
    print('| ' + ' | '.join(header) + ' |')
    print('|---|' + '---|' * (len(header) - 1))
    for name, cells in rows.items():
        print(f'| {name} | ' + ' | '.join(cells) + ' |')


def sizes_table(runs: Path, sizes: List[int]) -> dict:
    """Top-1 of every row of ROWS at every size."""
    table = {name: {size: top1(train(run, runs), size, kwargs(size)) for size in sizes}
             for name, (run, kwargs) in ROWS.items()}
    print_table(['model', *(f'{size} px' for size in sizes)],
                {name: [f'{accuracies[size]:.1f}' for size in sizes] for name, accuracies in table.items()})
    return table


def recorded_model(run_dir: Path) -> nn.Module:
    """The run's model as its EMA weights record it (architecture and arguments)."""
    return smpconv_models.create_from_checkpoint(run_dir / 'model_ema.safetensors')


def macs(model: nn.Module, size: int) -> int:
    """Multiply-accumulates of one image of `size` x `size` (torch.utils.flop_counter, 2 FLOPs per MAC): every
    counted operator, the convolutions, the classifier and the SMP kernels' generation."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    return counter.get_total_flops() // 2


def step_seconds(model: nn.Module, batch: int) -> Callable[[], None]:
    """A training step (forward, backward, optimizer update) on a batch of `batch` 64 px images."""
    x, y = torch.randn(batch, 3, TRAINED_SIZE, TRAINED_SIZE), torch.randint(0, 10, (batch,))
    optimizer = torch.optim.AdamW(model.parameters())

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step


def inference_seconds(model: nn.Module, batch: int) -> Callable[[], None]:
    x = torch.randn(batch, 3, TRAINED_SIZE, TRAINED_SIZE)

    def infer() -> None:
        with torch.no_grad():
            model.eval()(x)
    return infer


def gradual_table(runs: Path) -> dict:
    """Top-1, parameters, MACs and times of GRADUAL_RUNS; the times measured interleaved, in one process."""
    run_dirs = {run: train(run, runs) for run in GRADUAL_RUNS}
    table = {run: dict(top1=top1(run_dir, TRAINED_SIZE, {})) for run, run_dir in run_dirs.items()}
    models = {run: recorded_model(run_dir) for run, run_dir in run_dirs.items()}
    steps = {run: step_seconds(model, QUICKSTART_BATCH) for run, model in models.items()}
    inferences = {run: inference_seconds(model, 200) for run, model in models.items()}
    for run, model in models.items():
        table[run].update(params=sum(p.numel() for p in model.parameters()), macs=macs(model, TRAINED_SIZE))
    for _ in range(3):  # interleaved rounds: a slower moment of the machine falls on every model alike
        for run in GRADUAL_RUNS:
            table[run].setdefault('step_s', []).append(median_seconds(steps[run], torch.device('cpu')))
            table[run].setdefault('inference_s', []).append(median_seconds(inferences[run], torch.device('cpu')))
    for row in table.values():
        row['step_s'], row['inference_s'] = min(row['step_s']), min(row['inference_s'])
    batches = 1000 // QUICKSTART_BATCH  # an epoch of the bundled 1,000 training images
    print_table(['model', 'top-1 (64 px)', 'params (M)', 'MACs (M)', 'training epoch (s)',
                 'inference, 200 images (s)'],
                {run: [f"{row['top1']:.1f}", f"{row['params'] / 1e6:.2f}", f"{row['macs'] / 1e6:.1f}",
                       f"{row['step_s'] * batches:.1f}", f"{row['inference_s']:.2f}"] for run, row in table.items()})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[48, 64, 96, 128, 192])
    parser.add_argument('--gradual', action='store_true', help='the gradual architecture beside smpconv_nano(_cc)')
    parser.add_argument('--runs', default='/tmp/resize-models-runs', help='folder of the training runs')
    parser.add_argument('--output', default=None, help='also write the results as JSON')
    args = parser.parse_args()
    runs = Path(args.runs)
    results = dict(gradual=gradual_table(runs)) if args.gradual else dict(top1=sizes_table(runs, args.sizes))
    report(dict(environment=environment(torch.device('cpu'), 'float32'), **results), args.output)


if __name__ == '__main__':
    main()
