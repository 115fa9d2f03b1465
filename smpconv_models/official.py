"""The authors' checkpoint layout and its mapping onto this package's.

The official code (github.com/sangnekim/SMPConv, smp_imagenet/models/SMPConv.py) differs from ours in
key names and tensor shapes only; this is the one module that knows its names.
"""
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .smp import kernel_grid

__all__ = ['is_official_state_dict', 'convert_official_state_dict', 'to_package_layout', 'official_model_args',
           'convert_official_ckconv_state_dict', 'official_ckconv_model_args']

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


def to_package_layout(state_dict: Mapping[str, Any], source: str = 'the state dict') -> Dict[str, Any]:
    """An official ImageNet state dict converted to this package's layout; one of this package as it is; an error
    for an official sequence / CIFAR-10 one, whose architecture only the authors' config groups describe."""
    if is_official_state_dict(state_dict):
        return convert_official_state_dict(state_dict)
    if is_official_ckconv_state_dict(state_dict):
        raise ValueError(f"{source} is an authors' sequence or CIFAR-10 checkpoint (SeqData_TCN / Img_ResNet), "
                         'whose architecture only their config describes: load it with smpconv_models.'
                         'from_official_ckconv(checkpoint, in_channels=..., out_channels=..., net=..., kernel=..., '
                         "conv=...), given the config groups of its training run (cfg/config.yaml and the command's "
                         'overrides)')
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


# ---- the authors' sequence and CIFAR-10 networks (smp/models/cktcn.py, ckresnet.py, residual_block.py) ------

_CK_MARKERS = ('.Kernel.weight_coord', 'finallyr.', 'out_layer.')
_CK_RENAMES = (
    (re.compile(r'^backbone\.'), 'blocks.'),
    # the CIFAR-10 stem: the parts of the ResNet outside its blocks
    (re.compile(r'^cconv1\.'), 'stem.cconv1.'), (re.compile(r'^cconv1s\.'), 'stem.cconv1s.'),
    (re.compile(r'^norm1\.'), 'stem.norm1.'), (re.compile(r'^norm1s\.'), 'stem.norm1s.'),
    # within a block (or the stem): conv1/conv2 hold each a pair of parallel kernels with their norms
    (re.compile(r'\.cconv([12])\.Kernel\.weight_coord$'), r'.conv\1.large.points.positions'),
    (re.compile(r'\.cconv([12])\.Kernel\.radius$'), r'.conv\1.large.points.radii'),
    (re.compile(r'\.cconv([12])\.Kernel\.weights$'), r'.conv\1.large.points.weights'),
    (re.compile(r'\.cconv([12])\.bias$'), r'.conv\1.large.bias'),
    (re.compile(r'\.cconv([12])s\.'), r'.conv\1.small.'),
    (re.compile(r'\.norm([12])\.'), r'.conv\1.large_norm.'),
    (re.compile(r'\.norm([12])s\.'), r'.conv\1.small_norm.'),
    (re.compile(r'\.shortcut\.0\.'), '.shortcut.'),
    (re.compile(r'^(finallyr|out_layer)\.'), 'head.fc.'),
    (re.compile(r'^stem\.conv1\.'), 'stem.'),  # the stem is one pair of parallel kernels
)


def is_official_ckconv_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True when the keys follow the authors' sequence / CIFAR-10 layout."""
    return any(marker in key for key in state_dict for marker in _CK_MARKERS)


def convert_official_ckconv_state_dict(state_dict: Mapping[str, torch.Tensor]
                                       ) -> Tuple[Dict[str, torch.Tensor], List[int]]:
    """Rename and reshape an official SeqData_TCN / Img_ResNet state dict into this package's layout; also
    return the kernel lengths its `train_length` buffers record (0 where the model never ran)."""
    if not is_official_ckconv_state_dict(state_dict):
        raise ValueError("not an official SMPConv sequence or CIFAR-10 state dict: none of its keys is an "
                         "official one (…Kernel.weight_coord, finallyr.…, out_layer.…)")
    out, lengths = {}, []
    for key, value in state_dict.items():
        if key.endswith('.train_length'):
            lengths.append(int(value.reshape(-1)[0]))
            continue
        new_key = key
        for pattern, replace in _CK_RENAMES:
            new_key = pattern.sub(replace, new_key)
        if new_key.endswith('.points.radii'):
            value = value.reshape(value.shape[:2])  # [O, P, 1(, 1)] -> [O, P]
        elif new_key == 'head.fc.weight' and value.dim() == 4:
            value = value.reshape(value.shape[:2])  # the ResNet's 1x1 convolution -> a linear layer
        out[new_key] = value
    return out, lengths


_CK_CONFIG = {
    'net': ('type', 'no_hidden', 'no_blocks', 'dropout', 'dropout_in', 'norm', 'nonlinearity',
            'block_width_factors'),
    'kernel': ('dim_linear', 'n_points', 'radius', 'coord_std'),
    'conv': ('type', 'use_fft', 'bias', 'padding', 'stride', 'horizon', 'cache', 'small_kernel_size'),
}


