"""Checkpoint files in, weights out: the one place that reads checkpoint files and loads their weights.

A file is read one way: safetensors (tensors only), or a PyTorch pickle through torch's restricted unpickler
(`weights_only=True`), which cannot run code and admits, besides tensors and plain values, exactly the
`argparse.Namespace` that timm's CheckpointSaver (and so the authors' checkpoints) store next to the weights.
A pickle that needs more is unpickled fully only when the caller trusts it explicitly, and the globals that
made it necessary are named. The weights of a checkpoint are picked one way (`select_state_dict`: the EMA's
first, as the published accuracies are the EMA's), and loaded one way (`load_weights`: every key, or an
error naming each missing, unexpected and differently shaped one). Building a model from a checkpoint is
`factory.create_from_checkpoint`'s.
"""
import argparse
import json
import logging
import os
import pickle
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import safetensors
import safetensors.torch
import torch
import torch.nn as nn
from timm.models import clean_state_dict

from .official import to_package_layout

__all__ = ['read_checkpoint', 'read_source', 'select_state_dict', 'fit_problems', 'load_weights', 'load_checkpoint',
           'recorded_model', 'recorded_label_names']

_logger = logging.getLogger(__name__)

# what the restricted unpickler admits beyond tensors and plain values: the training arguments that timm's
# CheckpointSaver stores in every checkpoint, the authors' included
SAFE_GLOBALS = [argparse.Namespace]

CheckpointSource = Union[str, os.PathLike]

# state that a checkpoint may hold or not: the grid an SMP kernel took over from an official checkpoint
_OPTIONAL_SUFFIXES = ('.points.grid',)


def _unsafe_globals(path: str) -> List[str]:
    """The globals a pickle would import beyond what the restricted unpickler admits."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, ValueError):
        return []
    admitted = {f'{g.__module__}.{g.__qualname__}' for g in SAFE_GLOBALS}
    return [name for name in names if name not in admitted]


def read_checkpoint(path: CheckpointSource, trust_pickle: bool = False, mmap: bool = False) -> Dict[str, Any]:
    """The content of a checkpoint file: a safetensors file's tensors, or the mapping a PyTorch file holds.

    Args:
        path: A `.safetensors` file, or a PyTorch file (`.pth`, `.pth.tar`, `.bin`, ...).
        trust_pickle: Unpickle fully a PyTorch file that the restricted unpickler refuses. Only for files you
            trust: unpickling can run arbitrary code. The restricted unpickler is always tried first.
        mmap: Map a PyTorch file's tensors from the file instead of reading them, for a cheap look inside.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    if path.endswith('.safetensors'):
        try:
            return safetensors.torch.load_file(path)
        except safetensors.SafetensorError as e:
            raise ValueError(f'{path} is not a readable safetensors file (truncated or corrupt?): {e}') from e
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        unsafe = _unsafe_globals(path)
        if not unsafe:
            raise ValueError(f'{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}') from e
        if not trust_pickle:
            raise ValueError(
                f'{path} holds objects ({", ".join(unsafe)}) that only full unpickling can restore, and unpickling '
                'can run arbitrary code. Pass trust_pickle=True (--trust-pickle) only if you trust this file.'
            ) from e
        _logger.warning(f'{path}: unpickled fully, as trusted, for {", ".join(unsafe)}, which the restricted '
                        'unpickler does not admit')
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    except (RuntimeError, EOFError, KeyError, ValueError) as e:
        raise ValueError(f'{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}') from e
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not a state dict or a checkpoint dict')
    return dict(checkpoint)


def select_state_dict(checkpoint: Mapping[str, Any], use_ema: bool = True) -> Dict[str, Any]:
    """The model weights of a checkpoint: of a training checkpoint (timm's, the authors', this package's
    training state) its EMA weights first unless `use_ema=False`, then its raw ones; a plain state dict as it is."""
    keys = ('state_dict_ema', 'model_ema', 'state_dict', 'model') if use_ema else ('state_dict', 'model')
    for key in keys:
        if isinstance(checkpoint.get(key), Mapping):
            return clean_state_dict(checkpoint[key])
    return clean_state_dict(dict(checkpoint))


