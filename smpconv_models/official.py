"""The authors' checkpoint layout and its mapping onto this package's.

The official code (github.com/sangnekim/SMPConv, smp_imagenet/models/SMPConv.py) differs from ours in
key names and tensor shapes only; this is the one module that knows its names.
"""
import re
from typing import Any, Dict, Mapping, Optional, Sequence

import torch

from .smp import kernel_grid

__all__ = ['is_official_state_dict', 'convert_official_state_dict', 'to_package_layout', 'official_model_args']

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


def to_package_layout(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """An official state dict converted to this package's layout; one of this package as it is."""
    if is_official_state_dict(state_dict):
        return convert_official_state_dict(state_dict)
    return dict(state_dict)


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
