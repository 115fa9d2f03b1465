"""The device and numerics a run computes in, through accelerate: one set-up for training and evaluation."""
import torch
from accelerate import Accelerator

from .config import ConfigError
from .memory import keep_freed_memory_for_reuse
from .settings import DeviceSettings

__all__ = ['create_accelerator']


def create_accelerator(settings: DeviceSettings) -> Accelerator:
    """The accelerator of `settings` (a GPU when there is one, unless the CPU is asked for); on the CPU, glibc
    is set to keep freed memory for reuse."""
    if settings.device == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('--device cuda, but no GPU is available')
    # accelerate forms a multi-process CPU group (gloo) only when told to use the CPU
    accelerator = Accelerator(cpu=settings.device == 'cpu' or not torch.cuda.is_available(),
                              mixed_precision=settings.mixed_precision)
    if accelerator.device.type == 'cpu':
        keep_freed_memory_for_reuse()
    return accelerator