def _expand_width_factors(factors: Sequence[float], depth: int) -> Optional[List[float]]:
    """The authors' `block_width_factors`: [0.0] for all 1, else (factor, count) pairs."""
    factors = list(factors)
    if factors[0] == 0.:
        return None
    if len(factors) % 2:
        raise ValueError(f'net.block_width_factors takes (factor, count) pairs, got {factors}')
    expanded = [float(f) for f, count in zip(factors[::2], factors[1::2]) for _ in range(int(count))]
    if len(expanded) != depth:
        raise ValueError(f'net.block_width_factors {factors} gives {len(expanded)} blocks, net.no_blocks is {depth}')
    return expanded


def _kernel_length(horizon: Any, recorded: Sequence[int], sequence_length: Optional[int]) -> int:
    """The kernel length of the authors' `conv.horizon`: an odd number, or 'same' / 'full' of the sequence the
    model first ran on, which the checkpoint's `train_length` buffers record."""
    if isinstance(horizon, str) and horizon not in ('same', 'full') and not horizon.isdigit():
        raise ValueError(f"conv.horizon takes 'same', 'full' or an odd number, got {horizon!r}")
    if horizon not in ('same', 'full'):
        if int(horizon) % 2 == 0:
            raise ValueError(f'conv.horizon must be odd (the authors\' code refuses even ones), got {horizon}')
        return int(horizon)
    known = sorted({length for length in recorded if length})
    if len(known) > 1:
        raise ValueError(f'the checkpoint records kernel lengths {known}: one model has one')
    if known:
        return known[0]
    if sequence_length is None:
        raise ValueError(f"conv.horizon={horizon!r} takes the kernel length from the first sequence the model ran "
                         "on, which this checkpoint does not record: pass sequence_length")
    return sequence_length if horizon == 'same' else 2 * sequence_length - 1


def official_ckconv_model_args(in_channels: int, out_channels: int, net: Mapping[str, Any],
                               kernel: Mapping[str, Any], conv: Mapping[str, Any], recorded_lengths: Sequence[int] = (),
                               sequence_length: Optional[int] = None) -> Tuple[str, Dict[str, Any]]:
    """Translate the authors' config groups into ('TCN' or 'ResNet', this package's model args).

    Settings that leave the model unchanged are accepted and left aside: `net.dropout_in` (the trainer drops
    inputs out), `conv.use_fft` (the convolution takes the faster of its FFT and direct paths; both compute the
    same, except that the authors' FFT path is wrong for odd sequence lengths), `conv.padding`, `conv.cache`.
    """
    for group, values in (('net', net), ('kernel', kernel), ('conv', conv)):
        unknown = sorted(set(values) - set(_CK_CONFIG[group]))
        if unknown:
            raise ValueError(f'{group} has keys the authors\' config does not: {", ".join(unknown)} '
                             f'(it has {", ".join(_CK_CONFIG[group])})')
    if net.get('type') not in ('TCN', 'ResNet'):
        raise ValueError(f"net.type takes 'TCN' or 'ResNet', got {net.get('type')!r}")
    ndim = 1 if net['type'] == 'TCN' else 2
    if kernel.get('dim_linear', ndim) != ndim:
        raise ValueError(f"kernel.dim_linear of a {net['type']} is {ndim}, got {kernel['dim_linear']}")
    if conv.get('type', 'CKConv') != 'CKConv':
        raise ValueError(f"conv.type {conv['type']!r} is not an SMP kernel: only 'CKConv' builds one")
    if conv.get('stride', 1) != 1:
        raise ValueError(f"conv.stride is 1 in the authors' models, got {conv['stride']}")
    depth = int(net['no_blocks'])
    norms = {'BatchNorm': 'batchnorm', 'LayerNorm': 'layernorm'}
    acts = {'ReLU': 'relu', 'LeakyReLU': 'leaky_relu'}
    if net.get('norm', 'BatchNorm') not in norms:
        raise ValueError(f"net.norm takes {' or '.join(norms)}, got {net['norm']!r}")
    if net.get('nonlinearity', 'ReLU') not in acts:
        raise ValueError(f"net.nonlinearity takes {' or '.join(acts)}, got {net['nonlinearity']!r}")
    args = dict(
        in_chans=in_channels,
        num_classes=out_channels,
        depth=depth,
        width=int(net['no_hidden']),
        width_factors=_expand_width_factors(net.get('block_width_factors', [0.]), depth),
        kernel_size=_kernel_length(conv.get('horizon', 'same'), recorded_lengths, sequence_length),
        num_points=int(kernel['n_points']),
        radius=float(kernel['radius']),
        position_std=float(kernel['coord_std']),
        small_kernel_size=int(conv['small_kernel_size']),
        conv_bias=bool(conv.get('bias', False)),
        norm=norms[net.get('norm', 'BatchNorm')],
        act=acts[net.get('nonlinearity', 'ReLU')],
        dropout=float(net.get('dropout', 0.)),
    )
    return net['type'], args
