"""Sampling SMP kernels of points per filter on CPUs, a C++ extension (csrc/sampling_cpu.cpp, built by `native`):
the sequence and CIFAR-10 models' kernels, each point evaluated only at the nodes its radius reaches.

    kernel[f, i, y, x] = sum_p weights[f, i, p] relu(1 - (|px[f, p] - nodes_x[x]| + |py[f, p] - nodes_y[y]|)
                                                        / radii[f, p])      (normalized as smp.py's eq. (1))

`sample` gives the kernel, `grad` its adjoints in the positions, radii and weights, for float32 and float64, by sums
over the nodes each point reaches (each summed by one thread: the same bits on any number of threads) or, where the
points reach much of the grid, one batched matrix product. The nodes must be evenly spaced (a grid's linspace, or a
single node). Where the extension cannot be built (no compiler, say), `available` warns once and answers False, and
`SMPKernel` samples with PyTorch's operations over the whole box.
"""
from typing import Optional, Tuple

import torch

from .native import NativeExtension

__all__ = ['available', 'sample', 'grad']

EXTENSION = NativeExtension('smpconv_sampling_cpu', 'sampling_cpu.cpp', 'the C++ SMP kernel sampler')


def available(positions: torch.Tensor) -> bool:
    """Whether points per filter `positions` [F, P, d] are sampled here: float32 or float64 on a CPU (half
    precisions' rounding bunches a grid's nodes unevenly), and the extension built."""
    return (positions.device.type == 'cpu' and positions.dim() == 3 and
            positions.dtype in (torch.float32, torch.float64) and EXTENSION.module() is not None)


def sample(positions: torch.Tensor, radii: torch.Tensor, weights: torch.Tensor, nodes_x: torch.Tensor,
           nodes_y: torch.Tensor, normalize: bool, dense: Optional[bool] = None) -> torch.Tensor:
    """kernel [F, I, len(nodes_y), len(nodes_x)] of positions [F, P, d], radii [F, P] and weights [F, I, P]; for
    1-D points, nodes_y is one node at 0. `dense`: the values' products as one batched matrix product over the
    whole grid, or as sums over each point's nodes; None: whichever costs less for these points."""
    # in the points' dtype under autocast too, as either product: autocast would give the batched one its own dtype
    with torch.autocast('cpu', enabled=False):
        return EXTENSION.module().sample(positions.contiguous(), radii.contiguous(), weights.contiguous(), nodes_x,
                                         nodes_y, normalize, _mode(dense))


def grad(grad_kernel: torch.Tensor, positions: torch.Tensor, radii: torch.Tensor, weights: torch.Tensor,
         nodes_x: torch.Tensor, nodes_y: torch.Tensor, normalize: bool, dense: Optional[bool] = None
         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The adjoints of `sample` in positions, radii and weights for grad_kernel [F, I, len(nodes_y), len(nodes_x)]."""
    with torch.autocast('cpu', enabled=False):  # as `sample`: a backward pass may run in an autocast region
        return EXTENSION.module().grad(grad_kernel.contiguous(), positions.contiguous(), radii.contiguous(),
                                       weights.contiguous(), nodes_x, nodes_y, normalize, _mode(dense))


def _mode(dense: Optional[bool]) -> int:
    return -1 if dense is None else int(dense)
