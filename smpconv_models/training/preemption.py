"""Preemption: a scheduler's signal asks a run to stop, and the run stops where it can continue from.

SLURM (at a time limit or a preemption, and `--signal` ahead of them), Kubernetes and spot machines send SIGTERM,
SLURM's warning may be SIGUSR1; torchrun passes the SIGTERM it gets on to its workers. `PreemptionSignals` records
such a signal instead of dying of it, and `requested` tells every process, at the same update, whether any of them
got one, so that all of them stop after that update and one consistent training state can be written. The process
then exits with 128 + the signal's number (143 for SIGTERM, 138 for SIGUSR1), the status of a process ended by that
signal, which schedulers requeue or restart.
"""
import signal
import threading
from types import FrameType
from typing import Dict, Optional

import torch
import torch.distributed as dist
from accelerate import Accelerator

__all__ = ['PREEMPTION_SIGNALS', 'Preempted', 'PreemptionSignals', 'exit_status', 'ignore_preemption_signals']

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """A run stopped by signal `signum`, after writing a training state to continue from."""

    def __init__(self, signum: int):
        super().__init__(f'stopped by {signal.Signals(signum).name}')
        self.signum = signum


def exit_status(signum: int) -> int:
    """The exit status of a run stopped by signal `signum`: that of a process the signal ended."""
    return 128 + signum


class PreemptionSignals:
    """Within its block, SIGTERM and SIGUSR1 are recorded rather than ending the process (in the main thread,
    where Python runs signal handlers; elsewhere it records nothing and the signals act as before)."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.received: Optional[int] = None  # the first signal this process got
        self._previous: Dict[int, object] = {}

    def __enter__(self) -> 'PreemptionSignals':
        if threading.current_thread() is threading.main_thread():
            for signum in PREEMPTION_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _record(self, signum: int, frame: Optional[FrameType]) -> None:
        # no printing here: a handler that writes while the interrupted code writes to the same stream fails
        if self.received is None:
            self.received = signum

    def requested(self) -> Optional[int]:
        """The signal any process got (the largest number, if several), None if none: the same answer on every
        process, which all call it at the same point (a collective when there are several)."""
        if self.accelerator.num_processes == 1:
            return self.received
        flag = torch.tensor([self.received or 0], device=self.accelerator.device)
        dist.all_reduce(flag, dist.ReduceOp.MAX)
        return int(flag.item()) or None


def ignore_preemption_signals(worker_id: int) -> None:
    """A DataLoader worker's start: it leaves SIGUSR1 (which SLURM's --signal may send every process of a job) to
    its training process, which stops the run after its update; a worker it ended would end the run with an
    error first. SIGTERM keeps its default: multiprocessing and the DataLoader end their workers with it."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
