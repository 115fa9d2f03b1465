"""Models by name or from a checkpoint (this package's, timm's or the authors'), with one-line errors."""
import os
from typing import Any, Dict, Mapping, Optional, Union

import timm
import torch.nn as nn
from timm.models import get_pretrained_cfg_value

from .checkpoint import (load_weights, read_checkpoint, read_source, recorded_label_names, recorded_model,
                         select_state_dict)
from .models import SMPConvNet, SMPConvResNet, SMPConvTCN
from .official import (convert_official_ckconv_state_dict, convert_official_state_dict, is_official_state_dict,
                       official_ckconv_model_args, official_model_args, to_package_layout)

__all__ = ['create_model', 'create_from_checkpoint', 'from_official', 'from_official_ckconv']

Checkpoint = Union[str, os.PathLike, Mapping[str, Any]]


def create_model(model_name: str, **kwargs) -> nn.Module:
    """`timm.create_model` for the SMPConv models, with a one-line error that lists them for any other name."""
    architecture = model_name.split('.')[0]
    if ':' not in model_name and architecture not in timm.list_models('smpconv*'):
        raise ValueError(f"unknown model '{model_name}': one of {', '.join(timm.list_models('smpconv*'))}")
    return timm.create_model(model_name, **kwargs)


def create_from_checkpoint(
        checkpoint: Union[str, os.PathLike],
        model_name: Optional[str] = None,
        *,
        use_ema: bool = True,
        trust_pickle: bool = False,
        **model_kwargs,
) -> nn.Module:
    """A model with a checkpoint's weights, as `timm.create_model` builds it.

    The architecture and model arguments are those given, else those the checkpoint records (`recorded_model`:
    a training state, or the weights a training run writes); the number of classes is its classifier's.

    Args:
        checkpoint: Weights (safetensors), a training state of this package, a timm checkpoint or an official
            ImageNet one (the authors' sequence and CIFAR-10 checkpoints load with `from_official_ckconv`).
        model_name: A registered SMPConv model; needed when the checkpoint does not say.
        use_ema: The EMA weights of a checkpoint that has them.
        trust_pickle: See `read_checkpoint`.
        **model_kwargs: Passed to `timm.create_model`, over those the checkpoint records.
    """
    content = read_checkpoint(checkpoint, trust_pickle=trust_pickle)
    state_dict = to_package_layout(select_state_dict(content, use_ema=use_ema), os.fspath(checkpoint))
    recorded_name, recorded_kwargs = recorded_model(content, checkpoint)
    if model_name is None and recorded_name is None:
        raise ValueError(f'{os.fspath(checkpoint)} does not say which model it holds: name the model '
                         "(e.g. --model smpconv_t, or a run's --config)")
    if model_name in (None, recorded_name):
        model_name, model_kwargs = recorded_name, {**recorded_kwargs, **model_kwargs}
    if model_kwargs.get('num_classes') is None:
        classifier = state_dict.get(f"{get_pretrained_cfg_value(model_name, 'classifier')}.weight")
        model_kwargs['num_classes'] = 0 if classifier is None else classifier.shape[0]
    model = create_model(model_name, **model_kwargs)
    load_weights(model, state_dict, os.fspath(checkpoint))
    label_names = recorded_label_names(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else None
    if label_names:  # where timm keeps the names of a model's classes
        model.pretrained_cfg = {**model.pretrained_cfg, 'label_names': label_names}
    return model


def from_official(checkpoint: Checkpoint, *, trust_pickle: bool = False, **official_kwargs) -> SMPConvNet:
    """Build the model the authors' `SMPConvNet(**official_kwargs)` describes and load its weights.

    Args:
        checkpoint: An official state dict or training checkpoint (its `state_dict_ema` is used when
            present), or the path of one (safetensors, or a PyTorch file: see `trust_pickle`).
        trust_pickle: Fully unpickle a PyTorch file that the restricted unpickler refuses. Only for files
            you trust: unpickling can run arbitrary code.
        **official_kwargs: The official constructor arguments (`large_kernel_sizes`, `layers`, `channels`,
            `ffn_ratio`, `dw_ratio`, `n_points_divide`, `num_classes`, `in_channels`, `use_checkpoint`, ...).
    """
    content, source = read_source(checkpoint, trust_pickle)
    state_dict = select_state_dict(content)
    if not is_official_state_dict(state_dict):
        raise ValueError(f'{source} is not in the official SMPConv layout; load checkpoints of this package '
                         f'with create_model(..., pretrained_cfg_overlay=dict(file=...)) or load_state_dict()')
    model = SMPConvNet(**official_model_args(**official_kwargs))
    load_weights(model, convert_official_state_dict(state_dict), source)
    model.set_grad_checkpointing(official_kwargs.get('use_checkpoint', False))
    return model


def from_official_ckconv(
        checkpoint: Checkpoint,
        *,
        in_channels: int,
        out_channels: int,
        net: Dict[str, Any],
        kernel: Dict[str, Any],
        conv: Dict[str, Any],
        sequence_length: Optional[int] = None,
        trust_pickle: bool = False,
) -> Union[SMPConvTCN, SMPConvResNet]:
    """Build the model the authors' `SeqData_TCN` or `Img_ResNet` describes and load its weights.

    Args:
        checkpoint: An official state dict or checkpoint (its 'model' entry, as the authors' trainer saves it), or
            the path of one (safetensors, or a PyTorch file read with the restricted unpickler).
        in_channels, out_channels: The official constructor's arguments.
        net, kernel, conv: The authors' config groups (`cfg/config.yaml` merged with a training command's
            overrides), as dicts.
        sequence_length: The kernel length of `conv['horizon'] = 'same'` ('full': twice it, minus one) where the
            checkpoint does not record it (its `train_length` buffers do once the model has run).
        trust_pickle: Unpickle fully a PyTorch file that the restricted unpickler refuses (it can run code).
    """
    content, source = read_source(checkpoint, trust_pickle)
    state_dict, lengths = convert_official_ckconv_state_dict(select_state_dict(content))
    model_class, model_args = official_ckconv_model_args(in_channels, out_channels, net, kernel, conv,
                                                         recorded_lengths=lengths, sequence_length=sequence_length)
    model = SMPConvTCN(**model_args) if model_class == 'TCN' else SMPConvResNet(**model_args)
    load_weights(model, state_dict, source)
    return model
