"""The framework of this package's operators: how one is declared, the helpers their backends share, and the
dispatcher, which computes each pass on the fastest backend for its shape.

An operator is declared once, as an `Operator`: its name, the environment variable that forces its backend, and
its backends, each a `Backend` with a function for every pass, by the pass's name (unique over all operators:
it keys `choices()`), and whether it runs on an input; optionally, how to cut a smaller problem for screening
(default: the first sample of the batch). Its custom ops compute each pass with `operator.compute`, and register
their fake tensors, derivatives and FLOP formulas with torch.library. The continuous resizing convolution
(`resize.py`), say:

    RESIZE = Operator('resizing convolution', 'SMPCONV_RESIZE_BACKEND', {
        'torch': Backend({'resize.forward': _torch_forward, 'resize.grad_input': ..., 'resize.grad_bank': ...}),
        'cpp': _depthwise_kernels('resize_cpu'),  # a Backend whose `supports` says where it runs
        'triton': _depthwise_kernels('triton_resize'),
    })

    @torch.library.custom_op('smpconv::resize_conv2d', mutates_args=())
    def _forward(x: torch.Tensor, bank: torch.Tensor, out_size: List[int], ...) -> torch.Tensor:
        ...
        return RESIZE.compute('resize.forward', x, bank, rows, cols, signature=...)

The choice is made per pass, device, dtype, layout, input shape and signature (what else decides the cost: the
kernel's size, say), by timing the backends of the operator that support the input and keeping the fastest; it
is cached for the process, and used for batch sizes within a factor of two. Timing is bounded: every candidate
runs on a smaller problem first (one sample of the batch, or a few channels of a single sample), and only those
within 4x of the best run on the whole (once, and once more where two are close). PyTorch's own convolutions
are always among the candidates, so a choice is never slower than PyTorch. An operator that another's backend
calls (the FFT backends' transforms, `ffts`) takes its first backend that runs while that one is timed, and
chooses its own at its first call outside of timing. A backend can be forced for one operator with its
environment variable (SMPCONV_DWCONV_BACKEND for the depthwise convolution, SMPCONV_CONV_BACKEND for the long
one, SMPCONV_RESIZE_BACKEND for the resizing one, SMPCONV_FFT_BACKEND for the FFT backends' transforms) or, in
code, for all of them with `use_backend(name)`: every operator that has a backend of that name uses it, the
others choose as usual.

Backends round differently, so two processes that choose differently compute results that differ in the last
bits: for bitwise-reproducible runs, force a backend, or carry the choices over (`choices()` is plain data,
made of strings, numbers, booleans and tuples, and `restore_choices` puts it back), as a resumed training run
does.
"""
import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.fx

__all__ = ['Backend', 'Operator', 'use_backend', 'choices', 'restore_choices', 'clear_choices', 'seconds',
           'recording_graph', 'transforming', 'torch_ops_only', 'capturing_graph', 'compute_dtype', 'check_float',
           'check_odd', 'memory_format', 'fft_sizes', 'fft_dtype', 'spatial_dims', 'conv_grad_weight', 'tap_flops',
           'save_inputs', 'first_sample']


# ---- what the operators share -----------------------------------------------------------------------------

@torch.jit.unused  # TorchScript takes `torch.jit.is_scripting() or recording_graph()` as true, uncompiled
def recording_graph() -> bool:
    """Whether jit.trace, FX, torch.export or the ONNX exporter is recording the model: the operators' functions
    then give it PyTorch's own convolution, as they do TorchScript, so that what they save runs anywhere, without
    this package (jit.trace cannot record the package's operators: their lists of sizes are not traced)."""
    return (torch.jit.is_tracing() or torch.fx._symbolic_trace.is_fx_symbolic_tracing()
            or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export())


@torch.jit.unused  # as recording_graph
def transforming() -> bool:
    """Whether forward-mode AD or a torch.func transform (grad, vmap, jvp, ...) is at work: the package's custom
    operators and autograd Functions have no forward-mode or batching rules, and under vmap the values seen are
    batches of values. Not while torch.compile traces, which runs its own transforms on the operators' fake
    tensors."""
    return not torch.compiler.is_compiling() and (torch.autograd.forward_ad._current_level >= 0
                                                  or torch._C._functorch.peek_interpreter_stack() is not None)


@torch.jit.unused  # as recording_graph
def torch_ops_only() -> bool:
    """Whether the model computes with PyTorch's own operations only: while a graph is recorded for use without
    this package (`recording_graph`), and under forward-mode AD or a torch.func transform (`transforming`)."""
    return recording_graph() or transforming()


