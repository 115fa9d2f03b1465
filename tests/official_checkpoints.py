"""Official-layout checkpoints with random weights, made from the manifests of the authors' state dicts,
and Hugging Face Hub caches to load exports from without a network."""
import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Dict, Tuple

import torch

OFFICIAL_DIR = Path(__file__).parent / 'data' / 'official'


def manifest(variant: str) -> dict:
    return json.loads((OFFICIAL_DIR / f'{variant}_state_dict_manifest.json').read_text())


def official_kwargs(variant: str) -> dict:
    """The official SMPConvNet constructor arguments of a published model."""
    layout = manifest(variant)
    defaults = {k: v for k, v in layout['defaults'].items() if k != 'small_kernel'}  # fixed at 5 officially
    return {**defaults, **layout['constructor']}


def official_grid(kernel_size: int) -> torch.Tensor:
    """The official `kernel_coord` buffer: meshgrid(linspace, linspace, 'ij'), [1, 2, k, k]."""
    axis = torch.linspace(-1, 1, kernel_size)
    return torch.stack(torch.meshgrid(axis, axis, indexing='ij'))[None]


def _random_value(key: str, shape, generator: torch.Generator) -> torch.Tensor:
    """A value of the kind the key holds, so that the network's outputs stay finite."""
    uniform = torch.rand(shape, generator=generator)
    if key.endswith('weight_coord'):
        return uniform * 2 - 1  # positions in [-1, 1]
    if key.endswith('radius'):
        return uniform * 0.2 + 0.05
    if key.endswith(('running_var', 'bn.weight', 'norm.weight', '_bn.weight')):
        return uniform + 0.5
    if len(shape) <= 1:  # biases, running means
        return torch.randn(shape, generator=generator) * 0.1
    return torch.randn(shape, generator=generator) * 0.02  # conv, linear and point weights


def manifest_state_dict(variant: str, device: str = 'meta', seed: int = 0) -> Dict[str, torch.Tensor]:
    """The official state dict's layout: meta tensors, or random weights on the CPU; the grid buffers are the
    real ones either way."""
    layout = manifest(variant)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout['state_dict'].items():
        dtype = getattr(torch, layout['dtypes'].get(key, 'float32'))
        if key.endswith('kernel_coord'):
            out[key] = official_grid(shape[-1])
        elif device == 'meta':
            out[key] = torch.empty(shape, device='meta', dtype=dtype)
        elif dtype.is_floating_point:
            out[key] = _random_value(key, shape, generator)
        else:
            out[key] = torch.zeros(shape, dtype=dtype)
    return out


def save_official_checkpoint(path: Path, variant: str, seed: int = 0) -> Tuple[Path, Dict[str, torch.Tensor]]:
    """A timm CheckpointSaver file as the authors published them, its EMA weights 1% off the raw ones."""
    weights = manifest_state_dict(variant, device='cpu', seed=seed)
    ema = {k: v if k.endswith('kernel_coord') or not v.is_floating_point() else v * 1.01 for k, v in weights.items()}
    torch.save({
        'epoch': 299, 'arch': variant, 'state_dict': weights, 'state_dict_ema': ema,
        'optimizer': {'state': {}, 'param_groups': []}, 'args': argparse.Namespace(model=variant, lr=4e-3),
        'version': 2, 'metric': 82.5,
    }, path)
    return path, ema


def add_to_hub_cache(cache_dir: Path, repo_id: str, export_dir: Path) -> None:
    """Lay out `export_dir` as huggingface_hub's cache would hold repo `repo_id` after a download."""
    commit = '0123456789abcdef0123456789abcdef01234567'
    repo_dir = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / 'refs').mkdir(parents=True, exist_ok=True)
    (repo_dir / 'refs' / 'main').write_text(commit)
    snapshot = repo_dir / 'snapshots' / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in ('model.safetensors', 'config.json'):
        target = snapshot / name
        if not target.exists():
            try:
                os.link(export_dir / name, target)
            except OSError:
                shutil.copyfile(export_dir / name, target)
