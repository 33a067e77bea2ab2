"""The CPU fast path of the Titans update: the no-grad forward of `reference.titans_update` in one C++ call.

Eager PyTorch spends most of a 64-token chunk on per-op overhead (~70 small ops); `cpu_titans.cpp` runs the whole
loop over a call's full chunks in C++ (BLAS matmuls, fused elementwise loops, one parallel region over the heads).
This wrapper keeps the reference's semantics around it: the pending remainder of the previous call is prepended,
chunk boundaries stay absolute, and the partial last chunk (retrieved but not committed) runs through the
reference's `_titans_chunk`, as does everything the kernel does not cover (see `supports`).

The extension is JIT-built with `torch.utils.cpp_extension.load` on first use and cached in the default torch
extensions directory. `SLEEPTIME_CPU_KERNEL=0` switches it off; a failed build falls back to the reference. Either
way one warning is logged and the reference runs.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from sleeptime.kernels import reference
from sleeptime.kernels.reference import MemoryRule, TitansState

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("cpu_titans.cpp")
_ACTIVATIONS = {"silu": 0, "gelu": 1}
_BIASES = {"l2": 0, "lp": 1, "huber": 2}


def supports(rule: MemoryRule) -> bool:
    """Rules the C++ loop covers: decay retention (the dual-form retrieval), any depth, bias, activation, momentum."""
    return rule.retention == "decay" and rule.activation in _ACTIVATIONS and rule.bias in _BIASES


# value-preserving relaxations: no FP-exception flags or errno, so that compare-selects and sqrt vectorise (no
# -ffast-math: that would reassociate sums and break the exp's rounding trick)
_SAFE_MATH = ["-fno-trapping-math", "-fno-math-errno"]


def _build_flags() -> tuple[str, list[str]]:
    # the vector ISA is part of the extension's name: a cached build never runs on a CPU it was not made for
    # -fopenmp: at::parallel_for is an OpenMP pragma in ATen's headers; without the flag the heads run one by one
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        return "avx2_omp", ["-O3", "-mavx2", "-mfma", "-fopenmp", *_SAFE_MATH]
    return "generic_omp", ["-O3", "-fopenmp", *_SAFE_MATH]


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


@functools.cache
def _load() -> bool:
    """Build (first use) or load the extension; False, with one warning, when that fails."""
    suffix, flags = _build_flags()
    try:
        from torch.utils import cpp_extension

        # no Python module: the op registers itself as torch.ops.sleeptime_cpu.titans_chunks (lighter headers,
        # a faster build than torch/extension.h)
        cpp_extension.load(
            name=f"sleeptime_cpu_titans_{suffix}", sources=[str(_SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
            is_python_module=False, verbose=False,
        )
        torch.ops.sleeptime_cpu.titans_chunks  # noqa: B018  (raises if the library did not register)
    except Exception as exc:  # noqa: BLE001 no compiler, other torch headers or symbols: the reference still works
        text = str(exc)
        text = text if len(text) <= 2000 else text[:500] + " [...] " + text[-1500:]  # a build log can be long
        _warn_once(f"the C++ CPU kernel for titans_update is unavailable, the reference runs: {text}")
        return False
    return True


def available() -> bool:
    """Whether the C++ path can run in this process (SLEEPTIME_CPU_KERNEL=0 switches it off)."""
    if os.environ.get("SLEEPTIME_CPU_KERNEL", "1") == "0":
        _warn_once("SLEEPTIME_CPU_KERNEL=0: titans_update runs the plain-torch reference on the CPU")
        return False
    return _load()


def titans_update(
    state: TitansState,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gates: dict[str, Tensor],
    rule: MemoryRule,
    chunk_size: int,
    norm_weight: Tensor | None = None,
) -> tuple[Tensor, TitansState]:
    """`reference.titans_update` with the full chunks in C++; same arguments, results and state (forward only).

    Falls back to the reference when gradients are needed, the rule, dtype or device is not covered, or the
    extension is unavailable.
    """
    tensors = (q, k, v, norm_weight, *gates.values(), *state.weights, *state.momentum, *state.pending.values())
    fp32_cpu = all(t is None or (t.dtype == torch.float32 and t.device.type == "cpu") for t in tensors)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if needs_grad or not (fp32_cpu and supports(rule) and available()):
        return reference.titans_update(state, q, k, v, gates, rule, chunk_size, norm_weight)

    call = reference.flatten_call(state, q, k, v, gates, rule, chunk_size, norm_weight)
    B, H, T, D, r = call.B, call.H, call.T, k.shape[-1], call.pending
    N = B * H
    qs, ks, vs, gs = call.q, call.k, call.v, call.gates
    # q, k, v may stay views (the model's are slices of one projection): the kernel takes any strides with dense rows
    qs, ks, vs = (x if x.stride(-1) == 1 else x.contiguous() for x in (qs, ks, vs))
    gs = {n: g.contiguous() for n, g in gs.items()}
    nw = None if norm_weight is None else norm_weight.detach().repeat(B, 1).contiguous()  # [N, D]

    states = reference._pack(state, rule)
    if not rule.momentum:
        states = [x.clone() for x in states]  # _pack returns views of the caller's state there; the kernel writes in place
    total = r + T
    n_full = total // chunk_size
    y = qs.new_empty(N, total, D)
    if n_full:
        empty = qs.new_empty(0)
        torch.ops.sleeptime_cpu.titans_chunks(
            states, qs, ks, vs, gs["theta"], gs["alpha"], gs.get("eta", empty), gs.get("delta", empty),
            empty if nw is None else nw, y, chunk_size, n_full, _ACTIVATIONS[rule.activation], _BIASES[rule.bias],
            float(rule.p), rule.momentum, rule.residual_norm,
        )
    pending = {}
    a = n_full * chunk_size
    if a < total:
        # the partial last chunk: retrieved at its own post-update weights, committed only when it completes
        window = {n: g[:, a:].unsqueeze(1) for n, g in gs.items()}
        coef = {name: t[:, 0] for name, t in reference._gate_coefficients(window, rule.momentum).items()}
        delta = window["delta"][:, 0] if "delta" in window else None
        nw3 = None if nw is None else nw.unsqueeze(1)
        y_tail, _ = reference._titans_chunk(states, qs[:, a:], ks[:, a:], vs[:, a:], coef, delta, rule, nw3, commit=False)
        y[:, a:] = y_tail
        pending = call.unfinished(a)
    return call.output(y), reference._unpack(states, B, H, rule, pending)