def capturing_graph() -> bool:
    """Whether a graph is recorded (`recording_graph`) or compiled, or a transform is at work (`transforming`):
    what runs must not depend on the values it sees (the points' positions, a backend's choice of the moment)."""
    return recording_graph() or torch.compiler.is_compiling() or transforming()


def compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype a convolution of x with weight computes and returns in, as F.conv2d's: the autocast dtype for
    float32 and lower-precision inputs inside an autocast region of x's device, else x's and weight's promoted."""
    dtype = torch.promote_types(x.dtype, weight.dtype)
    device_type = x.device.type  # 'meta' has no autocast
    if dtype != torch.float64 and torch.amp.is_autocast_available(device_type) and \
            torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


def check_float(function: str, **tensors: torch.Tensor) -> None:
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise TypeError(f'{function} takes floating-point tensors (float16, bfloat16, float32, float64), got '
                            f'{name} of {tensor.dtype}')


def check_odd(kernel_size: Sequence[int]) -> None:
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"'same' convolution needs odd kernel sizes, got {tuple(kernel_size)}")


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels-last tensor that is not also plainly contiguous (1x1 images are both); the
    contiguous format under a transform (`transforming`: vmap cannot query or make other layouts)."""
    if transforming():
        return torch.contiguous_format
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format


def _smooth_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n with a >= 1 (a >= 3 from 256 on): sizes FFT libraries transform fast. Per
    element of a batch of rfft and irfft (MKL, 2-core EPYC), odd sizes ran slower than their even neighbours (1125
    2.6x slower than 1120 and 1152, 45 x 45 1.4x slower than 48 x 48), and long ones with one or two factors of 2
    took longer than the larger 23040 (21870 and 22500: 1.3-1.4x its time); small periods keep theirs (36 x 36
    transformed faster than 40 x 40)."""
    twos = 2 ** (3 if n >= 256 else 1 if n > 1 else 0)
    size = n
    while True:
        rest = size
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1 and size % twos == 0:
            return size
        size += 1


def fft_sizes(size: Sequence[int], kernel_size: Sequence[int], pad: Sequence[int]) -> List[int]:
    """Periods long enough that the circular correlation equals the zero-padded one on the output: x's samples
    must not wrap onto taps `pad` before or `k - 1 - pad` after any output position; rounded up to fast sizes."""
    return [_smooth_size(n + max(p, k - 1 - p)) for n, k, p in zip(size, kernel_size, pad)]


def fft_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 or wider: half-precision FFTs lose too much."""
    return torch.promote_types(dtype, torch.float32)


def spatial_dims(ndim: int) -> Tuple[int, ...]:
    """The last `ndim` dimensions (a tensor's spatial axes, after [B, C]), as FFTs and flips take them."""
    return tuple(range(-ndim, 0))


def conv_grad_weight(grad_y: torch.Tensor, x: torch.Tensor, weight_shape: Sequence[int], padding: Sequence[int],
                     groups: int) -> torch.Tensor:
    """PyTorch's weight gradient of a stride-1 convolution of x with a weight of `weight_shape`."""
    ndim = x.dim() - 2
    _, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_y, x, x.new_empty(weight_shape), None, [1] * ndim, list(padding), [1] * ndim, False, [0] * ndim, groups,
        (False, True, False))
    return grad_weight


def tap_flops(x_shape: Sequence[int], kernel_size: Sequence[int], channels: int = 1) -> int:
    """Multiply-adds x2 of one pass of a convolution at every tap, each input channel meeting `channels` of the
    other side (one for a depthwise convolution), the usual count."""
    return 2 * math.prod(x_shape) * channels * math.prod(kernel_size)


def save_inputs(ctx, inputs, output) -> None:
    """`setup_context` of a custom op: its tensors saved for backward, its other arguments in `ctx.args`."""
    ctx.save_for_backward(*(t for t in inputs if torch.is_tensor(t)))
    ctx.args = [a for a in inputs if not torch.is_tensor(a)]


def first_sample(args: Tuple, batched: int) -> Optional[Tuple]:
    """The screening problem of most passes: the first sample of the batch that the first `batched` arguments
    carry, None for a batch of one."""
    if args[0].shape[0] == 1:
        return None
    return (*(a[:1] for a in args[:batched]), *args[batched:])


# ---- operators and their backends -------------------------------------------------------------------------

def _any_float(x: torch.Tensor) -> bool:
    return x.is_floating_point()


