"""The one entry point to the memory updates (the Titans MLP memory and the gated delta rule): Triton on CUDA
tensors, the C++ fast path for no-grad fp32 Titans work on the CPU (kernels/cpu.py, `SLEEPTIME_CPU_KERNEL=0` turns it
off), the plain-torch reference for everything else.

The gated delta rule's forward on CUDA goes to flash-linear-attention's chunk kernel when `fla-core` is installed
(kernels/fla_delta.py; `SLEEPTIME_FLA=0` turns it off); training keeps our own forward and backward. `SLEEPTIME_KERNELS=torch|triton|auto` (default auto) forces a
path of our own; the model and the jobs call only this module.
auto takes Triton for CUDA tensors when triton imports. triton on CPU tensors runs the kernels under Triton's
interpreter, which must be switched on (TRITON_INTERPRET=1) before the first kernel module is imported.
Whatever the choice, a call that Triton does not cover goes to the reference: a Titans call that needs gradients
(its kernels are forward-only; the delta rule has a Triton backward, `triton_delta.DeltaRule`), a rule or size
without a kernel (`triton_titans.supports`, `triton_delta.supports`), or fp64 inputs.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
from torch import Tensor

from sleeptime.kernels import reference
from sleeptime.kernels.reference import MemoryRule, TitansState

log = logging.getLogger(__name__)

titans_init_state = reference.titans_init_state
titans_retrieve = reference.titans_retrieve
titans_flush = reference.titans_flush


@functools.cache
def _triton_imports() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def backend(t: Tensor) -> str:
    """Which implementation runs for tensors like t."""
    choice = os.environ.get("SLEEPTIME_KERNELS", "auto").lower()
    if choice not in ("auto", "torch", "triton"):
        raise ValueError(f"SLEEPTIME_KERNELS must be auto, torch or triton, got {choice!r}")
    if choice == "auto":
        return "triton" if t.is_cuda and _triton_imports() else "torch"
    if choice == "triton":
        if not _triton_imports():
            raise RuntimeError("SLEEPTIME_KERNELS=triton but triton does not import")
        if not t.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("SLEEPTIME_KERNELS=triton on CPU tensors needs Triton's interpreter: TRITON_INTERPRET=1")
    return choice


def _fla_wanted() -> bool:
    """fla's chunk kernel for the delta rule's forward on CUDA: the fastest we measured (docs/benchmarks.md), when installed
    and not turned off (`SLEEPTIME_FLA=0`, or SLEEPTIME_KERNELS=torch|triton, which name a path of our own)."""
    if os.environ.get("SLEEPTIME_FLA", "1") == "0" or os.environ.get("SLEEPTIME_KERNELS", "auto") != "auto":
        return False
    from sleeptime.kernels import fla_delta

    return fla_delta.available()


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def titans_update(
    state: TitansState, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor], rule: MemoryRule,
    chunk_size: int, norm_weight: Tensor | None = None,
) -> tuple[Tensor, TitansState]:
    if backend(k) == "triton":
        from sleeptime.kernels import triton_titans

        tensors = (q, k, v, norm_weight, *gates.values(), *state.weights, *state.momentum)
        fp64 = any(t is not None and t.dtype == torch.float64 for t in tensors)
        if not fp64 and not _needs_grad(*tensors) and triton_titans.supports(rule, k.shape[-1]):
            return triton_titans.titans_update(state, q, k, v, gates, rule, chunk_size, norm_weight)
        log.debug("titans_update: the reference runs (grad, fp64 or a rule without a Triton kernel)")
    if backend(k) == "torch" and k.device.type == "cpu":
        # the C++ chunk loop (kernels/cpu.py) for no-grad calls; it runs the reference itself for what it does not
        # cover (fp64, retention other than decay, no compiler) and is switched off by SLEEPTIME_CPU_KERNEL=0
        from sleeptime.kernels import cpu

        tensors = (q, k, v, norm_weight, *gates.values(), *state.weights, *state.momentum)
        if not _needs_grad(*tensors):
            return cpu.titans_update(state, q, k, v, gates, rule, chunk_size, norm_weight)
    return reference.titans_update(state, q, k, v, gates, rule, chunk_size, norm_weight)


def delta_update(
    state: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, alpha: Tensor, chunk_size: int = 64
) -> tuple[Tensor, Tensor]:
    if k.is_cuda and k.dtype != torch.float64 and not _needs_grad(state, q, k, v, beta, alpha) and _fla_wanted():
        from sleeptime.kernels import fla_delta

        # forward only (consolidation, answers): fla's backward refuses itself on Hopper with Triton 3.4 to 3.7.0
        # (it computes wrong gradients there), so training goes through our own checked pair below
        return fla_delta.delta_update(state, q, k, v, beta, alpha, low_precision=torch.is_autocast_enabled("cuda"))
    if backend(k) == "triton":
        from sleeptime.kernels import triton_delta

        tensors = (state, q, k, v, beta, alpha)
        fp64 = any(t.dtype == torch.float64 for t in tensors)
        if not fp64 and triton_delta.supports(k.shape[-1], v.shape[-1], chunk_size):
            if _needs_grad(*tensors):
                return triton_delta.DeltaRule.apply(state, q, k, v, beta, alpha, chunk_size)
            return triton_delta.delta_update(state, q, k, v, beta, alpha, chunk_size)
        log.debug("delta_update: the reference runs (fp64 or sizes without a Triton kernel)")
    return reference.delta_update(state, q, k, v, beta, alpha, chunk_size)
