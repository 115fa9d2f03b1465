"""Which backend computes a pass of a convolution operator: the fastest one, timed once per shape.

The choice is made per pass (the depthwise convolution's 'forward' and 'grad_weight', the full convolution's
'conv.forward' and 'conv.grad_weight'), device, dtype, layout, input shape and kernel, by running every
backend of the operator that supports the input a few times and keeping the fastest; it is cached for the
process. PyTorch's own convolutions are always among the candidates, so a choice is never slower than
PyTorch. A backend can be forced with the environment variable SMPCONV_DWCONV_BACKEND or, in code,
`use_backend(name)`: every operator that has a backend of that name uses it, the others choose as usual.

Backends round differently, so two processes that choose differently compute results that differ in the
last bits: for bitwise-reproducible runs, force a backend, or carry the choices over (`choices()` is plain
data, made of strings and tuples, and `restore_choices` puts it back), as a resumed training run does.
"""
import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Mapping, Optional, Tuple

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


def _time(run: Callable[[], torch.Tensor], device: torch.device, min_runs: int = 3,
          min_seconds: float = 0.02) -> float:
    """The least seconds of one run, over at least `min_runs` runs and `min_seconds`: the minimum, as other
    work on the machine only ever adds time."""
    synchronize = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    run()  # warm-up: kernel compilation, allocations
    synchronize()
    times = []
    while len(times) < min_runs or sum(times) < min_seconds:
        start = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


# a candidate estimated to do this many times the work of the cheapest one is not timed: timing a direct
# convolution with 16,000 taps would take longer than training with the FFT
_HOPELESS = 16.


def choose(pass_: str, x: torch.Tensor, signature: Tuple, run: Callable[[str], Callable[[], torch.Tensor]],
           work: Optional[Mapping[str, float]] = None) -> str:
    """The backend for `pass_` on input `x`: forced, else cached, else the fastest of the supported ones.
    `signature` is what else decides the cost (the kernel's size); `run(name)` returns a zero-argument call of
    the pass on that backend, for timing; `work`, where the operator can tell, estimates each backend's work
    (operations), and those far above the least are left out."""
    backends = _OPERATORS[pass_]
    forced = forced_backend()
    if forced is not None and forced in backends:
        if not backends[forced].supports(x):
            raise RuntimeError(f'convolution backend {forced!r} does not run {x.dtype} on {x.device}')
        return forced
    layout = 'channels_last' if x.dim() == 4 and memory_format(x) == torch.channels_last else 'contiguous'
    key = (pass_, x.device.type, str(x.dtype).removeprefix('torch.'), layout, tuple(x.shape), tuple(signature))
    if key not in _choices or not backends[_choices[key]].supports(x):  # restored where it cannot run: timed
        candidates = [name for name, backend in backends.items() if backend.supports(x)]
        if work:
            least = min(work[name] for name in candidates)
            candidates = [name for name in candidates if work[name] <= _HOPELESS * least]
        timings, failures = {}, {}
        with torch.no_grad():
            for name in candidates:
                try:
                    timings[name] = _time(run(name), x.device)
                except Exception as e:  # out of memory at this size, say: the others may run
                    failures[name] = f'{type(e).__name__}: {e}'
        if not timings:
            raise RuntimeError(f'no convolution backend runs {pass_} on {tuple(x.shape)} {x.dtype} inputs: '
                               + '; '.join(f'{name}: {error}' for name, error in failures.items()))
        _choices[key] = min(timings, key=timings.get)
    return _choices[key]
