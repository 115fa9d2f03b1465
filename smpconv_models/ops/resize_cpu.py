"""The 'cpp' backend of the depthwise resizing convolution: a C++ extension with OpenMP (csrc/resize_cpu.cpp),
compiled on first use with torch.utils.cpp_extension, once per process.

    y[b, c, i, j] = sum_{m < ky, n < kx} bank[c, row_phase[i], m, col_phase[j], n]
                                           * x[b, c, row_start[i] + m, col_start[j] + n]      (x = 0 outside)

`forward` computes y, `grad_input` and `grad_bank` its adjoints in x and in the bank, for float32, float64 and
bfloat16 (accumulated in float32) CPU tensors in any memory layout (made contiguous first); results are
contiguous, in the inputs' dtype, and do not depend on the number of threads. The `*_points` functions take the
bank as points' values [C, P] and their interpolation [P, Py, ky, Px, kx] (bank[c] = sum_q weights[c, q]
interp[q], sampled per channel where it is used and never stored whole), `grad_points` giving the adjoints in
both. Where the extension cannot be
built (no compiler, say), `available` warns once and answers False, and the operator computes with PyTorch.

The extension is built for the CPU it runs on (-march=native): its name carries a hash of the CPU's features and
the PyTorch version, so a build cache shared by different machines keeps one build per kind of CPU (PyTorch
rebuilds it where the source changes).
"""
import hashlib
import platform
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Optional, Sequence, Tuple

import torch

__all__ = ['available', 'forward', 'grad_input', 'grad_bank', 'forward_points', 'grad_input_points', 'grad_points']

_SOURCE = Path(__file__).parent / 'csrc' / 'resize_cpu.cpp'
_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_build_lock = threading.Lock()
_built: Optional[ModuleType] = None
_failed = False


def _cpu_features() -> Optional[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them, None where it does not (then no -march=native)."""
    try:
        cpuinfo = Path('/proc/cpuinfo').read_text()
    except OSError:
        return None
    flags = [line for line in cpuinfo.splitlines() if line.startswith(('flags', 'Features'))]
    return flags[0] if flags else None


def _build() -> ModuleType:
    """Compile (or load from the build cache) the extension for this CPU."""
    from torch.utils.cpp_extension import load
    features = _cpu_features()
    native = [] if features is None else ['-march=native']
    key = '\n'.join((features or platform.machine(), torch.__version__))
    name = f'smpconv_resize_cpu_{hashlib.sha256(key.encode()).hexdigest()[:16]}'
    return load(name=name, sources=[str(_SOURCE)], extra_cflags=['-O3', '-fopenmp', *native],
                extra_ldflags=['-fopenmp'], verbose=False)


def _extension() -> Optional[ModuleType]:
    """The extension, built on the first call; None where building it failed (warned once)."""
    global _built, _failed
    with _build_lock:
        if _built is None and not _failed:
            try:
                _built = _build()
            except Exception as e:  # no compiler, no ninja, a compiler error: PyTorch computes instead
                _failed = True
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                warnings.warn(f'the C++ resizing convolution did not build ({reason}): it computes with PyTorch',
                              RuntimeWarning, stacklevel=3)
        return _built


def available(x: torch.Tensor) -> bool:
    """Whether this backend runs on x: a float32, float64 or bfloat16 CPU tensor, and the extension built."""
    return x.device.type == 'cpu' and x.dtype in _DTYPES and _extension() is not None


def forward(x: torch.Tensor, bank: torch.Tensor, row_start: torch.Tensor, row_phase: torch.Tensor,
            col_start: torch.Tensor, col_phase: torch.Tensor) -> torch.Tensor:
    """y [B, C, H', W'] of x [B, C, H, W] and the depthwise bank [C, Py, ky, Px, kx]."""
    return _extension().forward(x, bank.to(x.dtype), None, None, row_start, row_phase, col_start, col_phase)


def grad_input(grad_y: torch.Tensor, bank: torch.Tensor, row_start: torch.Tensor, row_phase: torch.Tensor,
               col_start: torch.Tensor, col_phase: torch.Tensor, in_height: int, in_width: int) -> torch.Tensor:
    """The gradient [B, C, in_height, in_width] of the input for grad_y [B, C, H', W']."""
    return _extension().grad_input(grad_y, bank.to(grad_y.dtype), None, None, row_start, row_phase, col_start,
                                   col_phase, in_height, in_width)


def grad_bank(grad_y: torch.Tensor, x: torch.Tensor, row_start: torch.Tensor, row_phase: torch.Tensor,
              col_start: torch.Tensor, col_phase: torch.Tensor, bank_shape: Sequence[int]) -> torch.Tensor:
    """The gradient of the bank (of `bank_shape`, [C, Py, ky, Px, kx]) for grad_y [B, C, H', W'] and x."""
    return _extension().grad_bank(grad_y.to(x.dtype), x, row_start, row_phase, col_start, col_phase,
                                  list(bank_shape))


def forward_points(x: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor, row_start: torch.Tensor,
                   row_phase: torch.Tensor, col_start: torch.Tensor, col_phase: torch.Tensor) -> torch.Tensor:
    """`forward` with the bank weights [C, P] @ interp [P, Py, ky, Px, kx]."""
    return _extension().forward(x, None, weights.to(x.dtype), interp.to(x.dtype), row_start, row_phase, col_start,
                                col_phase)


def grad_input_points(grad_y: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor, row_start: torch.Tensor,
                      row_phase: torch.Tensor, col_start: torch.Tensor, col_phase: torch.Tensor, in_height: int,
                      in_width: int) -> torch.Tensor:
    """`grad_input` with the bank weights [C, P] @ interp [P, Py, ky, Px, kx]."""
    return _extension().grad_input(grad_y, None, weights.to(grad_y.dtype), interp.to(grad_y.dtype), row_start,
                                   row_phase, col_start, col_phase, in_height, in_width)


def grad_points(grad_y: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, interp: torch.Tensor,
                row_start: torch.Tensor, row_phase: torch.Tensor, col_start: torch.Tensor, col_phase: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The gradients of the points' values [C, P] and interpolation [P, Py, ky, Px, kx] for grad_y and x."""
    return _extension().grad_points(grad_y.to(x.dtype), x, weights.to(x.dtype), interp.to(x.dtype), row_start,
                                    row_phase, col_start, col_phase)
