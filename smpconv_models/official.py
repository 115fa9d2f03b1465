"""The authors' checkpoint layout and its mapping onto this package's.

The official code (github.com/sangnekim/SMPConv, smp_imagenet/models/SMPConv.py) differs from ours in
key names and tensor shapes only; this is the one module that knows its names.
"""
import argparse
import os
import pickle
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import safetensors.torch
import torch
from safetensors import SafetensorError
from timm.models import clean_state_dict

from .smp import kernel_grid

__all__ = [
    'is_official_state_dict', 'convert_official_state_dict', 'official_model_args', 'load_checkpoint_file',
    'select_state_dict',
]

_OFFICIAL_MARKERS = ('.smp.conv.weight_coord', '.prelkb_bn.', '.preffn_bn.', 'transitions.')
_RENAMES = (
    (re.compile(r'^transitions\.(\d+)\.'), lambda m: f'stages.{int(m.group(1)) + 1}.downsample.'),
    (re.compile(r'\.(prelkb|preffn)_bn\.'), '.norm.'),
    (re.compile(r'^head\.'), 'head.fc.'),
    (re.compile(r'\.smp\.conv\.weight_coord$'), '.smp.conv.points.positions'),
    (re.compile(r'\.smp\.conv\.radius$'), '.smp.conv.points.radii'),
    (re.compile(r'\.smp\.conv\.weights$'), '.smp.conv.points.weights'),
    (re.compile(r'\.smp\.conv\.kernel_coord$'), '.smp.conv.points.grid'),
)


def is_official_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True when the keys follow the authors' layout rather than this package's."""
    return any(marker in key for key in state_dict for marker in _OFFICIAL_MARKERS)


def _official_grid_to_ours(kernel_coord: torch.Tensor) -> Optional[torch.Tensor]:
    """[1, 2, k, k] official grid -> our [2, k, k] node coordinates, or None when it is the exact grid."""
    # official node (i, j) holds (x, y) = (g[i], g[j]) and lands at row k-1-j, column i of the kernel
    grid = kernel_coord[0].transpose(-1, -2).flip(-2)
    nodes = kernel_grid(list(grid.shape[1:]), device=grid.device, dtype=grid.dtype)
    exact = torch.stack([c.expand(grid.shape[1:]) for c in nodes])
    return None if torch.equal(grid, exact) else grid.contiguous()


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename and reshape an official SMPConvNet state dict into this package's layout."""
    out = {}
    for key, value in state_dict.items():
        new_key = key
        for pattern, replace in _RENAMES:
            new_key = pattern.sub(replace, new_key)
        if new_key.endswith('.points.positions'):
            value = value.reshape(value.shape[-2:])  # [1, P, 2] -> [P, 2]
        elif new_key.endswith('.points.radii'):
            value = value.reshape(-1)  # [1, P, 1, 1] -> [P]
        elif new_key.endswith('.points.weights'):
            value = value.reshape(value.shape[-2:])  # [1, C, P] -> [C, P]
        elif new_key.endswith('.points.grid'):
            # timm's EMA averaged the constant grid buffer too: keep it only where it drifted
            value = _official_grid_to_ours(value)
            if value is None:
                continue
        out[new_key] = value
    return out


def official_model_args(
        large_kernel_sizes: Sequence[int],
        layers: Sequence[int],
        channels: Sequence[int],
        drop_path_rate: float = 0.,
        dw_ratio: float = 1,
        ffn_ratio: float = 4,
        in_channels: int = 3,
        num_classes: int = 1000,
        n_points_divide: int = 4,
        out_indices: Optional[Sequence[int]] = None,
        use_checkpoint: bool = False,
        use_sync_bn: bool = True,
        norm_intermediate_features: bool = False,
) -> Dict[str, Any]:
    """Translate the official `SMPConvNet` constructor arguments into this package's model args.

    Two official arguments are training-time choices that leave the model unchanged: `use_checkpoint`
    (gradient checkpointing: `model.set_grad_checkpointing()`) and `use_sync_bn` (SyncBatchNorm:
    `timm.layers.convert_sync_batchnorm()`, which keeps the activations fused into timm's norm layers).
    """
    if out_indices is not None or norm_intermediate_features:
        raise ValueError('out_indices / norm_intermediate_features build the official dense-prediction backbone; '
                         "create the classifier and use features_only=True or forward_intermediates() instead")
    if not num_classes:
        raise ValueError(f'the official classifier needs num_classes > 0, got {num_classes}')
    return dict(
        kernel_sizes=tuple(large_kernel_sizes),
        depths=tuple(layers),
        dims=tuple(channels),
        points_divisor=n_points_divide,
        ffn_ratio=ffn_ratio,
        dw_ratio=dw_ratio,
        in_chans=in_channels,
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
    )


def select_state_dict(checkpoint: Mapping[str, Any], use_ema: bool = True) -> Dict[str, Any]:
    """The model weights of a training checkpoint, its EMA weights first unless `use_ema=False` (the
    published accuracies are the EMA's); a plain state dict as it is."""
    keys = ('state_dict_ema', 'model_ema', 'state_dict', 'model') if use_ema else ('state_dict', 'model')
    for key in keys:
        if isinstance(checkpoint.get(key), Mapping):
            return clean_state_dict(checkpoint[key])
    return clean_state_dict(checkpoint)


def _unsafe_globals(path: str) -> List[str]:
    """The globals a pickled checkpoint would import beyond what the restricted unpickler admits."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, ValueError):
        return []
    return [name for name in names if name != 'argparse.Namespace']


def load_checkpoint_file(path: Union[str, os.PathLike], trust_pickle: bool = False,
                         use_ema: bool = True) -> Dict[str, Any]:
    """Read the model weights of a safetensors file or a PyTorch checkpoint (EMA weights when present, unless
    `use_ema=False`).

    Pickled checkpoints are read with torch's restricted unpickler (`weights_only=True`, which also admits
    the argparse Namespace that timm's CheckpointSaver stores): it cannot run code. A pickle that needs
    more is fully unpickled only with `trust_pickle=True`, since unpickling can run arbitrary code.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    if path.endswith('.safetensors'):
        try:
            return safetensors.torch.load_file(path)
        except SafetensorError as e:
            raise ValueError(f'{path} is not a readable safetensors file (truncated or corrupt?): {e}') from e
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location='cpu', weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        unsafe = _unsafe_globals(path)
        if not unsafe:
            raise ValueError(f'{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}') from e
        raise ValueError(
            f'{path} holds objects ({", ".join(unsafe)}) that only full unpickling can restore, and unpickling '
            'can run arbitrary code. Pass trust_pickle=True only if you trust this file.'
        ) from e
    except (RuntimeError, EOFError, KeyError, ValueError) as e:
        raise ValueError(f'{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}') from e
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not a state dict or a checkpoint dict')
    return select_state_dict(checkpoint, use_ema=use_ema)
