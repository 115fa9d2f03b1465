"""A training run's files, each written atomically: a crash mid-write never leaves a broken file behind.

In the run folder:
    model.safetensors, model_ema.safetensors   weights after the last epoch
    last.pth                                   training state after the last epoch (for --resume)
    recovery-E-B.pth                           training state after B batches of epoch E (--recovery-interval)
    checkpoint-E.safetensors                   the best `keep` epochs' weights (the EMA's when there is one)
    model_best.safetensors                     the best of them
Weights load with `timm.create_model(name, pretrained_cfg_overlay=dict(file=...))`. Training states hold
only tensors and plain values: they load with torch.load(weights_only=True).
"""
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from safetensors.torch import save_file

from ..ops import restore_choices
from .config import ConfigError
from .distributed import set_rng_state
from .engine import Progress

__all__ = ['Checkpointer', 'find_training_state', 'load_training_state', 'restore_training_state']

STATE_FORMAT = 'smpconv-models training state v1'


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, flushed to disk, then rename it over `path`."""
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        write(str(tmp))
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_weights(path: Path, state_dict: Mapping[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


class Checkpointer:
    """Writes a run's weights and training states, and keeps the `keep` best epochs by a metric."""

    def __init__(self, run_dir: Path, keep: int, metric: str, model_name: str):
        self.run_dir = run_dir
        self.keep = keep
        self.metric = metric
        self.lower_is_better = metric == 'loss'
        self.metadata = {'format': 'pt', 'architecture': model_name}
        self.best: List[Tuple[float, int]] = []  # (metric, epoch), best first

    def state_dict(self) -> Dict[str, Any]:
        return {'best': [list(entry) for entry in self.best]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best = [(metric, epoch) for metric, epoch in state['best']
                     if (self.run_dir / f'checkpoint-{epoch}.safetensors').exists()]

    def save_epoch(self, epoch: int, training_state: Dict[str, Any], model_state: Mapping[str, torch.Tensor],
                   ema_state: Optional[Mapping[str, torch.Tensor]], metric: float) -> None:
        """The end-of-epoch files: last weights and state, and the best-k ranking with this epoch's metric."""
        save_weights(self.run_dir / 'model.safetensors', model_state, self.metadata)
        if ema_state is not None:
            save_weights(self.run_dir / 'model_ema.safetensors', ema_state, self.metadata)
        ranked = self._rank(epoch, metric)
        if ranked:
            save_weights(self.run_dir / f'checkpoint-{epoch}.safetensors',
                         model_state if ema_state is None else ema_state, {**self.metadata, 'epoch': str(epoch)})
            if self.best[0][1] == epoch:
                _atomic_write(self.run_dir / 'model_best.safetensors', lambda tmp: shutil.copyfile(
                    self.run_dir / f'checkpoint-{epoch}.safetensors', tmp))
        self._save_state(self.run_dir / 'last.pth', {**training_state, 'checkpoints': self.state_dict()})
        for stale in self.run_dir.glob('recovery-*.pth'):
            stale.unlink()

    def save_recovery(self, epoch: int, batch: int, training_state: Dict[str, Any]) -> None:
        """A mid-epoch training state; the previous one is removed once this one is on disk."""
        previous = list(self.run_dir.glob('recovery-*.pth'))
        path = self.run_dir / f'recovery-{epoch}-{batch}.pth'
        self._save_state(path, {**training_state, 'checkpoints': self.state_dict()})
        for stale in previous:
            if stale != path:
                stale.unlink()

    def _rank(self, epoch: int, metric: float) -> bool:
        """Insert this epoch into the best-k list; False when it does not make the list."""
        # an epoch stopped by --max-updates and finished after a resume is ranked again, with its final metric
        others = [entry for entry in self.best if entry[1] != epoch]
        entries = sorted(others + [(metric, epoch)], key=lambda e: e[0], reverse=not self.lower_is_better)
        kept, dropped = entries[:self.keep], entries[self.keep:]
        for _, old_epoch in dropped:
            if old_epoch != epoch:
                (self.run_dir / f'checkpoint-{old_epoch}.safetensors').unlink(missing_ok=True)
        self.best = kept
        return any(e == epoch for _, e in kept)

    @staticmethod
    def _save_state(path: Path, state: Dict[str, Any]) -> None:
        _atomic_write(path, lambda tmp: torch.save({'format': STATE_FORMAT, **state}, tmp))


def find_training_state(path: str) -> Path:
    """A training state file, or the latest one of a run folder (a recovery state is newer than last.pth)."""
    resume = Path(path)
    if resume.is_dir():
        recoveries = sorted(resume.glob('recovery-*.pth'), key=lambda p: [int(n) for n in p.stem.split('-')[1:]])
        resume = recoveries[-1] if recoveries else resume / 'last.pth'
    if not resume.is_file():
        raise FileNotFoundError(f'no training state to resume at {path}')
    return resume


def load_training_state(path: Path) -> Dict[str, Any]:
    """Read a training state written by `Checkpointer` (restricted unpickler: no code runs)."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ConfigError(f'{path} is not a readable training state (truncated or corrupt?): {e}') from e
    if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
        raise ConfigError(f'{path} is not a training state of this package ({STATE_FORMAT!r}); '
                          'weights alone load with --pretrained / pretrained_cfg_overlay')
    return state


def _load_model_weights(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    result = module.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(f'the {what} weights of the training state do not fit this model: missing keys '
                          f'{result.missing_keys}, unexpected keys {result.unexpected_keys}')


# what a continued run must share with the one it continues: the data order, the batches an epoch is cut
# into, the optimizer's numerics
_RECIPE_KEYS = ('model', 'model_kwargs', 'global_batch_size', 'grad_accum_steps', 'seed', 'amp', 'amp_dtype',
                'model_ema')


def restore_training_state(state: Dict[str, Any], model: nn.Module, optimizer, ema, scaler,
                           checkpointer: Checkpointer, args, rank: int, world_size: int) -> Progress:
    """Put a run back where `state` left it; a state of another model or recipe is refused."""
    if state['model_name'] != args.model:
        raise ConfigError(f"the training state is from {state['model_name']}, this run trains {args.model}")
    saved = state['config']
    keys = _RECIPE_KEYS + (('batch_size',) if state['batches_done'] else ())  # mid-epoch: the same batches
    differ = [f'{k}: {saved.get(k)!r} then, {getattr(args, k)!r} now' for k in keys if saved.get(k) != getattr(args, k)]
    if differ:
        raise ConfigError('the training state comes from another recipe; to continue it, keep ' + '; '.join(differ))
    try:
        _load_model_weights(model, state['model'], 'model')
        if ema is not None:
            _load_model_weights(ema.module, state['model_ema'], 'EMA')
    except RuntimeError as e:  # shapes: another num_classes, model_kwargs, ...
        raise ConfigError(f'the training state does not fit this model: {e}') from e
    optimizer.load_state_dict(state['optimizer'])
    if scaler is not None:
        scaler.load_state_dict(state['scaler'])
    checkpointer.load_state_dict(state['checkpoints'])
    if len(state['rng']) == world_size:
        set_rng_state(state['rng'][rank])
        # the same depthwise backends as before, rather than new choices that round differently
        restore_choices(state.get('depthwise_backends', [{}] * world_size)[rank])
    else:
        warnings.warn(f"the training state comes from {len(state['rng'])} process(es), this run has {world_size}: "
                      'it continues with fresh random states, so not exactly as the original run would have')
    return Progress(epoch=state['epoch'], batches_done=state['batches_done'], num_updates=state['num_updates'])