def _optional(key: str) -> bool:
    return key.endswith(_OPTIONAL_SUFFIXES)


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + '.') for p in prefixes)


def _listing(keys: List[str], limit: int = 10) -> str:
    """Keys named one by one, up to `limit` of them: a whole other architecture would miss hundreds."""
    more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def fit_problems(model: nn.Module, state_dict: Mapping[str, Any], ignore: Iterable[str] = (),
                 shapes: bool = True) -> List[str]:
    """What stops `state_dict` from loading into `model` completely: its missing and unexpected keys and, with
    `shapes`, those whose shapes differ; keys under the module names in `ignore` are left out."""
    ignore = tuple(ignore)
    expected = {k: v for k, v in model.state_dict().items() if not _optional(k) and not _under(k, ignore)}
    given = {k: v for k, v in state_dict.items() if not _optional(k) and not _under(k, ignore)}
    problems = []
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing:
        problems.append(f'missing keys: {_listing(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {_listing(unexpected)}')
    if shapes:
        differ = [f'{k} {tuple(given[k].shape)} {tuple(v.shape)}' for k, v in expected.items()
                  if k in given and tuple(given[k].shape) != tuple(v.shape)]
        if differ:
            problems.append(f'shapes that differ (checkpoint, model): {_listing(differ)}')
    return problems


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every weight of `model` from `state_dict`, or raise a ValueError that names the source and each
    missing, unexpected and differently shaped key."""
    problems = fit_problems(model, state_dict)
    if problems:
        raise ValueError(f'{source} does not fit the model: ' + '; '.join(problems))
    model.load_state_dict(state_dict)


def read_source(checkpoint: Union[CheckpointSource, Mapping[str, Any]], trust_pickle: bool = False
                ) -> Tuple[Dict[str, Any], str]:
    """The content of a checkpoint given as a file or as read from one, and how to name it in errors."""
    if isinstance(checkpoint, Mapping):
        return dict(checkpoint), 'the checkpoint'
    return read_checkpoint(checkpoint, trust_pickle=trust_pickle), os.fspath(checkpoint)


def load_checkpoint(
        model: nn.Module,
        checkpoint: Union[CheckpointSource, Mapping[str, Any]],
        use_ema: bool = True,
        trust_pickle: bool = False,
) -> None:
    """Load a checkpoint into `model`: weights (safetensors), a training state of this package, a timm or an
    official checkpoint, as a file or as read from one; the EMA weights when it has them, unless `use_ema=False`."""
    content, source = read_source(checkpoint, trust_pickle)
    load_weights(model, to_package_layout(select_state_dict(content, use_ema=use_ema), source), source)


def recorded_label_names(path: CheckpointSource) -> Optional[Tuple[str, ...]]:
    """The class names the weights file a training run writes records (in its metadata), None when it does not."""
    if not os.fspath(path).endswith('.safetensors'):
        return None
    with safetensors.safe_open(os.fspath(path), 'pt') as f:
        names = (f.metadata() or {}).get('label_names')
    return None if names is None else tuple(json.loads(names))


def recorded_model(checkpoint: Mapping[str, Any], path: Optional[CheckpointSource] = None
                   ) -> Tuple[Optional[str], Dict[str, Any]]:
    """The architecture and model arguments a checkpoint records, (None, {}) when it does not say: a training
    state of this package records its run's, and so do the weights files a run writes (in their metadata)."""
    if isinstance(checkpoint.get('model_name'), str):  # a training state
        return checkpoint['model_name'], dict((checkpoint.get('config') or {}).get('model_kwargs') or {})
    if path is not None and os.fspath(path).endswith('.safetensors'):
        with safetensors.safe_open(os.fspath(path), 'pt') as f:
            metadata = f.metadata() or {}
        if 'architecture' in metadata:
            return metadata['architecture'], json.loads(metadata.get('model_args', '{}'))
    return None, {}
