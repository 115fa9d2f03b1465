#!/usr/bin/env python3
"""What the Triton kernels compile to for an A100 (sm_80) and an H100/H200 (sm_90a), without a GPU: registers,
shared memory and spills per kernel, dtype and autotune config (ptxas -v of Triton's PTX), and whether every
fp16/bf16 (and TF32) product of the depthwise convolution runs on tensor cores (mma.sync or wgmma in the PTX).
The resizing convolution's kernels gather every tap (no matrix product): they are checked for spills only.

    python benchmarks/triton_codegen.py                 # the markdown table of benchmarks/RESULTS.md
    python benchmarks/triton_codegen.py --kernel-size 51

tests/test_triton_codegen.py asserts no spills for every entry, and tensor cores for the depthwise ones.
"""
import argparse
import itertools
import os
import re
import subprocess
import tempfile
from typing import Dict, Iterator, NamedTuple

import triton
import triton.backends.nvidia
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from smpconv_models.ops import triton_kernels, triton_resize

PTXAS = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), 'bin', 'ptxas')
ARCHITECTURES = {'sm_80': 80, 'sm_90a': 90}
# (input dtype, tl.dot precision): fp32 in IEEE or on TF32 tensor cores (torch.backends.cudnn.allow_tf32)
VARIANTS = (('fp32', 'ieee'), ('fp32', 'tf32'), ('fp16', 'tf32'), ('bf16', 'tf32'))
# the resizing convolution's input dtypes (fp64 accumulates in fp64, the others in fp32)
RESIZE_DTYPES = ('fp32', 'fp16', 'bf16', 'fp64')
KERNELS = {
    'forward': triton_kernels._forward_kernel,
    'grad_weight': triton_kernels._grad_weight_kernel,
    'resize_forward': triton_resize._forward_kernel,
    'resize_grad_input': triton_resize._grad_input_kernel,
    'resize_grad_bank': triton_resize._grad_bank_kernel,
}


class Compiled(NamedTuple):
    kernel: str
    architecture: str
    dtype: str
    precision: str
    config: Dict[str, int]
    num_warps: int
    num_stages: int
    registers: int
    shared_bytes: int
    spill_bytes: int
    tensor_cores: bool


def _ptxas_info(ptx: str, architecture: str) -> Dict[str, int]:
    with tempfile.NamedTemporaryFile('w', suffix='.ptx') as f:
        f.write(ptx)
        f.flush()
        report = subprocess.run([PTXAS, '-v', f'--gpu-name={architecture}', f.name, '-o', os.devnull],
                                capture_output=True, text=True, check=True).stderr
    return dict(registers=int(re.search(r'Used (\d+) registers', report).group(1)),
                spill_bytes=sum(int(n) for n in re.findall(r'(\d+) bytes spill (?:stores|loads)', report)))


def _pointers(kind: str, dtype: str) -> Dict[str, str]:
    """The type of each pointer argument of a kernel that does not point to its input's dtype."""
    accumulator = 'fp64' if dtype == 'fp64' else 'fp32'
    geometry = {f'{axis}_{index}_ptr': '*i64' for axis in ('row', 'col') for index in ('start', 'phase')}
    reach = {f'{axis}_{index}_ptr': '*i32' for axis in ('row', 'col') for index in ('first', 'count')}
    return {'forward': {'reach_ptr': '*i32'}, 'grad_weight': {'partial_ptr': '*fp32'}, 'resize_forward': geometry,
            'resize_grad_input': {**geometry, **reach},
            'resize_grad_bank': {**geometry, 'grad_bank_ptr': f'*{accumulator}'}}[kind]


