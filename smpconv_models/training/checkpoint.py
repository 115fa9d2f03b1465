"""A training run's files, each written atomically: a crash mid-write never leaves a broken file behind.

In the run folder:
    model.safetensors, model_ema.safetensors   weights after the last epoch
    last.pth                                   training state after the last epoch (for --resume)
    recovery-E-B.pth                           training state after B batches of epoch E (--recovery-interval)
    checkpoint-E.safetensors                   the best `keep` epochs' weights (the EMA's when there is one)
    model_best.safetensors                     the best of them
Weights load with `smpconv_models.create_from_checkpoint(file)` (their metadata name the model and its
arguments) or `timm.create_model(name, pretrained_cfg_overlay=dict(file=...))`. Training states hold only
tensors and plain values: they load with torch.load(weights_only=True).

A file is written to `.NAME.PID.tmp` and renamed: a crash leaves the previous file whole, and at worst a
temporary file, which the next run in the folder removes.
"""
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from accelerate.utils import gather_object
from safetensors.torch import save_file

from ..checkpoint import fit_problems, read_checkpoint
from ..ops import choices, restore_choices
from .config import ConfigError, plain
from .distributed import rng_state, set_rng_state
from .engine import Progress
from .settings import SavedBatch, recorded_img_size

__all__ = ['RESUME_AUTO', 'Checkpointer', 'remove_leftovers', 'resume_training_state', 'latest_training_state',
           'load_training_state', 'saved_world_size', 'saved_batch', 'epoch_batches', 'continued_batches', 'collect_training_state',
           'restore_training_state']

STATE_FORMAT = 'smpconv-models training state v1'

# the names of the files a run writes (see the module docstring), and of their temporary files
_RECOVERY = re.compile(r'recovery-(\d+)-(\d+)\.pth')
_WRITTEN = re.compile(r'(model|model_ema|model_best|checkpoint-\d+)\.safetensors|last\.pth|recovery-\d+-\d+\.pth')
_TEMPORARY = re.compile(r'\.(?P<name>.+)\.(?P<pid>\d+)\.tmp')


