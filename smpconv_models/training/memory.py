"""The C allocator's settings for training and evaluation on the CPU."""
import ctypes
import os
import sys

# parameter numbers of glibc's mallopt (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2 ** 31 - 1


def keep_freed_memory_for_reuse() -> bool:
    """Have glibc serve large tensors from memory freed by earlier ones rather than from fresh pages.

    By default glibc maps every allocation above its mmap threshold (at most 32 MiB) anew and unmaps it when it is
    freed, so each CPU step page-faults its large activations afresh: at batch 32 that doubles SMPConv-T's training
    step (benchmarks/RESULTS.md). Keeping freed memory in the process costs about 15% more peak resident memory.
    A user's own MALLOC_MMAP_MAX_ or MALLOC_TRIM_THRESHOLD_ is left as it is. Returns whether glibc took the setting.
    """
    if not sys.platform.startswith('linux') or {'MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_'} & os.environ.keys():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:  # a C library without mallopt
        return False
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
