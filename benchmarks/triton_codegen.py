#!/usr/bin/env python3
"""What the Triton kernels compile to for an A100 (sm_80) and an H100/H200 (sm_90a), without a GPU: registers,
shared memory and spills per kernel, dtype and autotune config (ptxas -v of Triton's PTX), and whether every
fp16/bf16 (and TF32) product runs on tensor cores (mma.sync or wgmma in the PTX).

    python benchmarks/triton_codegen.py                 # the markdown table of benchmarks/RESULTS.md
    python benchmarks/triton_codegen.py --kernel-size 51

tests/test_triton_codegen.py asserts no spills and tensor cores for every entry.
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
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from smpconv_models.ops import triton_kernels

PTXAS = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), 'bin', 'ptxas')
ARCHITECTURES = {'sm_80': 80, 'sm_90a': 90}
# (input dtype, tl.dot precision): fp32 in IEEE or on TF32 tensor cores (torch.backends.cudnn.allow_tf32)
VARIANTS = (('fp32', 'ieee'), ('fp32', 'tf32'), ('fp16', 'tf32'), ('bf16', 'tf32'))
_STRIDES = {
    'forward': ('stride_xb', 'stride_xc', 'stride_xh', 'stride_xw', 'stride_yb', 'stride_yc', 'stride_yh', 'stride_yw'),
    'grad_weight': ('stride_gb', 'stride_gc', 'stride_gh', 'stride_gw', 'stride_xb', 'stride_xc', 'stride_xh',
                    'stride_xw'),
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


def compile_kernel(kind: str, architecture: str, dtype: str, precision: str, constants: Dict[str, int],
                   num_warps: int, num_stages: int) -> Compiled:
    """Triton's code of a kernel for `architecture`, with ptxas's register and spill counts."""
    pointer = f'*{dtype}'
    if kind == 'forward':
        fn = triton_kernels._forward_kernel
        signature = {'x_ptr': pointer, 'w_ptr': pointer, 'y_ptr': pointer}
    else:
        fn = triton_kernels._grad_weight_kernel
        signature = {'grad_y_ptr': pointer, 'x_ptr': pointer, 'partial_ptr': '*fp32'}
    signature.update({name: 'i32' for name in ('rows', 'height', 'width', *_STRIDES[kind])})
    constexprs = dict(PRECISION=precision, **constants)
    signature.update({name: 'constexpr' for name in constexprs})
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                              target=GPUTarget('cuda', ARCHITECTURES[architecture], 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    ptx = compiled.asm['ptx']
    config = {k: v for k, v in constants.items() if k.startswith('BLOCK')}
    return Compiled(kind, architecture, dtype, precision, config, num_warps, num_stages,
                    shared_bytes=compiled.metadata.shared, tensor_cores='mma.sync' in ptx or 'wgmma' in ptx,
                    **_ptxas_info(ptx, architecture))


def every_kernel(kernel_size: int = 31) -> Iterator[Compiled]:
    """Both kernels for both architectures, every dtype and precision, every autotune config."""
    taps = dict(KH=kernel_size, KW=kernel_size)
    for architecture, (dtype, precision) in itertools.product(ARCHITECTURES, VARIANTS):
        for config in triton_kernels.FORWARD_CONFIGS:
            yield compile_kernel('forward', architecture, dtype, precision, {**taps, **config.kwargs},
                                 config.num_warps, config.num_stages)
        for config in triton_kernels.GRAD_WEIGHT_CONFIGS:
            yield compile_kernel('grad_weight', architecture, dtype, precision,
                                 {**taps, 'BLOCK_N': triton_kernels.GRAD_WEIGHT_BLOCK_N, **config.kwargs},
                                 config.num_warps, config.num_stages)


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
    print(f'\ntriton {triton.__version__}, kernel {args.kernel_size}x{args.kernel_size}')


if __name__ == '__main__':
    main()