def _file_mode() -> int:
    """The permissions a new file gets from the process's umask (safetensors writes its files as 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, flushed to disk, then rename it over `path`."""
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        write(str(tmp))
        os.chmod(tmp, _file_mode())
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def remove_leftovers(run_dir: Path) -> List[Path]:
    """Delete the temporary files that killed processes left while writing this folder's files."""
    removed = []
    for path in run_dir.glob('.*.tmp'):
        match = _TEMPORARY.fullmatch(path.name)
        if match and _WRITTEN.fullmatch(match['name']) and not _process_alive(int(match['pid'])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def save_weights(path: Path, state_dict: Mapping[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


class Checkpointer:
    """Writes a run's weights and training states, and keeps the `keep` best epochs by a metric."""

    def __init__(self, run_dir: Path, keep: int, metric: str, model_name: str,
                 model_args: Optional[Mapping[str, Any]] = None, label_names: Optional[Sequence[str]] = None):
        self.run_dir = run_dir
        self.keep = keep
        self.metric = metric
        self.lower_is_better = metric == 'loss'
        # what `create_from_checkpoint` builds the weights' model from, and the names of its classes
        self.metadata = {'format': 'pt', 'architecture': model_name, 'model_args': json.dumps(plain(model_args or {}))}
        if label_names:
            self.metadata['label_names'] = json.dumps(list(label_names))
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
        for stale in self._recoveries():
            stale.unlink()

    def save_recovery(self, epoch: int, batch: int, training_state: Dict[str, Any]) -> None:
        """A mid-epoch training state; the previous one is removed once this one is on disk."""
        previous = self._recoveries()
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

    def _recoveries(self) -> List[Path]:
        return [p for p in self.run_dir.glob('recovery-*.pth') if _RECOVERY.fullmatch(p.name)]

    @staticmethod
    def _save_state(path: Path, state: Dict[str, Any]) -> None:
        _atomic_write(path, lambda tmp: torch.save({'format': STATE_FORMAT, **state}, tmp))


def load_training_state(path: Path, mmap: bool = False) -> Dict[str, Any]:
    """Read a training state written by `Checkpointer` (restricted unpickler: no code runs); `mmap` maps its
    tensors from the file instead of reading them."""
    try:
        state = read_checkpoint(path, mmap=mmap)
    except ValueError as e:
        raise ConfigError(f'{path} is not a readable training state (truncated or corrupt?): {e}') from e
    if state.get('format') != STATE_FORMAT:
        raise ConfigError(f'{path} is not a training state of this package ({STATE_FORMAT!r}); '
                          'weights alone load with --pretrained / pretrained_cfg_overlay')
    return state


RESUME_AUTO = 'auto'


def resume_training_state(resume: str, output: str, experiment: str) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The training state `--resume` names (`latest_training_state`), None for none. 'auto' names the run folder
    --output/--experiment when it holds one, and none (a fresh run in that folder) when it holds no training
    state: a command relaunched with it continues where its run stopped."""
    if resume != RESUME_AUTO:
        return latest_training_state(resume) if resume else None
    if not experiment:
        raise ConfigError('--resume auto continues the run of --experiment: name it (a run without a name gets a '
                          'new date-time folder each time)')
    run_dir = Path(output) / experiment
    if not _state_files(run_dir):
        return None
    return latest_training_state(str(run_dir))


def _state_files(run_dir: Path) -> List[Path]:
    """The training states a run wrote in `run_dir`."""
    return [p for p in [run_dir / 'last.pth', *run_dir.glob('recovery-*.pth')]
            if p.is_file() and (p.name == 'last.pth' or _RECOVERY.fullmatch(p.name))]


def latest_training_state(path: str) -> Tuple[Path, Dict[str, Any]]:
    """A training state file, or the one of a run folder that got furthest (last.pth, recovery-E-B.pth), with
    its content. Files the run did not write are ignored, and unreadable ones skipped with a warning."""
    resume = Path(path)
    if not resume.is_dir():
        if not resume.is_file():
            raise FileNotFoundError(f'no training state to resume at {path}')
        return resume, load_training_state(resume)
    candidates = _state_files(resume)
    states = []
    for candidate in candidates:
        try:  # mapped, not read: only the small pickled part of the file is looked at
            state = load_training_state(candidate, mmap=True)
            states.append(((state['epoch'], state['batches_done']), candidate))
        except ConfigError as e:
            warnings.warn(f'skipping {candidate}: {e}')
    if not states:
        raise FileNotFoundError(f'no readable training state to resume in {path}'
                                + (f' (unreadable: {", ".join(p.name for p in candidates)})' if candidates else ''))
    latest = max(states)[1]
    return latest, load_training_state(latest)


def _load_model_weights(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    problems = fit_problems(module, state_dict)
    if problems:
        raise ConfigError(f'the {what} weights of the training state do not fit this model: ' + '; '.join(problems))
    module.load_state_dict(state_dict)


# what a continued run must share with the one it continues: the data order, the batches an epoch is cut
# into, the optimizer's numerics (on as many processes: the same accumulation too)
_RECIPE_KEYS = ('model', 'model_kwargs', 'global_batch_size', 'seed', 'amp', 'amp_dtype', 'model_ema')


def saved_world_size(state: Mapping[str, Any]) -> int:
    """The number of processes whose run saved `state` (one random state each, in states from before it was
    recorded)."""
    return state.get('world_size', len(state['rng']))


def saved_batch(state: Mapping[str, Any]) -> SavedBatch:
    """The batches of the run that saved `state`."""
    config = state['config']
    return SavedBatch(config['batch_size'], config['global_batch_size'], saved_world_size(state))


def epoch_batches(state: Mapping[str, Any], world_size: int) -> Optional[int]:
    """The batches per process of an epoch of the run that saved `state`, on `world_size` processes: its samples
    per epoch, so that an epoch has as many updates as before; None for a state from before states said."""
    if 'batches_per_epoch' not in state:
        return None
    return state['batches_per_epoch'] * saved_world_size(state) // world_size


def continued_batches(batches_done: int, saved_world_size: int, world_size: int) -> int:
    """The batches per process of an epoch that `world_size` processes have done once `saved_world_size`
    processes did `batches_done`, batches of one size: the same samples of the epoch's order seen (each process
    takes every world_size-th of them)."""
    samples = batches_done * saved_world_size
    if samples % world_size:
        raise ConfigError(f'{batches_done} batches on each of {saved_world_size} processes are no whole number of '
                          f'batches on each of {world_size}: resume on {saved_world_size} processes')
    return samples // world_size


def collect_training_state(model: nn.Module, ema, optimizer, scaler, progress: Progress,
                           batches_per_epoch: int, config: Mapping[str, Any]) -> Dict[str, Any]:
    """Everything --resume needs of a run of the resolved `config`; called on every process (it gathers their
    random states and depthwise backend choices)."""
    rng = gather_object([rng_state()])
    return dict(
        model_name=config['model'], model=model.state_dict(),
        model_ema=ema.module.state_dict() if ema is not None else None, optimizer=optimizer.state_dict(),
        scaler=scaler.state_dict() if scaler is not None else None,
        epoch=progress.epoch, batches_done=progress.batches_done, num_updates=progress.num_updates,
        batches_per_epoch=batches_per_epoch, world_size=len(rng), rng=rng, depthwise_backends=gather_object([choices()]), config=dict(config))


def _as_recorded_now(saved: Mapping[str, Any], config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A saved recipe as runs record it since they give a model that adapts to the input size its training input
    size as `img_size`: a run from before built it without, which at that size and a fixed resize factor (no
    dynamic_img_size) is the same network."""
    then, now = dict(saved.get('model_kwargs') or {}), dict(config['model_kwargs'] or {})
    if 'img_size' in then or 'img_size' not in now or then.get('dynamic_img_size') or \
            saved.get('input_size') is None or plain(saved['input_size']) != plain(config['input_size']) or \
            plain(now['img_size']) != plain(recorded_img_size(config['input_size'])):
        return saved
    return {**saved, 'model_kwargs': {**then, 'img_size': now['img_size']}}


def restore_training_state(state: Dict[str, Any], model: nn.Module, optimizer, ema, scaler,
                           checkpointer: Checkpointer, config: Mapping[str, Any], rank: int,
                           world_size: int) -> Progress:
    """Put a run of the resolved `config` back where `state` left it; a state of another model or recipe is
    refused. On another number of processes (`resolve_training_config` keeps the global batch) the epoch
    continues after the samples seen, each process with fresh random states."""
    if state['model_name'] != config['model']:
        raise ConfigError(f"the training state is from {state['model_name']}, this run trains {config['model']}")
    saved = _as_recorded_now(state['config'], config)
    same_world = saved_world_size(state) == world_size
    keys = _RECIPE_KEYS + (('grad_accum_steps',) if same_world else ()) + (
        ('batch_size',) if state['batches_done'] else ())  # mid-epoch: the same batches
    # tuples and lists alike: a config file holds lists, a --model-kwargs value may be a tuple
    differ = [f'{k}: {saved.get(k)!r} then, {config[k]!r} now' for k in keys
              if plain(saved.get(k)) != plain(config[k])]
    if differ:
        raise ConfigError('the training state comes from another recipe; to continue it, keep ' + '; '.join(differ))
    batches_done = continued_batches(state['batches_done'], saved_world_size(state), world_size)
    _load_model_weights(model, state['model'], 'model')
    if ema is not None:
        _load_model_weights(ema.module, state['model_ema'], 'EMA')
    optimizer.load_state_dict(state['optimizer'])
    if scaler is not None:
        scaler.load_state_dict(state['scaler'])
    checkpointer.load_state_dict(state['checkpoints'])
    if same_world:
        set_rng_state(state['rng'][rank])
    # the same depthwise backends as before (the batch per process is the same), rather than new choices that
    # round differently
    backends = state.get('depthwise_backends', [])
    if backends:
        restore_choices(backends[rank % len(backends)])
    return Progress(epoch=state['epoch'], batches_done=batches_done, num_updates=state['num_updates'])
