"""The gated delta rule through flash-linear-attention's `chunk_gated_delta_rule` (PyPI `fla-core`, the `gpu` extra).

Our rule and fla's are the same recurrence: S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T, o_t = q_t S_t, with
fla's gate in log space (g = log a = log(1 - alpha)) and its query scale set to 1 (our queries are unit vectors
already). fla lays tensors out [B, T, H, D] where ours are [B, H, T, D]; its state is [B, H, Dk, Dv] like ours, and
it differentiates through the initial state, so a learned initial memory trains. CUDA only; the reference in
kernels/reference.py is what it is checked against (tests/kernels, benchmarks/gpu_kernels.py).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


@functools.cache
def available() -> bool:
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule  # noqa: F401
    except Exception:  # noqa: BLE001 not installed, or it fails to import beside this torch/triton
        return False
    return True


def delta_update(
    state: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, alpha: Tensor, low_precision: bool = False
) -> tuple[Tensor, Tensor]:
    """Same contract as reference.delta_update (fla's chunk is 64 whatever the caller's). low_precision: q, k, v
    go in as bf16 (the tensor cores), state and gates stay fp32; outputs come back in q's dtype."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    dtype = q.dtype
    inner = torch.bfloat16 if low_precision else dtype

    def bthd(t: Tensor) -> Tensor:
        return t.transpose(1, 2).to(inner).contiguous()

    g = torch.log1p(-alpha.float()).transpose(1, 2).contiguous()  # [B, T, H]
    o, final = chunk_gated_delta_rule(
        bthd(q), bthd(k), bthd(v), g, beta.float().transpose(1, 2).contiguous(), scale=1.0,
        initial_state=state.float(), output_final_state=True,
    )
    return o.transpose(1, 2).to(dtype), final.to(state.dtype)
