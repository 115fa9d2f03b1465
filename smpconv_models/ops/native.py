"""The package's C++ extensions (csrc/), compiled on first use with torch.utils.cpp_extension, once per process.

Each is built for the CPU it runs on (-march=native): its name carries a hash of the CPU's features and the PyTorch
version, so a build cache shared by different machines keeps one build per kind of CPU (PyTorch rebuilds it where
the source changes). Where one cannot be built (no compiler, say), `NativeExtension.module` warns once and answers
None, and its operator computes with PyTorch.
"""
import hashlib
import platform
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Optional

import torch

__all__ = ['NativeExtension']

SOURCES = Path(__file__).parent / 'csrc'


def _cpu_features() -> Optional[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them, None where it does not (then no -march=native)."""
    try:
        cpuinfo = Path('/proc/cpuinfo').read_text()
    except OSError:
        return None
    flags = [line for line in cpuinfo.splitlines() if line.startswith(('flags', 'Features'))]
    return flags[0] if flags else None


class NativeExtension:
    """The extension built from csrc/`source`, described to the user as `what` where it does not build."""

    def __init__(self, name: str, source: str, what: str):
        self.name, self.source, self.what = name, SOURCES / source, what
        self._lock = threading.Lock()
        self._module: Optional[ModuleType] = None
        self._failed = False

    def build(self) -> ModuleType:
        """Compile (or load from the build cache) the extension for this CPU."""
        from torch.utils.cpp_extension import load  # imported here: it looks for compilers and CUDA on import
        features = _cpu_features()
        native = [] if features is None else ['-march=native']
        key = '\n'.join((features or platform.machine(), torch.__version__))
        return load(name=f'{self.name}_{hashlib.sha256(key.encode()).hexdigest()[:16]}', sources=[str(self.source)],
                    extra_cflags=['-O3', '-fopenmp', *native], extra_ldflags=['-fopenmp'], verbose=False)

    def module(self) -> Optional[ModuleType]:
        """The extension, built on the first call; None where building it failed (warned once)."""
        with self._lock:
            if self._module is None and not self._failed:
                try:
                    self._module = self.build()
                except Exception as e:  # no compiler, no ninja, a compiler error: PyTorch computes instead
                    self._failed = True
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    warnings.warn(f'{self.what} did not build ({reason}): it computes with PyTorch', RuntimeWarning,
                                  stacklevel=3)
            return self._module