class Backend(NamedTuple):
    """One way to compute an operator: a function for each of its passes, by the pass's name, and whether it
    runs on an input (its device and dtype)."""
    passes: Mapping[str, Callable[..., torch.Tensor]]
    supports: Callable[[torch.Tensor], bool] = _any_float


class ChoiceKey(NamedTuple):
    """What a choice is made for, e.g. ('grad_weight', 'cpu', 'float32', 'channels_last', (8, 96, 56, 56),
    (31, 31)); `choices()` gives it as a plain tuple, which training states save."""
    pass_name: str
    device_type: str
    dtype: str
    layout: str
    shape: Tuple[int, ...]
    signature: Tuple

    def without_batch(self) -> 'ChoiceKey':
        return self._replace(shape=self.shape[1:])


_forced = threading.local()
_timing = threading.local()  # depth: the `_fastest` calls under way on this thread
_choices: Dict[ChoiceKey, str] = {}
_OPERATORS: Dict[str, 'Operator'] = {}  # every declared operator, by the names of its passes


@dataclass(frozen=True)
class Operator:
    """An operator whose passes each run on the fastest of its backends for their shape; declaring one makes its
    passes known to `choices()`, `restore_choices` and `use_backend`."""
    name: str
    env_var: str  # forces its backend
    backends: Mapping[str, Backend]
    # a smaller problem of a pass (its arguments, the first `batched` carrying the batch) with its cost in
    # proportion, None where there is none
    screening: Callable[[Tuple, int], Optional[Tuple]] = first_sample

    def __post_init__(self) -> None:
        for pass_ in self.passes:
            if pass_ in _OPERATORS:
                raise ValueError(f'pass {pass_!r} of the {self.name} is a pass of the {_OPERATORS[pass_].name} '
                                 f'already')
        _OPERATORS.update(dict.fromkeys(self.passes, self))

    @property
    def passes(self) -> Tuple[str, ...]:
        return tuple(next(iter(self.backends.values())).passes)

    def forced(self) -> Optional[str]:
        """The backend forced by `use_backend`, if this operator has it, or else by its environment variable."""
        name = getattr(_forced, 'name', None)
        if name in self.backends:
            return name
        name = os.environ.get(self.env_var) or None
        if name is not None and name not in self.backends:
            raise ValueError(f"unknown {self.name} backend {name!r} in {self.env_var}: one of "
                             f"{', '.join(self.backends)}")
        return name

    def compute(self, pass_: str, *args, batched: int = 1, signature: Tuple,
                work: Optional[Callable[[], Mapping[str, float]]] = None) -> torch.Tensor:
        """Pass `pass_` on `args` by the backend `choose` picks: the first `batched` arguments carry the batch, the
        last of them the input x whose device, dtype, layout and shape key the choice."""
        return self.backends[self.choose(pass_, args, batched, signature, work)].passes[pass_](*args)

    def choose(self, pass_: str, args: Tuple, batched: int, signature: Tuple,
               work: Optional[Callable[[], Mapping[str, float]]] = None) -> str:
        """The backend for `pass_` on `args`: forced, else cached (for this shape, or a batch size within a factor
        of two), else the fastest of the supported ones. `signature` is what else decides the cost; `work`, where
        the operator can tell, estimates each backend's operations, and those far above the least are not
        timed."""
        x = args[batched - 1]
        forced = self.forced()
        if forced is not None:
            if not self.backends[forced].supports(x):
                raise RuntimeError(f'convolution backend {forced!r} does not run {x.dtype} on {x.device} with shape '
                                   f'{tuple(x.shape)}')
            return forced
        layout = 'channels_last' if x.dim() == 4 and memory_format(x) == torch.channels_last else 'contiguous'
        key = ChoiceKey(pass_, x.device.type, str(x.dtype).removeprefix('torch.'), layout, tuple(x.shape),
                        tuple(signature))
        if key in _choices and self.backends[_choices[key]].supports(x):  # restored where it cannot run: anew
            return _choices[key]
        nearby = _choice_for_nearby_batch(key)
        if nearby is not None and self.backends[nearby].supports(x):
            _choices[key] = nearby
            return nearby
        candidates = [name for name, backend in self.backends.items() if backend.supports(x)]
        if candidates and getattr(_timing, 'depth', 0):
            # called by a backend of another operator being timed: the first that runs, neither timed nor kept,
            # so that the other's timing holds no timing of this one's
            return candidates[0]
        if work is not None:
            estimates = work()
            least = min(estimates[name] for name in candidates)
            candidates = [name for name in candidates if estimates[name] <= _HOPELESS * least]
        screening = self.screening(args, batched)

        def run(name: str, screen: bool) -> Optional[Callable[[], torch.Tensor]]:
            if screen and screening is None:
                return None
            return partial(self.backends[name].passes[pass_], *(screening if screen else args))

        fastest, failures = _fastest(candidates, run, x.device)
        if fastest is None:
            raise RuntimeError(f'no convolution backend runs {pass_} on {tuple(x.shape)} {x.dtype} inputs: '
                               + '; '.join(f'{name}: {error}' for name, error in failures.items()))
        _choices[key] = fastest
        return fastest


