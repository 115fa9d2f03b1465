#!/usr/bin/env python3
"""An ablation in the shape of the paper's table 6, on the bundled Fashion-MNIST subset, on a CPU.

    python benchmarks/ablation.py                   # 5 variants x 5 seeds x 10 epochs: about 15 min on 2 cores
    python benchmarks/ablation.py --epochs 20 --seeds 0 1 2

Every variant trains the quickstart recipe (configs/quickstart.yaml: smpconv_nano, its kernel sizes, its
optimiser and augmentation) for the same epochs with the same seeds, and differs only in its large kernels:
learned positions and radii (SMPConv), fixed positions, fixed radii, both fixed, or a dense learned kernel of
the same size (RepLKNet). Prints a markdown table of held-out top-1 (mean and standard deviation over seeds,
the model and its EMA) and writes every run's numbers to --output as JSON. Run again after an interruption, it
keeps the finished runs and resumes the one that stopped.
"""
import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    'moving points, learned radii (SMPConv)': {},
    'fixed positions': {'learn_positions': False},
    'fixed radii': {'learn_radii': False},
    'fixed positions and radii': {'learn_positions': False, 'learn_radii': False},
    'dense kernel, same size (RepLKNet)': {'kernel_type': 'dense'},
}


def run(variant: dict, seed: int, epochs: int, out_dir: Path, name: str) -> dict:
    """Train one variant with one seed (or finish its interrupted run); its last epoch's held-out metrics."""
    run_dir = out_dir / name
    if len(epoch_rows(run_dir)) < epochs:
        base = yaml.safe_load((ROOT / 'configs' / 'quickstart.yaml').read_text())['model_kwargs']
        kwargs = [f'{k}={v!r}' for k, v in {**base, **variant}.items()]
        resume = ['--resume', str(run_dir)] if (run_dir / 'last.pth').is_file() else []
        training = subprocess.run([sys.executable, str(ROOT / 'train_imagenet.py'), '--epochs', str(epochs),
                                   '--seed', str(seed), '--output', str(out_dir), '--experiment', name, *resume,
                                   '--model-kwargs', *kwargs], capture_output=True, text=True)
        if training.returncode:
            raise SystemExit(f'training {name} failed:\n{training.stderr[-4000:]}')
    last = epoch_rows(run_dir)[epochs - 1]
    return {'top1': float(last['eval_top1']), 'ema_top1': float(last['eval_ema_top1'])}


def epoch_rows(run_dir: Path) -> list:
    """The per-epoch rows a run has written so far."""
    summary = run_dir / 'summary.csv'
    if not summary.is_file():
        return []
    with open(summary) as f:
        return list(csv.DictReader(f))


def mean_std(values) -> str:
    return f'{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}' if len(values) > 1 else f'{values[0]:.1f}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    parser.add_argument('--runs', type=Path, default=Path('output/ablation'), help='where the runs are written')
    parser.add_argument('--output', type=Path, default=Path('output/ablation/results.json'))
    args = parser.parse_args()

    results = {}
    for label, variant in VARIANTS.items():
        results[label] = []
        for seed in args.seeds:
            name = f"{'-'.join(f'{k}={v}' for k, v in variant.items()) or 'smpconv'}-seed{seed}"
            results[label].append(run(variant, seed, args.epochs, args.runs, name))
            print(f'{label}, seed {seed}: {results[label][-1]}', file=sys.stderr, flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(dict(epochs=args.epochs, seeds=args.seeds, results=results), indent=2))

    print(f'smpconv_nano on the Fashion-MNIST subset, {args.epochs} epochs, seeds {args.seeds}: held-out top-1 (%)')
    print('| large kernel | top-1 | EMA top-1 |\n|---|---|---|')
    for label, runs in results.items():
        print(f"| {label} | {mean_std([r['top1'] for r in runs])} | {mean_std([r['ema_top1'] for r in runs])} |")


if __name__ == '__main__':
    main()
