"""The run folders that `train_imagenet.py` writes: which is the latest, and what model a run trained."""
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import yaml

__all__ = ['latest_run', 'run_model_args']


def latest_run(output: Union[str, os.PathLike] = 'output/train') -> Optional[Tuple[Path, Path]]:
    """The config.yaml and weights (its EMA's when it has them) of the training run under `output` that wrote
    weights last, None when there is none."""
    runs = [config.parent for config in Path(output).glob('*/config.yaml')
            if (config.parent / 'model.safetensors').is_file()]
    if not runs:
        return None
    run = max(runs, key=lambda folder: (folder / 'model.safetensors').stat().st_mtime)
    weights = run / 'model_ema.safetensors'
    return run / 'config.yaml', weights if weights.is_file() else run / 'model.safetensors'


def run_model_args(config: Union[str, os.PathLike]) -> Tuple[str, Dict[str, Any]]:
    """The model and model arguments of a training run's config.yaml."""
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f'config file not found: {path}')
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict) or 'model' not in values:
        raise ValueError(f'{path} is not a training config: it names no model')
    return values['model'], dict(values.get('model_kwargs') or {})
