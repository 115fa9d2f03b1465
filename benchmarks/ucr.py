#!/usr/bin/env python3
"""Time-series classification as a user runs it: configs/tcn_ucr.yaml on datasets of the UCR/UEA archive.

    python benchmarks/ucr.py --data-dir ../shared/data/ucr_dev                       # every dataset in the folder
    python benchmarks/ucr.py --data-dir /data/Univariate_ts --datasets GunPoint Coffee --seeds 0 1 2 3 4

Per dataset and seed: `train_imagenet.py --config configs/tcn_ucr.yaml --dataset ts/NAME` (the best epoch chosen
on the validation split carved from the training file), then `validate.py --split test` on the standard test file;
then the ensemble of the seeds' models (the mean of their class probabilities). Printed: a markdown table of the
test accuracies beside InceptionTime's where known, and the CPU time (user + system, all processes) and wall time
of each dataset's training runs. Runs go to --output (kept: their summary.csv and config.yaml say what was done).
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from timing import environment, report

ROOT = Path(__file__).resolve().parent.parent
# InceptionTime on the standard split (Ismail Fawaz et al. 2020, published result files), where known
INCEPTION_TIME = {'GunPoint': 1.000, 'ItalyPowerDemand': 0.966, 'OSULeaf': 0.921}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args, log: Path) -> None:
    with open(log, 'w') as f:
        result = subprocess.run([sys.executable, *map(str, args)], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(f'{" ".join(map(str, args[:1]))} failed (exit {result.returncode}); see {log}')


def test_accuracy(run_dirs, output: Path, name: str) -> float:
    """Test top-1 (a fraction) of the best weights of `run_dirs` (their ensemble when several)."""
    results = output / f'{name}.json'
    _run(['validate.py', '--config', run_dirs[0] / 'config.yaml', '--split', 'test', '--workers', '0',
          '--results-file', results, '--checkpoint', *[d / 'model_best.safetensors' for d in run_dirs]],
         output / f'{name}.log')
    return json.loads(results.read_text())['top1'] / 100


def benchmark(data_dir: Path, dataset: str, seeds, output: Path, extra) -> dict:
    run_dirs, cpu, wall = [], 0., 0.
    for seed in seeds:
        experiment = f'{dataset}-seed{seed}'
        start_cpu, start = _cpu_seconds(), time.perf_counter()
        _run(['train_imagenet.py', '--config', ROOT / 'configs' / 'tcn_ucr.yaml', '--dataset', f'ts/{dataset}',
              '--data-dir', data_dir, '--seed', seed, '--output', output, '--experiment', experiment,
              '--workers', '0', *extra], output / f'{experiment}.log')
        cpu += _cpu_seconds() - start_cpu
        wall += time.perf_counter() - start
        run_dirs.append(output / experiment)
    singles = [test_accuracy([d], output, f'{d.name}-test') for d in run_dirs]
    ensemble = test_accuracy(run_dirs, output, f'{dataset}-ensemble-test') if len(run_dirs) > 1 else None
    row = dict(dataset=dataset, seeds=list(seeds), test=singles, mean=statistics.mean(singles), ensemble=ensemble,
               inception_time=INCEPTION_TIME.get(dataset), cpu_seconds=cpu, wall_seconds=wall)
    print(json.dumps(row), flush=True)
    return row


def table(rows) -> str:
    lines = ['| dataset | test accuracy, per seed | mean | ensemble | InceptionTime | CPU time (train, all seeds) |',
             '|---|---|---|---|---|---|']
    for r in rows:
        ensemble = '–' if r['ensemble'] is None else f"{r['ensemble']:.3f}"
        reference = '–' if r['inception_time'] is None else f"{r['inception_time']:.3f}"
        lines.append(f"| {r['dataset']} | {' '.join(f'{a:.3f}' for a in r['test'])} | {r['mean']:.3f} | {ensemble} | "
                     f"{reference} | {r['cpu_seconds'] / 60:.1f} min ({r['wall_seconds'] / 60:.1f} min wall) |")
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-dir', type=Path, required=True, help='the folder of the datasets (NAME/NAME_TRAIN.ts)')
    parser.add_argument('--datasets', nargs='+', default=None, help='unset: every dataset folder in --data-dir')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--runs', type=Path, default=ROOT / 'output' / 'ucr', help='where the runs are written')
    parser.add_argument('--train-args', nargs=argparse.REMAINDER, default=[],
                        help='further flags of train_imagenet.py (last on the line)')
    parser.add_argument('--output', default=None, help='also write the results as JSON')
    args = parser.parse_args()
    datasets = args.datasets or sorted(p.name for p in args.data_dir.iterdir() if (p / f'{p.name}_TRAIN.ts').is_file())
    args.runs.mkdir(parents=True, exist_ok=True)
    rows = [benchmark(args.data_dir.resolve(), name, args.seeds, args.runs, args.train_args) for name in datasets]
    print('\n' + table(rows))
    report(dict(rows=rows, train_args=args.train_args, environment=environment(torch.device('cpu'), 'float32')),
           args.output)


if __name__ == '__main__':
    main()