def compile_kernel(kind: str, architecture: str, dtype: str, constants: Dict, num_warps: int,
                   num_stages: int) -> Compiled:
    """Triton's code of a kernel for `architecture`, with ptxas's register and spill counts; sizes and strides
    are 32-bit runtime arguments, as Triton passes them."""
    fn = KERNELS[kind]
    pointers = _pointers(kind, dtype)
    signature = {name: 'constexpr' if index in fn.constexprs else
                 pointers.get(name, f'*{dtype}') if name.endswith('_ptr') else 'i32'
                 for index, name in enumerate(fn.arg_names)}
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constants),
                              target=GPUTarget('cuda', ARCHITECTURES[architecture], 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    ptx = compiled.asm['ptx']
    config = {k: v for k, v in constants.items() if k.startswith('BLOCK')}
    return Compiled(kind, architecture, dtype, constants.get('PRECISION', '-'), config, num_warps, num_stages,
                    shared_bytes=compiled.metadata.shared, tensor_cores='mma.sync' in ptx or 'wgmma' in ptx,
                    **_ptxas_info(ptx, architecture))


def depthwise_kernels(kernel_size: int = 31) -> Iterator[Compiled]:
    """The depthwise convolution's kernels for both architectures, every dtype and precision, every config."""
    taps = dict(KH=kernel_size, KW=kernel_size)
    for architecture, (dtype, precision) in itertools.product(ARCHITECTURES, VARIANTS):
        for config in triton_kernels.FORWARD_CONFIGS:
            yield compile_kernel('forward', architecture, dtype, {**taps, 'PRECISION': precision, **config.kwargs},
                                 config.num_warps, config.num_stages)
        for config in triton_kernels.GRAD_WEIGHT_CONFIGS:
            yield compile_kernel('grad_weight', architecture, dtype,
                                 {**taps, 'PRECISION': precision, 'BLOCK_N': triton_kernels.GRAD_WEIGHT_BLOCK_N,
                                  **config.kwargs}, config.num_warps, config.num_stages)


def resize_kernels() -> Iterator[Compiled]:
    """The resizing convolution's kernels for both architectures, every dtype, every config (tap counts are
    runtime arguments: one compilation serves every kernel size)."""
    configs = {'resize_forward': triton_resize.RESIZE_CONFIGS, 'resize_grad_input': triton_resize.RESIZE_CONFIGS,
               'resize_grad_bank': triton_resize.GRAD_BANK_CONFIGS}
    for architecture, dtype, (kind, kind_configs) in itertools.product(ARCHITECTURES, RESIZE_DTYPES,
                                                                       configs.items()):
        accumulator = tl.float64 if dtype == 'fp64' else tl.float32
        for config in kind_configs:
            yield compile_kernel(kind, architecture, dtype, {'ACC': accumulator, **config.kwargs},
                                 config.num_warps, config.num_stages)


def every_kernel(kernel_size: int = 31) -> Iterator[Compiled]:
    """Every Triton kernel of the package for both architectures, every dtype, precision and config."""
    yield from depthwise_kernels(kernel_size)
    yield from resize_kernels()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--kernel-size', type=int, default=31)
    args = parser.parse_args()
    print('| kernel | arch | dtype | tl.dot | blocks | warps | stages | registers | shared (B) | spills (B) | '
          'tensor cores |\n|---|---|---|---|---|---|---|---|---|---|---|')
    for c in every_kernel(args.kernel_size):
        blocks = ', '.join(f"{k.removeprefix('BLOCK_')} {v}" for k, v in c.config.items())
        precision = c.precision if c.dtype == 'fp32' else '-'  # fp16/bf16 products are exact in fp32
        print(f'| {c.kernel} | {c.architecture} | {c.dtype} | {precision} | {blocks} | {c.num_warps} | '
              f'{c.num_stages} | {c.registers} | {c.shared_bytes} | {c.spill_bytes} | '
              f"{'yes' if c.tensor_cores else 'no'} |", flush=True)
    print(f'\ntriton {triton.__version__}, depthwise kernels {args.kernel_size}x{args.kernel_size} (the resizing '
          'kernels take their tap counts at run time)')


if __name__ == '__main__':
    main()
