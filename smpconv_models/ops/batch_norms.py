"""The parallel kernels' pair of batch norms, summed, a ReLU after where there is one: act(bn_a(a) + bn_c(c)), the
authors' pair of the sequence and CIFAR-10 models. In an eager training step on a CPU it runs on a C++ extension
(csrc/batch_norms_cpu.cpp, built by `native`) in two passes over memory each way.

PyTorch's CPU batch norm sums a channels-first batch one element at a time in float64, and the sum and the ReLU
are passes of their own: on a 2-core EPYC an sMNIST pair ([64, 30, 784]) took 5.3 ms forward and 2.9 ms backward,
on the extension 1.9 and 2.0 ms; the sMNIST step, with 12 pairs, 1.08-1.12x as fast. The results are the batch
norms' to float rounding: the same statistics (float64 sums), the same update of the running statistics, the same
gradients; where create_graph asks for second derivatives, PyTorch's batch norm computes the gradients.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dispatch import capturing_graph
from .native import NativeExtension

__all__ = ['summed_batch_norms']

EXTENSION = NativeExtension('smpconv_batch_norms_cpu', 'batch_norms_cpu.cpp', 'the C++ batch norms')

# the batch norms the extension computes, and the dimensions of their inputs there
_INPUT_DIMS = {nn.BatchNorm1d: 3, nn.BatchNorm2d: 4}


def _plain(a: torch.Tensor, c: torch.Tensor, norm_a: nn.Module, norm_c: nn.Module, act: nn.Module) -> torch.Tensor:
    return act(norm_a(a) + norm_c(c))


def _fusable(a: torch.Tensor, c: torch.Tensor, norm_a: nn.Module, norm_c: nn.Module, act: nn.Module) -> bool:
    """Whether the extension computes the pair: contiguous float32 CPU inputs alike, two affine float32 batch norms
    of their channels normalising by the batch's statistics (training), ReLU or no activation, in eager mode
    without a transform (`capturing_graph`)."""
    return (type(act) in (nn.ReLU, nn.Identity)
            and a.device.type == 'cpu' and a.dtype == torch.float32 and a.is_contiguous()
            and c.dtype == a.dtype and c.device == a.device and c.shape == a.shape and c.is_contiguous()
            and all(_INPUT_DIMS.get(type(n)) == a.dim() and n.training and n.affine and n.num_features == a.shape[1]
                    and all(t.dtype == a.dtype and t.device == a.device for t in n.parameters())
                    for n in (norm_a, norm_c))
            and a.numel() > a.shape[1] and not capturing_graph() and EXTENSION.module() is not None)


def _batch_statistics(x: torch.Tensor, norm: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """The mean and inverse standard deviation of x's channels (float32), the running statistics updated as
    nn.BatchNorm updates them."""
    mean, var = EXTENSION.module().moments(x)
    if norm.track_running_stats:
        norm.num_batches_tracked.add_(1)
        factor = 1. / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
        count = x.numel() // x.shape[1]
        norm.running_mean.mul_(1 - factor).add_(mean.to(norm.running_mean.dtype), alpha=factor)
        norm.running_var.mul_(1 - factor).add_((var * (count / (count - 1))).to(norm.running_var.dtype),
                                               alpha=factor)
    return mean.float(), (var + norm.eps).rsqrt().float()


def summed_batch_norms(a: torch.Tensor, c: torch.Tensor, norm_a: nn.Module, norm_c: nn.Module,
                       act: nn.Module) -> torch.Tensor:
    """act(norm_a(a) + norm_c(c)): on the extension where it can (`_fusable`), else as written."""
    if not _fusable(a, c, norm_a, norm_c, act):
        return _plain(a, c, norm_a, norm_c, act)
    with torch.no_grad():
        statistics = (*_batch_statistics(a, norm_a), *_batch_statistics(c, norm_c))
    return _SummedBatchNorms.apply(a, c, norm_a.weight, norm_a.bias, norm_c.weight, norm_c.bias, *statistics,
                                   norm_a.eps, norm_c.eps, isinstance(act, nn.ReLU))


def _grad_coefficients(sums: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                       count: int) -> torch.Tensor:
    """[3, C]: p, q, r of a batch norm's input gradient dx = p d + q x + r, from `sums` [2, C] over each channel of
    its output gradient d and of d (x - mean): dx = w invstd (d - sum(d) / n - xhat sum(d xhat) / n)."""
    sum_d, sum_dx = sums
    weight, mean, invstd = weight.double(), mean.double(), invstd.double()
    p = weight * invstd
    q = -p * invstd.square() * sum_dx / count
    r = -p * sum_d / count - q * mean
    return torch.stack([p, q, r])


class _SummedBatchNorms(torch.autograd.Function):
    """relu(bn_a(a) + bn_c(c)) (or without the ReLU) given the batch's statistics, which the backward pass
    differentiates through as a batch norm's does."""

    @staticmethod
    def forward(ctx, a, c, weight_a, bias_a, weight_c, bias_c, mean_a, invstd_a, mean_c, invstd_c, eps_a, eps_c,
                relu):
        scale_a, scale_c = weight_a * invstd_a, weight_c * invstd_c
        affine = torch.stack([scale_a, scale_c, bias_a - mean_a * scale_a + bias_c - mean_c * scale_c])
        ctx.save_for_backward(a, c, affine, weight_a, bias_a, weight_c, bias_c, mean_a, invstd_a, mean_c, invstd_c)
        ctx.eps, ctx.relu = (eps_a, eps_c), relu
        return EXTENSION.module().scale_shift_sum(a, c, affine, relu)

    @staticmethod
    def backward(ctx, grad_y):
        a, c, affine, weight_a, bias_a, weight_c, bias_c, mean_a, invstd_a, mean_c, invstd_c = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: gradients that can be differentiated again
            return (*_plain_gradients(grad_y, a, c, (weight_a, bias_a, weight_c, bias_c), ctx.eps, ctx.relu,
                                      ctx.needs_input_grad[:6]), *[None] * 7)
        grad_y = grad_y.contiguous()
        extension = EXTENSION.module()
        sum_d, sum_da, sum_dc = sums = extension.grad_sums(grad_y, a, c, affine, torch.stack([mean_a, mean_c]),
                                                           ctx.relu)
        count = a.numel() // a.shape[1]
        coefficients = torch.cat([_grad_coefficients(sums[[0, 1]], weight_a, mean_a, invstd_a, count),
                                  _grad_coefficients(sums[[0, 2]], weight_c, mean_c, invstd_c, count)]).float()
        grad_a, grad_c = extension.grad_inputs(grad_y, a, c, affine, coefficients, ctx.relu)
        # each bias its own tensor: autograd may keep a gradient as a parameter's .grad and add to it in place
        return (grad_a, grad_c, (sum_da * invstd_a).float(), sum_d.float(), (sum_dc * invstd_c).float(),
                sum_d.float(), *[None] * 7)


def _plain_gradients(grad_y, a, c, affine, eps, relu, needs):
    """The gradients of (a, c, weight_a, bias_a, weight_c, bias_c) by PyTorch's batch norm, differentiable again."""
    inputs = (a, c, *affine)
    weight_a, bias_a, weight_c, bias_c = affine
    y = (F.batch_norm(a, None, None, weight_a, bias_a, True, 0., eps[0])
         + F.batch_norm(c, None, None, weight_c, bias_c, True, 0., eps[1]))
    y = F.relu(y) if relu else y
    wanted = [t for t, need in zip(inputs, needs) if need]
    grads = iter(torch.autograd.grad(y, wanted, grad_y, create_graph=True))
    return tuple(next(grads) if need else None for need in needs)
