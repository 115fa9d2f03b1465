"""Regenerates mfcc_reference.safetensors: torchaudio's MFCC of two test clips, as the authors' Speech Commands
model takes them. torchaudio has no release for this package's PyTorch; run it where both are installed, e.g.

    python3 -m venv /tmp/ta && /tmp/ta/bin/pip install torch==2.9.1 'torchaudio==2.9.*' numpy safetensors
    /tmp/ta/bin/python tests/data/torchaudio/make_mfcc_reference.py

(made with torch 2.9.1 and torchaudio 2.9.1). tests/test_tasks.py makes the same clips with `clips()`.
"""
from pathlib import Path

import numpy as np
import torch


def clips() -> torch.Tensor:
    """Two 1 s clips at 16 kHz: a rising chirp with noise, and noise alone."""
    generator = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    chirp = 0.5 * np.sin(2 * np.pi * (300 + 2000 * t) * t) + 0.05 * generator.standard_normal(16000)
    return torch.from_numpy(np.stack([chirp, 0.1 * generator.standard_normal(16000)]).astype(np.float32))


if __name__ == '__main__':
    import torchaudio
    from safetensors.torch import save_file

    transform = torchaudio.transforms.MFCC(log_mels=True, n_mfcc=20, melkwargs=dict(n_fft=200, n_mels=64))
    save_file({'mfcc': transform(clips()).contiguous()}, Path(__file__).with_name('mfcc_reference.safetensors'),
              metadata={'torch': torch.__version__, 'torchaudio': torchaudio.__version__})
