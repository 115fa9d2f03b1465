"""Models by name or from a checkpoint, as `timm.create_model` builds them, with one-line errors."""
import os
from typing import Optional, Union

import timm
import torch.nn as nn
from timm.models import get_pretrained_cfg_value

from .checkpoint import load_weights, read_checkpoint, recorded_model, select_state_dict
from .official import to_package_layout

__all__ = ['create_model', 'create_from_checkpoint']


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
        checkpoint: Weights (safetensors), a training state of this package, or a timm or official checkpoint.
        model_name: A registered SMPConv model; needed when the checkpoint does not say.
        use_ema: The EMA weights of a checkpoint that has them.
        trust_pickle: See `read_checkpoint`.
        **model_kwargs: Passed to `timm.create_model`, over those the checkpoint records.
    """
    content = read_checkpoint(checkpoint, trust_pickle=trust_pickle)
    recorded_name, recorded_kwargs = recorded_model(content, checkpoint)
    if model_name is None and recorded_name is None:
        raise ValueError(f'{os.fspath(checkpoint)} does not say which model it holds: name the model '
                         "(e.g. --model smpconv_t, or a run's --config)")
    if model_name in (None, recorded_name):
        model_name, model_kwargs = recorded_name, {**recorded_kwargs, **model_kwargs}
    state_dict = to_package_layout(select_state_dict(content, use_ema=use_ema))
    if model_kwargs.get('num_classes') is None:
        classifier = state_dict.get(f"{get_pretrained_cfg_value(model_name, 'classifier')}.weight")
        model_kwargs['num_classes'] = 0 if classifier is None else classifier.shape[0]
    model = create_model(model_name, **model_kwargs)
    load_weights(model, state_dict, os.fspath(checkpoint))
    return model
