"""The Triton Titans update against the plain-torch reference (`reference.titans_update`), in fp32.

On a machine without CUDA these run under Triton's interpreter (set in conftest.py); shapes stay small but every
tl.dot side is >= 16, as the GPU backend needs. bf16 is not tested here: the interpreter's bf16 tl.dot is wrong.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sleeptime.kernels import ops, reference, triton_titans
from sleeptime.kernels.reference import MemoryRule, TitansState

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


ROOT = Path(__file__).resolve().parents[2]


def assert_close(name: str, ref: torch.Tensor, tri: torch.Tensor, ratio: float) -> None:
    """Relative RMSE ||ref - tri||_rms / ||ref||_rms below ratio, and no NaN."""
    assert not torch.isnan(tri).any(), f"{name}: NaN in the kernel's result"
    ref, tri = ref.double(), tri.double()
    err = (ref - tri).pow(2).mean().sqrt().item()
    base = ref.pow(2).mean().sqrt().item()
    if err <= 1e-6 * max(base, 1.0) and (ref - tri).abs().max().item() <= 1e-6:
        return
    assert err / base <= ratio, f"{name}: relative RMSE {err / base:.3e} > {ratio:.1e}"


def make_inputs(B, H, T, D, rule, seed=42):
    torch.manual_seed(seed)
    init = [2 * torch.randn(H, i, o) / i**0.5 for i, o in rule.layer_shapes(D)]
    state = reference.titans_init_state(init, B, rule)
    # a non-zero momentum, as after earlier chunks, so the f and m terms are exercised from the first chunk
    state.momentum = [0.01 * torch.randn_like(w) for w in state.weights]
    state = TitansState([w.to(DEVICE) for w in state.weights], [s.to(DEVICE) for s in state.momentum], {})
    q, k, v = (F.normalize(torch.randn(B, H, T, D), dim=-1).to(DEVICE) for _ in range(3))
    gates = {
        "theta": 0.1 * torch.rand(B, H, T),
        "alpha": 0.1 * torch.rand(B, H, T),
        "eta": torch.rand(B, H, T),
    }
    gates = {n: g.to(DEVICE) for n, g in gates.items()}
    norm_weight = (1 + 0.1 * torch.randn(H, D)).to(DEVICE)
    return state, q, k, v, gates, norm_weight


def reference_fp64(state: TitansState, q, k, v, gates, rule, chunk_size, norm_weight):
    """The reference in float64: the ground truth for an fp32 kernel.

    Two fp32 implementations of the update differ by a few 1e-6 (relative RMSE) after a handful of chunks, the
    fp32 reference included (the residual LayerNorm amplifies rounding): comparing with the fp32 reference at 1e-5
    would test the noise floor, so the kernel is held to the exact result instead.
    """
    wide = lambda x: x.double()
    state = TitansState(
        [wide(w) for w in state.weights],
        [wide(s) for s in state.momentum],
        {n: wide(t) for n, t in state.pending.items()},
    )
    gates = {n: wide(g) for n, g in gates.items()}
    return reference.titans_update(state, wide(q), wide(k), wide(v), gates, rule, chunk_size, wide(norm_weight))


def check_states(ref_state: TitansState, tri_state: TitansState, ratio: float = 1e-5) -> None:
    for layer, (a, b) in enumerate(zip(ref_state.weights, tri_state.weights)):
        assert_close(f"A{layer}", a, b, ratio)
    for layer, (a, b) in enumerate(zip(ref_state.momentum, tri_state.momentum)):
        assert_close(f"S{layer}", a, b, ratio)
    assert ref_state.pending.keys() == tri_state.pending.keys()
    for name in ref_state.pending:
        assert_close(f"pending {name}", ref_state.pending[name], tri_state.pending[name], 1e-6)


# (B, H, T, D, depth, residual_norm, activation, chunk_size, block_t, block_h)
CASES = [
    pytest.param(1, 2, 63, 16, 2, True, "silu", 16, None, 32, id="T63-d16-depth2-norm-2tiles"),
    pytest.param(1, 2, 100, 16, 1, True, "silu", 16, None, None, id="T100-d16-depth1-norm"),
    pytest.param(1, 2, 100, 16, 2, False, "silu", 24, 16, 16, id="T100-d16-depth2-chunk24-masked-rows"),
    pytest.param(2, 1, 70, 32, 2, True, "gelu", 32, 16, 64, id="T70-d32-depth2-gelu-2rowblocks"),
    pytest.param(1, 3, 100, 16, 1, False, "silu", 32, 16, None, id="T100-d16-depth1-3heads-2rowblocks"),
    pytest.param(1, 2, 40, 16, 2, True, "silu", 64, None, None, id="T40-chunk64-partial-only"),
]


@pytest.mark.parametrize("B, H, T, D, depth, norm, act, chunk, bt, bh", CASES)
def test_titans_update(B, H, T, D, depth, norm, act, chunk, bt, bh):
    rule = MemoryRule(depth=depth, expansion=4, residual_norm=norm, activation=act)
    state, q, k, v, gates, nw = make_inputs(B, H, T, D, rule)
    y_ref, s_ref = reference_fp64(state, q, k, v, gates, rule, chunk, nw)
    y_tri, s_tri = triton_titans.titans_update(state, q, k, v, gates, rule, chunk, nw, block_t=bt, block_h=bh)
    assert_close("y", y_ref, y_tri, 1e-5)
    check_states(s_ref, s_tri)


@pytest.mark.parametrize("depth", [pytest.param(1, id="depth1"), pytest.param(2, id="depth2")])
def test_titans_update_carried_state(depth):
    """Three calls with a pending remainder carried between them match one reference call over all tokens."""
    rule = MemoryRule(depth=depth, expansion=4)
    state, q, k, v, gates, nw = make_inputs(1, 2, 90, 16, rule)
    y_ref, s_ref = reference_fp64(state, q, k, v, gates, rule, 16, nw)
    ys, s_tri = [], state
    for lo, hi in [(0, 21), (21, 30), (30, 90)]:
        part = {n: g[:, :, lo:hi] for n, g in gates.items()}
        qkv = (x[:, :, lo:hi] for x in (q, k, v))
        y, s_tri = triton_titans.titans_update(s_tri, *qkv, part, rule, 16, nw)
        ys.append(y)
    assert_close("y", y_ref, torch.cat(ys, dim=2), 1e-5)
    check_states(s_ref, s_tri)


def test_titans_update_eta_zero():
    """Tokens without momentum (eta = 0) take the clamped-log path of the gates.

    There log(1e-30) ~ -69 enters the cumsum of log eta, and fp32 differences of numbers near -69 carry ~1e-6
    absolute error: the fp32 reference itself is ~1e-5 off its fp64 self here, so the kernel is allowed a few times
    the fp32 reference's own error.
    """
    rule = MemoryRule(depth=2, expansion=4)
    state, q, k, v, gates, nw = make_inputs(1, 2, 90, 16, rule)
    gates["eta"] = gates["eta"].masked_fill(torch.rand_like(gates["eta"]) < 0.1, 0.0)
    y64, s64 = reference_fp64(state, q, k, v, gates, rule, 16, nw)
    y32, _ = reference.titans_update(state, q, k, v, gates, rule, 16, nw)
    y_tri, s_tri = triton_titans.titans_update(state, q, k, v, gates, rule, 16, nw)
    ref_err = ((y64 - y32.double()).pow(2).mean() / y64.pow(2).mean()).sqrt().item()
    assert_close("y", y64, y_tri, max(1e-5, 5 * ref_err))
    check_states(s64, s_tri, max(1e-5, 5 * ref_err))


def test_ops_dispatch(monkeypatch):
    """SLEEPTIME_KERNELS=triton takes the kernel for a covered rule, and the reference when gradients are needed."""
    rule = MemoryRule(depth=2, expansion=4)
    state, q, k, v, gates, nw = make_inputs(1, 1, 20, 16, rule)
    monkeypatch.setenv("SLEEPTIME_KERNELS", "triton")
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert ops.backend(k) == "triton"
    calls = []
    monkeypatch.setattr(triton_titans, "titans_update", lambda *a, **kw: calls.append(1) or reference.titans_update(*a))
    ops.titans_update(state, q, k, v, gates, rule, 16, nw)
    assert calls == [1]
    ops.titans_update(state, q.requires_grad_(), k, v, gates, rule, 16, nw)
    ops.titans_update(state, q, k, v, gates, MemoryRule(depth=3), 16, nw)
    assert calls == [1]
    monkeypatch.setenv("SLEEPTIME_KERNELS", "torch")
    assert ops.backend(k) == "torch"
    monkeypatch.setenv("SLEEPTIME_KERNELS", "cuda")
    with pytest.raises(ValueError):
        ops.backend(k)


def test_titans_update_rejects_bad_input():
    rule = MemoryRule(depth=2, expansion=4)
    state, q, k, v, gates, nw = make_inputs(1, 1, 20, 16, rule)
    with pytest.raises(ValueError, match="no Triton kernel"):
        triton_titans.titans_update(state, q, k, v, gates, MemoryRule(depth=2, momentum=False), 16, nw)
    with pytest.raises(ValueError, match="share one shape"):
        triton_titans.titans_update(state, q[..., :10, :], k, v, gates, rule, 16, nw)
    with pytest.raises(ValueError, match="block_t"):
        triton_titans.titans_update(state, q, k, v, gates, rule, 16, nw, block_h=24)


@pytest.mark.skipif(
    DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1", reason="needs CUDA or the interpreter"
)
def test_benchmark_smoke(tmp_path):
    """benchmarks/gpu_kernels.py --smoke checks both kernels against the reference and writes their tables."""
    out = tmp_path / "table.md"
    env = dict(os.environ, TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET", "0"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_kernels.py"), "--smoke", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = out.read_text()
    assert "| chunk |" in table and "Gated delta rule" in table and "training (forward + backward)" in table
    assert table.count("| triton ieee |") == 4  # two chunk sizes, each for the Titans memory and the delta rule
    assert table.count("| triton forward + backward |") == 1


@pytest.mark.skipif(
    DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1", reason="needs CUDA or the interpreter"
)
def test_benchmark_exit_status_tells_which_kernel_failed(tmp_path, monkeypatch):
    """1: a delta-rule check failed (training must not use the kernels); 3: only a Titans-memory check did."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_kernels

    real_check = gpu_kernels.check

    def titans_kernel_off_by_one(update, *args, **options):  # the Titans kernel's error, made large
        return real_check(update, *args, **options) + (1.0 if update is triton_titans.titans_update else 0.0)

    monkeypatch.setattr(gpu_kernels, "check", titans_kernel_off_by_one)
    assert gpu_kernels.main(["--smoke", "--out", str(tmp_path / "a.md")]) == 3
    monkeypatch.setattr(gpu_kernels, "check", real_check)
    monkeypatch.setitem(gpu_kernels.TOLERANCE, "ieee", 0.0)  # no fp32 kernel is exact: the delta rule's checks fail
    assert gpu_kernels.main(["--smoke", "--out", str(tmp_path / "b.md")]) == 1
    assert (tmp_path / "b.md").read_text().count("| triton forward + backward |") == 1  # the tables still written
