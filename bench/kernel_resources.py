"""Compile minilm's Triton attention kernels for a GPU target without a GPU, and report what each one uses.

    python bench/kernel_resources.py                         # sm_90 (H100/H200), fp16 and bf16, head dims 32 64 128
    python bench/kernel_resources.py --dtypes fp32 --arch 80

Triton's compiler and the ptxas it ships run on any machine, so this checks what the CPU interpreter cannot: that
every kernel compiles for the real target with its default tiles (minilm.model.kernels.flash_attention.default_tiles),
and how many registers, how much spilled stack (local memory: slow) and shared memory it needs. The figures come
from `cuobjdump -res-usage` on the compiled cubin. It says nothing about speed; bench/attention.py measures that.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from minilm.model.kernels import flash_attention as fa

TYPES = {"fp16": ("*fp16", torch.float16), "bf16": ("*bf16", torch.bfloat16), "fp32": ("*fp32", torch.float32)}
KERNELS = ("forward", "dk_dv", "dq")


def compile_kernel(kernel: str, dtype: str, head_dim: int, causal: bool, arch: int) -> dict[str, int]:
    """Compile one kernel with its default tiles; {registers, stack, shared} in registers per thread and bytes."""
    pointer, torch_dtype = TYPES[dtype]
    fn = {"forward": fa._forward_kernel, "dk_dv": fa._dk_dv_kernel, "dq": fa._dq_kernel}[kernel]
    block_m, block_n, warps = fa.default_tiles(torch_dtype)[KERNELS.index(kernel)]
    constants = dict(
        CAUSAL=causal,
        HAS_PADDING=True,
        PRECISION="ieee" if dtype == "fp32" else "tf32",
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        HEAD_DIM=head_dim,
    )
    pointers = {name: pointer for name in ("Q", "K", "V", "O", "DO", "DK", "DV", "DQ")}
    pointers.update(LSE="*fp32", DELTA="*fp32", N_KEYS="*i32", KEY_MASK="*i8")
    signature = {}
    for name in fn.arg_names:
        if name in constants:
            signature[name] = "constexpr"
        else:
            signature[name] = pointers.get(name, "fp32" if name.endswith("_scale") else "i32")
    source = ASTSource(
        fn=fn, signature=signature, constexprs={(fn.arg_names.index(name),): value for name, value in constants.items()}
    )
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
    with tempfile.TemporaryDirectory() as folder:
        cubin = os.path.join(folder, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        usage = subprocess.run([cuobjdump, "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"(REG|STACK):(\d+)", usage))
    return {
        "registers": int(found["REG"]),
        "stack": int(found["STACK"]),
        "shared": int(compiled.metadata.shared),
        "tiles": (block_m, block_n, warps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (default 90: H100/H200)")
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=list(TYPES))
    parser.add_argument("--head-dims", nargs="+", type=int, default=[32, 64, 128])
    args = parser.parse_args()
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    print(f"# sm_{args.arch}, triton {triton.__version__}, causal, with a key mask (the largest variant)")
    print(
        "| dtype | d_k | kernel | tiles (M x N, warps) | registers/thread | spilled stack (bytes) | "
        "shared memory (KiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for dtype in args.dtypes:
        for head_dim in args.head_dims:
            for kernel in KERNELS:
                r = compile_kernel(kernel, dtype, head_dim, causal=True, arch=args.arch)
                m, n, w = r["tiles"]
                print(
                    f"| {dtype} | {head_dim} | {kernel} | {m} x {n}, {w} | {r['registers']} | {r['stack']} | "
                    f"{r['shared'] / 1024:.0f} |"
                )


if __name__ == "__main__":
    main()
