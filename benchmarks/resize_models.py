#!/usr/bin/env python3
"""Any input size, the trained map sizes (issue 18, models 2): held-out top-1 of models trained at 64 px, evaluated
at other input sizes, on the bundled Fashion-MNIST subset, on a CPU.

    python benchmarks/resize_models.py                # two quickstart trainings (~2 min each on 2 cores), then eval
    python benchmarks/resize_models.py --sizes 48 64 96 128 192 --output /tmp/resize-models.json

Trains smpconv_nano and smpconv_nano_cc with the quickstart recipe (configs/quickstart.yaml: 64 px, 20 epochs;
a finished run in --runs is kept), then evaluates their EMA weights on the 200 held-out images at each size:
smpconv_nano as it is (its maps follow the input) and with its kernels re-sampled by size / 64 (kernel_scale);
smpconv_nano_cc with dynamic_img_size, its stem resizing every image's map to the 64 px one. Prints a markdown
table of top-1 and writes the numbers with the machine's description to --output as JSON.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from timing import environment, report

ROOT = Path(__file__).resolve().parent.parent
TRAINED_SIZE = 64  # configs/quickstart.yaml's input size


def train(model: str, runs: Path) -> Path:
    """The quickstart run of `model` in `runs` (trained now unless its EMA weights are there)."""
    run_dir = runs / model
    if not (run_dir / 'model_ema.safetensors').is_file():
        subprocess.run([sys.executable, 'train_imagenet.py', '--model', model, '--experiment', model,
                        '--output', str(runs)], cwd=ROOT, check=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[48, 64, 96, 128, 192])
    parser.add_argument('--runs', default='/tmp/resize-models-runs', help='folder of the training runs')
    parser.add_argument('--output', default=None, help='also write the results as JSON')
    args = parser.parse_args()

    nano, cc = train('smpconv_nano', Path(args.runs)), train('smpconv_nano_cc', Path(args.runs))
    rows = {
        'smpconv_nano, as trained': (nano, lambda size: {}),
        'smpconv_nano, kernels re-sampled by size / 64': (nano, lambda size: {'kernel_scale': size / TRAINED_SIZE}),
        'smpconv_nano_cc, dynamic_img_size': (cc, lambda size: {'img_size': TRAINED_SIZE, 'dynamic_img_size': True}),
    }
    table = {name: {size: top1(run_dir, size, kwargs(size)) for size in args.sizes}
             for name, (run_dir, kwargs) in rows.items()}

    print('| model | ' + ' | '.join(f'{size} px' for size in args.sizes) + ' |')
    print('|---|' + '---|' * len(args.sizes))
    for name, accuracies in table.items():
        print(f'| {name} | ' + ' | '.join(f'{accuracies[size]:.1f}' for size in args.sizes) + ' |')
    report(dict(environment=environment(torch.device('cpu'), 'float32'), top1=table), args.output)


if __name__ == '__main__':
    main()
