"""Exports for the Hugging Face Hub: safetensors weights, timm's config.json and a model card.

An export is what `timm.models.push_to_hf_hub` would upload, without the pickled copy of the weights and
with this package's model card: it loads with `timm.create_model('local-dir:<export>')`, and once
uploaded (`python -m smpconv_models.publish`) with `timm.create_model('hf-hub:<repo>')`.
"""
import copy
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import huggingface_hub
import torch
import torch.nn as nn
from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from timm.models import save_for_hf
from timm.models._builder import resolve_pretrained_cfg
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['HUB_ORG', 'LAYER_OPS', 'count_macs', 'export_for_hub', 'pretrained_weights_error']

# the Hugging Face Hub organisation of the converted weights
HUB_ORG = 'smpconv-models'

_CITATION = '''@inproceedings{kim2023smpconv,
  title={SMPConv: Self-moving Point Representations for Continuous Convolution},
  author={Kim, Sanghyeon and Park, Eunbyung},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2023},
}'''


# the operators of the layers: dense and depthwise convolutions, the resizing ones (a depthwise one samples its
# kernels from the points inside, which it counts), the classifier
LAYER_OPS = ('aten.convolution', 'smpconv.depthwise_conv2d', 'smpconv.resize_conv2d', 'smpconv.resize_conv2d_points',
             'aten.addmm')


def count_macs(model: nn.Module, input_size: Tuple[int, ...]) -> Dict[str, int]:
    """Multiply-accumulates of one forward pass by operator, counted by torch.utils.flop_counter (2 FLOPs per
    MAC) on the meta device: LAYER_OPS are the convolutions and the classifier, `aten.mm` the SMP kernel
    generation."""
    with FlopCounterMode(display=False) as counter:
        model(torch.empty((1, *input_size), device='meta'))
    return {str(op): flops // 2 for op, flops in counter.get_flop_counts()['Global'].items()}


def model_card(model: nn.Module, repo_id: str, source: str, top1: Optional[float] = None) -> str:
    """README.md of a Hub repo: metadata, what the weights are, how to load them, the paper."""
    name = model.pretrained_cfg['architecture']
    input_size = tuple(model.pretrained_cfg['input_size'])
    params = sum(p.numel() for p in model.parameters()) / 1e6
    macs = count_macs(copy.deepcopy(model).to('meta').eval(), input_size)
    gmacs = sum(macs.get(op, 0) for op in LAYER_OPS) / 1e9
    accuracy = f'- **ImageNet-1k top-1 (paper):** {top1}%\n' if top1 is not None else ''
    return f'''---
tags:
- image-classification
- timm
- smpconv
library_name: timm
license: mit
datasets:
- imagenet-1k
---
# {repo_id}

An SMPConv image classification model ({name}): a CNN whose large depthwise kernels are continuous functions
of a few learned self-moving points. Weights converted from {source}; they compute exactly what the
authors' code computes with the same weights. Needs the `smpconv-models` package, which registers the
SMPConv models with timm.

- **Model:** `{name}`, {params:.2f} M parameters, {gmacs:.3f} G MACs (convolutions and classifier) at
  {input_size[1]}x{input_size[2]}
{accuracy}- **Paper:** [SMPConv: Self-moving Point Representations for Continuous Convolution](https://arxiv.org/abs/2304.02330)
- **Authors' code:** https://github.com/sangnekim/SMPConv (MIT)

## Usage

```python
import timm
import torch
import smpconv_models  # registers the SMPConv models with timm

model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
with torch.no_grad():
    probabilities = model(transform(image).unsqueeze(0)).softmax(dim=-1)  # image: a PIL image
```

Without network access, `timm.create_model('local-dir:/path/to/a/copy/of/this/repo', pretrained=True)`.

## Citation

```bibtex
{_CITATION}
```
'''


def export_for_hub(model: nn.Module, out_dir: Path, repo_id: str, source: str,
                   top1: Optional[float] = None) -> Path:
    """Write `model.safetensors`, `config.json` and `README.md` of `model` into `out_dir`."""
    out_dir = Path(out_dir)
    save_for_hf(model, out_dir, safe_serialization=True)
    (out_dir / 'README.md').write_text(model_card(model, repo_id, source, top1))
    return out_dir


def pretrained_weights_error(variant: str, error: Exception, pretrained_cfg: Any = None,
                             pretrained_cfg_overlay: Optional[Dict[str, Any]] = None) -> OSError:
    """What to raise when the pretrained weights of `variant` (as `timm.create_model` resolves them) could not be
    read: where they come from, why they could not be had (offline, out of reach, missing), what to do instead."""
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay)
    if cfg.file:
        why = 'no such file' if not os.path.exists(cfg.file) else str(error) or type(error).__name__
        return OSError(f'the pretrained weights file of {variant}, {cfg.file}, could not be read: {why}')
    repo = f'the Hugging Face Hub repo {cfg.hf_hub_id}'
    if isinstance(error, LocalEntryNotFoundError):
        cache = huggingface_hub.constants.HF_HUB_CACHE
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            why = f'which is not in this machine\'s Hub cache ({cache}), and offline mode is on (HF_HUB_OFFLINE=1)'
        else:
            why = f'which could not be reached (no network, or the Hub is blocked) and is not in the Hub cache ' \
                  f'({cache})'
    elif isinstance(error, (RepositoryNotFoundError, RevisionNotFoundError)):
        why = 'which does not exist on the Hub (or is private)'
    elif isinstance(error, EntryNotFoundError):
        why = 'which holds no model.safetensors'
    else:
        why = f'which could not be read ({type(error).__name__}: {error})'
    return OSError(f'the pretrained weights of {variant} come from {repo}, {why}. Load a local copy instead: '
                   "timm.create_model('local-dir:/path/to/a/copy/of/the/repo', pretrained=True), or "
                   f"timm.create_model('{variant}', pretrained=True, "
                   "pretrained_cfg_overlay=dict(file='/path/to/weights'))")
