"""Which backend computes a pass of a convolution operator: the fastest one, timed once per shape.

The choice is made per pass (the depthwise convolution's 'forward' and 'grad_weight', the full convolution's
'conv.forward' and 'conv.grad_weight'), device, dtype, layout, input shape and kernel, by timing the backends
of the operator that support the input and keeping the fastest; it is cached for the process, and used for
batch sizes within a factor of two. Timing is bounded: every candidate runs on a smaller problem first (one
sample of the batch, or a few channels of a single sample), and only those within 4x of the best run on the
whole (once, and once more where two are close). PyTorch's own convolutions are always among the candidates,
so a choice is never slower than PyTorch. A backend can be forced with the environment variable
SMPCONV_DWCONV_BACKEND or, in code, `use_backend(name)`: every operator that has a backend of that name uses
it, the others choose as usual.

Backends round differently, so two processes that choose differently compute results that differ in the last
bits: for bitwise-reproducible runs, force a backend, or carry the choices over (`choices()` is plain data,
made of strings and tuples, and `restore_choices` puts it back), as a resumed training run does.
"""
import math
import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import torch

from .backends import BACKENDS, Backend, memory_format

__all__ = ['ENV_VAR', 'use_backend', 'forced_backend', 'register_operator', 'choose', 'choices', 'restore_choices',
           'clear_choices']

ENV_VAR = 'SMPCONV_DWCONV_BACKEND'
_forced = threading.local()
_choices: Dict[Tuple, str] = {}
# the backends of every operator that chooses through this module, by the pass names of its choices
_OPERATORS: Dict[str, Mapping[str, Backend]] = {'forward': BACKENDS, 'grad_weight': BACKENDS}


def register_operator(passes: Tuple[str, ...], backends: Mapping[str, Backend]) -> None:
    """Let an operator whose passes are named `passes` choose among `backends` through this module."""
    _OPERATORS.update({pass_: backends for pass_ in passes})


def _known() -> Tuple[str, ...]:
    return tuple(dict.fromkeys(name for backends in _OPERATORS.values() for name in backends))


def _check(name: str) -> str:
    if name not in _known():
        raise ValueError(f"unknown convolution backend {name!r}: one of {', '.join(_known())}")
    return name


@contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    """Compute every depthwise convolution in this block with backend `name` (None: choose by timing)."""
    previous = getattr(_forced, 'name', None)
    _forced.name = None if name is None else _check(name)
    try:
        yield
    finally:
        _forced.name = previous


def forced_backend() -> Optional[str]:
    """The backend forced by `use_backend` or, outside of one, by SMPCONV_DWCONV_BACKEND."""
    name = getattr(_forced, 'name', None) or os.environ.get(ENV_VAR) or None
    return None if name is None else _check(name)


def choices() -> Dict[Tuple, str]:
    """The choices made so far: (pass, device type, dtype, layout, input shape, kernel size) -> backend, e.g.
    ('grad_weight', 'cpu', 'float32', 'channels_last', (8, 96, 56, 56), (31, 31)) -> 'fft'."""
    return dict(_choices)


def restore_choices(saved: Mapping[Tuple, str]) -> None:
    """Make the choices of `saved` (from `choices()`, maybe of another process) again, instead of timing."""
    for key, name in saved.items():
        backends = _OPERATORS.get(key[0], BACKENDS)
        if name not in backends:
            raise ValueError(f"unknown convolution backend {name!r} for the {key[0]} pass: one of "
                             f"{', '.join(backends)}")
        _choices[tuple(key)] = name


def clear_choices() -> None:
    _choices.clear()


def _seconds(run: Callable[[], torch.Tensor], device: torch.device) -> float:
    synchronize = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    synchronize()
    start = time.perf_counter()
    run()
    synchronize()
    return time.perf_counter() - start


# a candidate estimated to do this many times the work of the cheapest one is not timed: timing a direct
# convolution with 16,000 taps would take longer than training with the FFT
_HOPELESS = 16.
# candidates this many times slower than the best on one sample are not timed on the whole batch (oneDNN's
# NCHW convolution with a 31x31 kernel runs 20-50x slower than the best)
_SCREEN_RATIO = 4.
# candidates this close to the best after one run on the whole batch run once more, the least time counting
_CLOSE = 1.3


