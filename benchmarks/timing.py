"""What the benchmarks share: timing a call, describing the machine it ran on, reporting the results."""
import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from datetime import date
from typing import Callable, ContextManager, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from smpconv_models.ops.dispatch import seconds  # one timer: the one the dispatcher chooses backends by


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The benchmark's flags, with the --threads and --output that every benchmark takes; the threads set."""
    parser.add_argument('--threads', type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument('--output', default=None, help='also write the results as JSON')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def median_seconds(run: Callable[[], object], device: torch.device, warmup: int = 2, min_repeats: int = 3,
                   min_seconds: float = 1.) -> float:
    """Median seconds of `run()`, after `warmup` calls, over at least `min_repeats` calls and `min_seconds`."""
    for _ in range(warmup):
        run()
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        times.append(seconds(run, device))
    return statistics.median(times)


def training_step(model: torch.nn.Module, x: torch.Tensor, optimizer: Callable[..., torch.optim.Optimizer],
                  context: Callable[[], ContextManager] = nullcontext, autocast: ContextManager = nullcontext()
                  ) -> Callable[[], None]:
    """A training step of `model` on x and random labels, within a fresh `context()`: forward and cross-entropy
    (under `autocast`), backward, and a step of `optimizer(model.parameters())`."""
    step_optimizer = optimizer(model.parameters())
    labels = torch.randint(0, model.num_classes, (x.shape[0],), device=x.device)

    def step() -> None:
        with context():
            with autocast:
                loss = F.cross_entropy(model(x), labels)
            loss.backward()
            step_optimizer.step()
            step_optimizer.zero_grad(set_to_none=True)

    return step


def medians_in_turn(runs: Dict[str, Tuple[Callable[[], object], int]], device: torch.device, warmup: int = 2
                    ) -> Dict[str, float]:
    """Median seconds of each run's call over its own number of calls after `warmup` untimed ones, the runs called
    in turn, one call of each per round: a machine whose speed drifts over minutes moves them all alike."""
    for call, _ in runs.values():
        for _ in range(warmup):
            call()
    times = {label: [] for label in runs}
    for round_ in range(max(repeats for _, repeats in runs.values())):
        for label, (call, repeats) in runs.items():
            if round_ < repeats:
                times[label].append(seconds(call, device))
    return {label: statistics.median(label_times) for label, label_times in times.items()}


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor()


# the instruction sets that decide which kernels oneDNN and the FFT libraries run: speed ratios between
# machines of one CPU name differ with them
_ISA_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16',
              'amx_fp16')


def cpu_flags() -> str:
    """The instruction sets of `_ISA_FLAGS` that this CPU has."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = next(line.split(':', 1)[1].split() for line in f if line.startswith('flags'))
    except (OSError, StopIteration):
        return ''
    return ' '.join(flag for flag in _ISA_FLAGS if flag in flags)


def environment(device: torch.device, dtype: str) -> dict:
    """Date, device, versions and threads: what a figure in RESULTS.md is quoted with."""
    import timm
    return dict(date=str(date.today()), device=str(device), dtype=dtype, torch=torch.__version__,
                timm=timm.__version__, threads=torch.get_num_threads(), cpu=cpu_name(), cpu_flags=cpu_flags(),
                gpu=torch.cuda.get_device_name(device) if device.type == 'cuda' else None)


def report(results: dict, output: Optional[str] = None) -> None:
    """Print the machine line of `results['environment']` under a table and, with `output`, write `results` as
    JSON there."""
    print('\n' + ', '.join(f'{k}: {v}' for k, v in results['environment'].items() if v is not None))
    if output:
        with open(output, 'w') as f:
            json.dump(results, f, indent=2, default=str)