def _known() -> Tuple[str, ...]:
    return tuple(dict.fromkeys(name for operator in _OPERATORS.values() for name in operator.backends))


@contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    """Compute every operator that has a backend `name` with it in this block (None: as outside of it)."""
    if name is not None and name not in _known():
        raise ValueError(f"unknown convolution backend {name!r}: one of {', '.join(_known())}")
    previous = getattr(_forced, 'name', None)
    _forced.name = name
    try:
        yield
    finally:
        _forced.name = previous


def choices() -> Dict[Tuple, str]:
    """The choices made so far: (pass, device type, dtype, layout, input shape, signature) -> backend, e.g.
    ('grad_weight', 'cpu', 'float32', 'channels_last', (8, 96, 56, 56), (31, 31)) -> 'fft'."""
    return {tuple(key): name for key, name in _choices.items()}


def restore_choices(saved: Mapping[Tuple, str]) -> None:
    """Make the choices of `saved` (from `choices()`, maybe of another process) again, instead of timing."""
    for key, name in saved.items():
        if key[0] not in _OPERATORS:
            raise ValueError(f"unknown convolution pass {key[0]!r}: one of {', '.join(_OPERATORS)}")
        backends = _OPERATORS[key[0]].backends
        if name not in backends:
            raise ValueError(f"unknown convolution backend {name!r} for the {key[0]} pass: one of "
                             f"{', '.join(backends)}")
        _choices[ChoiceKey(*key)] = name


def clear_choices() -> None:
    _choices.clear()


# ---- timing ------------------------------------------------------------------------------------------------

def seconds(run: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of `run()`, the work it queues on the device included."""
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
            timings[name] = seconds(call, device)
        except Exception as e:  # the others may run
            failures[name] = f'{type(e).__name__}: {e}'
    return timings


@contextmanager
def _timing_backends() -> Iterator[None]:
    """This thread times an operator's backends in this block (see `Operator.choose`)."""
    _timing.depth = getattr(_timing, 'depth', 0) + 1
    try:
        yield
    finally:
        _timing.depth -= 1


def _fastest(candidates: Sequence[str], run: Callable[[str, bool], Optional[Callable[[], torch.Tensor]]],
             device: torch.device) -> Tuple[Optional[str], Dict[str, str]]:
    """The fastest candidate, timed in a bounded time: each once on a smaller problem (`run(name, True)`, None
    where there is none), then the survivors once on the whole problem (`run(name, False)`), and those within
    `_CLOSE` of the best once more."""
    failures: Dict[str, str] = {}
    if len(candidates) == 1:
        return candidates[0], failures
    with torch.no_grad(), _timing_backends():
        screens = {name: run(name, True) for name in candidates}
        if all(call is not None for call in screens.values()):
            screened = _timings(screens, device, failures, warm_up=False)
            candidates = [n for n in screened if screened[n] <= _SCREEN_RATIO * min(screened.values())]
        timings = _timings({name: run(name, False) for name in candidates}, device, failures)
        close = [n for n in timings if timings[n] <= _CLOSE * min(timings.values())]
        if len(close) > 1:
            for name, elapsed in _timings({n: run(n, False) for n in close}, device, failures, False).items():
                timings[name] = min(timings[name], elapsed)
    return (min(timings, key=timings.get) if timings else None), failures


def _choice_for_nearby_batch(key: ChoiceKey) -> Optional[str]:
    """The choice made for the same pass and shape at a batch size within a factor of two, where rankings hold
    (measured: benchmarks/RESULTS.md)."""
    batch = key.shape[0]
    nearby = [(abs(math.log(other.shape[0] / batch)), name) for other, name in _choices.items()
              if other.without_batch() == key.without_batch() and other.shape[0] > 0
              and batch / 2 <= other.shape[0] <= 2 * batch]
    return min(nearby)[1] if nearby else None