def _timings(calls: Mapping[str, Callable[[], torch.Tensor]], device: torch.device, failures: Dict[str, str],
             warm_up: bool = True) -> Dict[str, float]:
    """Seconds of one run of each call, after an untimed one (plans, primitives, allocations) unless told not
    to; a call that raises (out of memory, say) is left out, its error kept in `failures`."""
    timings = {}
    for name, call in calls.items():
        try:
            if warm_up:
                call()
            timings[name] = _seconds(call, device)
        except Exception as e:  # the others may run
            failures[name] = f'{type(e).__name__}: {e}'
    return timings


def _fastest(candidates: Sequence[str], run: Callable[[str, bool], Optional[Callable[[], torch.Tensor]]],
             device: torch.device) -> Tuple[Optional[str], Dict[str, str]]:
    """The fastest candidate, timed in a bounded time: each once on a smaller problem (one sample of the batch,
    or a few channels of one), then the survivors once on the whole problem, and those within `_CLOSE` of the
    best once more."""
    failures: Dict[str, str] = {}
    if len(candidates) == 1:
        return candidates[0], failures
    with torch.no_grad():
        screens = {name: run(name, True) for name in candidates}
        if all(call is not None for call in screens.values()):
            screened = _timings(screens, device, failures, warm_up=False)
            candidates = [n for n in screened if screened[n] <= _SCREEN_RATIO * min(screened.values())]
        timings = _timings({name: run(name, False) for name in candidates}, device, failures)
        close = [n for n in timings if timings[n] <= _CLOSE * min(timings.values())]
        if len(close) > 1:
            for name, seconds in _timings({n: run(n, False) for n in close}, device, failures, False).items():
                timings[name] = min(timings[name], seconds)
    return (min(timings, key=timings.get) if timings else None), failures


def _choice_for_nearby_batch(key: Tuple) -> Optional[str]:
    """The choice made for the same pass and shape at a batch size within a factor of two, where rankings hold
    (measured: benchmarks/RESULTS.md)."""
    batch = key[4][0]
    nearby = [(abs(math.log(other[4][0] / batch)), name) for other, name in _choices.items()
              if other[:4] == key[:4] and other[5] == key[5] and other[4][1:] == key[4][1:] and other[4][0] > 0
              and batch / 2 <= other[4][0] <= 2 * batch]
    return min(nearby)[1] if nearby else None


def choose(pass_: str, x: torch.Tensor, signature: Tuple,
           run: Callable[[str, bool], Optional[Callable[[], torch.Tensor]]],
           work: Optional[Mapping[str, float]] = None) -> str:
    """The backend for `pass_` on input `x`: forced, else cached (for this shape, or a batch size within a factor
    of two), else the fastest of the supported ones. `signature` is what else decides the cost (the kernel's
    size); `run(name, screen)` returns a zero-argument call of the pass on that backend, for timing: on the whole
    problem, or with `screen` on a smaller one whose cost is in proportion (None where the operator has none);
    `work`, where the operator can tell, estimates each backend's work (operations), and those far above the
    least are left out."""
    backends = _OPERATORS[pass_]
    forced = forced_backend()
    if forced is not None and forced in backends:
        if not backends[forced].supports(x):
            raise RuntimeError(f'convolution backend {forced!r} does not run {x.dtype} on {x.device}')
        return forced
    layout = 'channels_last' if x.dim() == 4 and memory_format(x) == torch.channels_last else 'contiguous'
    key = (pass_, x.device.type, str(x.dtype).removeprefix('torch.'), layout, tuple(x.shape), tuple(signature))
    if key in _choices and backends[_choices[key]].supports(x):  # restored where it cannot run: chosen anew
        return _choices[key]
    nearby = _choice_for_nearby_batch(key)
    if nearby is not None and backends[nearby].supports(x):
        _choices[key] = nearby
        return nearby
    candidates = [name for name, backend in backends.items() if backend.supports(x)]
    if work:
        least = min(work[name] for name in candidates)
        candidates = [name for name in candidates if work[name] <= _HOPELESS * least]
    fastest, failures = _fastest(candidates, run, x.device)
    if fastest is None:
        raise RuntimeError(f'no convolution backend runs {pass_} on {tuple(x.shape)} {x.dtype} inputs: '
                           + '; '.join(f'{name}: {error}' for name, error in failures.items()))
    _choices[key] = fastest
    return fastest
