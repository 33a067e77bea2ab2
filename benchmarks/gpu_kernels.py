"""The memory updates: Triton vs the torch reference (vs torch.compile of it, for the Titans memory's forward).

For each chunk size the script first checks the kernel against the reference in float64 on a short prefix, then
times the implementations on the full input and reports tokens/s and achieved TFLOP/s under the FLOP model
below. The gated delta rule also gets a training table: forward plus backward through the Triton pair
(`triton_delta.DeltaRule`) against autograd through the reference, its gradients checked against fp64 autograd
first. A check above tolerance exits after writing the tables: with status 1 if a delta-rule check failed (the
shipped model's memory: training must not run through it), else 3 if only a Titans-memory check failed (2 is
argparse's usage error).

    python benchmarks/gpu_kernels.py --out results/gpu_kernels.md                 # a GPU: 16 heads of 64, 64K tokens
    TRITON_INTERPRET=1 python benchmarks/gpu_kernels.py --smoke --out /tmp/k.md   # CPU, tiny, slow (tests/kernels)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sleeptime.kernels import reference
from sleeptime.kernels.reference import MemoryRule, TitansState

# relative RMSE allowed against the fp64 reference, by the kernel's matmul-input precision. An fp32 ("ieee") kernel
# may also err as much as REF_FACTOR times the fp32 torch reference itself: the Titans memory's chunked update is
# ill-conditioned in fp32 at large chunks (at D 64, depth 2 the reference errs 1e-5, 9e-5 and 1e-3 at chunks 16, 64
# and 256), so a kernel as exact as fp32 allows cannot meet 1e-5 there
TOLERANCE = {"ieee": 1e-5, "tf32": 5e-3, "bf16": 3e-2}
REF_FACTOR = 5


def flops_per_token_head(d: int, expansion: int, depth: int, b: int) -> int:
    """Forward FLOPs per token and head of the chunked update with momentum and exact per-token retrieval.

    One multiply-add is 2 FLOPs. With layer shapes d_in x d_out, P = sum d_in d_out and W = sum (d_in + d_out):
      key forward at the chunk-start weights       Z^l = X^l A^l                        2P
      error rows below the output layer            E^l = (E^{l+1} A^{l+1 T}) o act'     2(P - P_1)
      new A and S: X^T diag(c) E, X^T diag(s) E    two GEMMs reducing over b tokens      4P
      retrieval from the chunk-start state         beta X A + f X S                     4P
      retrieval, intra-chunk term per layer        (C o Xq X^T) E: b d_in + b d_out     2bW
      the decay kernel C = (A o L)(E o L)          a b x b x b product per chunk        2b^2
    Elementwise work (activations, LayerNorm, gates) is left out. Causal halves are counted in full, as computed.
    """
    hidden = expansion * d
    shapes = [(d, d)] if depth == 1 else [(d, hidden)] + [(hidden, hidden)] * (depth - 2) + [(hidden, d)]
    P = sum(i * o for i, o in shapes)
    W = sum(i + o for i, o in shapes)
    return 2 * P + 2 * (P - shapes[0][0] * shapes[0][1]) + 4 * P + 4 * P + 2 * b * W + 2 * b * b


def delta_flops_per_token_head(dk: int, dv: int, b: int) -> int:
    """Forward FLOPs per token and head of the chunked gated delta rule (kernels/triton_delta.py), per chunk of b
    tokens divided by b: K K^T and Q K^T (2 b dk each), K S, Q S and K^T D (2 dk dv each), the forward substitution
    for (I + A)^-1 (2 b^2 over the chunk's b rows), (I + A)^-1 R and the intra-chunk scores times D (2 b dv each).
    """
    return 4 * b * dk + 6 * dk * dv + 2 * b * b + 4 * b * dv


def delta_inputs(B: int, H: int, T: int, D: int, device: str, seed: int) -> tuple[torch.Tensor, ...]:
    """state, q, k (unit), v, beta, alpha of a gated delta rule, alpha small as in the shipped model."""
    g = torch.Generator().manual_seed(seed)
    q, k = (F.normalize(torch.randn(B, H, T, D, generator=g), dim=-1) for _ in range(2))
    v = torch.randn(B, H, T, D, generator=g)
    beta, alpha = torch.rand(B, H, T, generator=g), 0.01 * torch.rand(B, H, T, generator=g)
    state = 0.1 * torch.randn(B, H, D, D, generator=g)
    return tuple(x.to(device) for x in (state, q, k, v, beta, alpha))


def delta_rows(args, device: str, card: str) -> tuple[list[str], bool]:
    """Check the delta-rule kernel against the fp64 reference, then time it against the torch reference."""
    from sleeptime.kernels import triton_delta, triton_delta_chunk

    B, H, T, D = args.batch, args.heads, args.tokens, args.head_dim
    state, q, k, v, beta, alpha = delta_inputs(B, H, T, D, device, seed=7)
    rows, failed = [], False
    for chunk in [c for c in args.chunks if triton_delta.supports(D, D, c)]:
        n = min(T, 4 * chunk + chunk // 2)
        prefix = [x[:, :, :n] for x in (q, k, v, beta, alpha)]
        ref_out, ref_state = reference.delta_update(state.double(), *(x.double() for x in prefix), chunk)
        flop = delta_flops_per_token_head(D, D, chunk) * B * H * T
        variants = []
        for precision in args.precision:
            out, new_state = triton_delta.delta_update(state, *prefix, chunk, precision=precision)
            err = max(rel_rmse(ref_out, out), rel_rmse(ref_state, new_state))
            failed |= err > TOLERANCE[precision]
            fn = lambda c=chunk, p=precision: triton_delta.delta_update(state, q, k, v, beta, alpha, c, precision=p)
            variants.append((f"triton {precision}", fn, err))
        for precision in args.precision:  # the chunk-parallel kernels (kernels/triton_delta_chunk.py)
            out, new_state = triton_delta_chunk.chunk_delta_update(state, *prefix, chunk, precision=precision)
            err = max(rel_rmse(ref_out, out), rel_rmse(ref_state, new_state))
            failed |= err > TOLERANCE[precision]
            fn = lambda c=chunk, p=precision: triton_delta_chunk.chunk_delta_update(
                state, q, k, v, beta, alpha, c, precision=p
            )
            variants.append((f"triton chunked {precision}", fn, err))
        if chunk == 64:  # fla's chunk is 64 whatever is asked: its rows sit with ours at 64
            variants += fla_variants(state, prefix, (q, k, v, beta, alpha), ref_out, ref_state)
            failed |= any(err > TOLERANCE[name.split()[-1]] for name, _, err in variants if name.startswith("fla"))
        variants.append(("torch reference", lambda c=chunk: reference.delta_update(state, q, k, v, beta, alpha, c), None))
        for name, fn, err in variants:
            fn()  # warm-up: compiles the kernel for this chunk size
            seconds = timed(fn, device)
            check_txt = "-" if err is None else f"{err:.1e}"
            rows.append(
                f"| {chunk} | {name} | {B * T / seconds:,.0f} | {seconds * 1e3:,.1f} | {flop / seconds / 1e12:.3g} "
                f"| {check_txt} |"
            )
            print(rows[-1], flush=True)
    header = [
        "",
        f"Gated delta rule (the shipped model's memory), forward, on {card}: B={B}, H={H}, Dk=Dv={D}, T={T}.",
        ("TFLOP/s counts delta_flops_per_token_head(); torch.compile is not timed here (the reference's Python loop "
         "over chunks would unroll). Chunks above 128 have no kernel."),
        "",
        "| chunk | implementation | tokens/s | ms | TFLOP/s | check |",
        "|---|---|---|---|---|---|",
    ]
    return header + rows, failed


def fla_variants(state, prefix, full, ref_out, ref_state) -> list[tuple[str, object, float]]:
    """fla's chunk_gated_delta_rule (kernels/fla_delta.py) in fp32 (its dots in tf32) and with bf16 inputs, when
    fla-core is installed: (name, timed call, check against the fp64 reference on the prefix)."""
    from sleeptime.kernels import fla_delta

    if not fla_delta.available():
        return []
    out = []
    for precision, low in (("tf32", False), ("bf16", True)):
        o, new_state = fla_delta.delta_update(state, *prefix, low_precision=low)
        err = max(rel_rmse(ref_out, o), rel_rmse(ref_state, new_state))
        out.append((f"fla {precision}", lambda low=low: fla_delta.delta_update(state, *full, low_precision=low), err))
    return out


def delta_backward_rows(args, device: str, card: str) -> tuple[list[str], bool]:
    """Training through the gated delta rule: gradients of the Triton pair checked against fp64 autograd through
    the reference on a prefix, then forward + backward timed against autograd through the fp32 reference."""
    from sleeptime.kernels import triton_delta

    B, H, T, D, chunk = args.train_batch, args.heads, args.train_tokens, args.head_dim, 64 if not args.smoke else 16
    state, q, k, v, beta, alpha = delta_inputs(B, H, T, D, device, seed=11)
    d_out = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(12)).to(device)

    def grads(update, inputs, dtype=None):
        leaves = [(x.to(dtype) if dtype else x.clone()).requires_grad_() for x in inputs]
        out, new_state = update(*leaves, chunk)
        ((out * d_out[:, :, : out.shape[2]].to(out.dtype)).sum() + new_state.sum()).backward()
        return [x.grad for x in leaves]

    n = min(T, 2 * chunk + chunk // 2)
    prefix = [state] + [x[:, :, :n] for x in (q, k, v, beta, alpha)]
    exact = grads(reference.delta_update, prefix, torch.float64)
    err = max(rel_rmse(e, o) for e, o in zip(exact, grads(triton_delta.DeltaRule.apply, prefix)))
    failed = err > TOLERANCE["ieee"]
    inputs = (state, q, k, v, beta, alpha)
    rows = []
    runs = [("triton forward + backward", triton_delta.DeltaRule.apply, f"{err:.1e}")]
    from sleeptime.kernels import fla_delta

    if fla_delta.available():
        for precision, low in (("tf32", False), ("bf16", True)):
            update = lambda s, q, k, v, b, a, chunk, low=low: fla_delta.delta_update(s, q, k, v, b, a, low)
            try:
                fla_err = max(rel_rmse(e, o) for e, o in zip(exact, grads(update, prefix)))
            except RuntimeError as exc:  # fla refuses its own backward where it knows it is wrong (Hopper, Triton 3.4-3.7.0)
                rows.append(f"| {chunk} | fla {precision} forward + backward | refused: {str(exc)[:90]} | - | - |")
                print(rows[-1], flush=True)
                continue
            failed |= fla_err > TOLERANCE[precision]
            runs.append((f"fla {precision} forward + backward", update, f"{fla_err:.1e}"))
    runs.append(("torch reference, autograd", reference.delta_update, "-"))
    for name, update, check_txt in runs:
        grads(update, prefix)  # warm-up: compiles the kernels
        seconds = timed(lambda u=update: grads(u, inputs), device)
        rows.append(f"| {chunk} | {name} | {B * T / seconds:,.0f} | {seconds * 1e3:,.1f} | {check_txt} |")
        print(rows[-1], flush=True)
    header = [
        "",
        f"Gated delta rule, training (forward + backward), on {card}: B={B}, H={H}, Dk=Dv={D}, T={T}.",
        ("check = worst relative RMSE of the six input gradients against fp64 autograd through the reference, on "
         "a prefix. The Triton backward walks the tokens one at a time (kernels/triton_delta.py)."),
        "",
        "| chunk | implementation | tokens/s | ms | check |",
        "|---|---|---|---|---|",
    ]
    return header + rows, failed


def make_inputs(B, H, T, D, rule, device, seed=42):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=g)
    init = [torch.randn(H, i, o, generator=g) / i**0.5 for i, o in rule.layer_shapes(D)]
    state = reference.titans_init_state(init, B, rule)
    state = TitansState([w.to(device) for w in state.weights], [s.to(device) for s in state.momentum], {})
    q, k, v = (F.normalize(torch.randn(B, H, T, D, generator=g), dim=-1).to(device) for _ in range(3))
    gates = {"theta": 0.1 * rand(B, H, T), "alpha": 0.1 * rand(B, H, T), "eta": rand(B, H, T)}
    gates = {n: x.to(device) for n, x in gates.items()}
    norm_weight = (1 + 0.1 * torch.randn(H, D, generator=g)).to(device)
    return state, q, k, v, gates, norm_weight


def rel_rmse(ref: torch.Tensor, x: torch.Tensor) -> float:
    ref, x = ref.double(), x.double()
    return ((ref - x).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()


def check(update, rule, inputs, chunk, **options) -> float:
    """Largest relative RMSE of a Titans update in fp32 (y and every state) against the fp64 reference."""
    state, q, k, v, gates, nw = inputs
    wide = lambda x: x.double()
    state64 = TitansState([wide(w) for w in state.weights], [wide(s) for s in state.momentum], {})
    y64, s64 = reference.titans_update(
        state64, wide(q), wide(k), wide(v), {n: wide(x) for n, x in gates.items()}, rule, chunk, wide(nw)
    )
    y, s = update(state, q, k, v, gates, rule, chunk, nw, **options)
    errors = [rel_rmse(y64, y)] + [rel_rmse(a, b) for a, b in zip(s64.weights + s64.momentum, s.weights + s.momentum)]
    return max(errors)


def timed(fn, device) -> float:
    """Seconds for one call, after the caller's warm-up."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="markdown table written here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the CPU under TRITON_INTERPRET=1")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--expansion", type=int, default=4)
    parser.add_argument("--chunks", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--precision", nargs="+", default=["ieee", "tf32"], choices=sorted(TOLERANCE))
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")
    parser.add_argument("--train-batch", type=int, default=16, help="delta-rule training table: batch")
    parser.add_argument("--train-tokens", type=int, default=2048, help="delta-rule training table: tokens")
    parser.add_argument("--delta-only", action="store_true", help="the gated delta rule's tables alone")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("without CUDA the kernels need Triton's interpreter: set TRITON_INTERPRET=1")
    if args.smoke:
        args.batch, args.heads, args.head_dim, args.tokens, args.chunks = 1, 2, 16, 96, [16, 32]
        args.precision, args.no_compile = ["ieee"], True
        args.train_batch, args.train_tokens = 1, 40
    # imported after the interpreter switch is known: @triton.jit reads it at decoration time
    from sleeptime.kernels import triton_titans

    torch.backends.cuda.matmul.allow_tf32 = False
    rule = MemoryRule(depth=args.depth, expansion=args.expansion)
    B, H, T, D = args.batch, args.heads, args.tokens, args.head_dim
    inputs = make_inputs(B, H, T, D, rule, device)
    state, q, k, v, gates, nw = inputs
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    print(f"{card}: B={B} H={H} D={D} T={T} depth={rule.depth} expansion={rule.expansion}", flush=True)

    compiled_chunk = None
    rows, failed = [], False
    for chunk in [] if args.delta_only else args.chunks:
        # the check runs on a prefix of a few chunks (plus a partial one): fp64 at full length is slow
        n_check = min(T, 4 * chunk + chunk // 2)
        short = (state, q[:, :, :n_check], k[:, :, :n_check], v[:, :, :n_check],
                 {n: x[:, :, :n_check] for n, x in gates.items()}, nw)
        flop = flops_per_token_head(D, rule.expansion, rule.depth, chunk) * B * H * T
        def runner(fn, warm_chunks=2, chunk=chunk, **kw):
            # a short call warms up (compiles) each implementation outside the timing
            n = min(T, warm_chunks * chunk)
            warm_inputs = (state, q[:, :, :n], k[:, :, :n], v[:, :, :n], {g: x[:, :, :n] for g, x in gates.items()})
            return lambda warm=False: fn(*(warm_inputs if warm else (state, q, k, v, gates)), rule, chunk, nw, **kw)

        variants = []
        ref_err = check(reference.titans_update, rule, short, chunk)
        for precision in args.precision:
            err = check(triton_titans.titans_update, rule, short, chunk, precision=precision)
            bound = max(TOLERANCE[precision], REF_FACTOR * ref_err) if precision == "ieee" else TOLERANCE[precision]
            failed |= err > bound
            variants.append((f"triton {precision}", runner(triton_titans.titans_update, precision=precision), err))
        variants.append(("torch reference", runner(reference.titans_update), ref_err))
        if not args.no_compile:
            if compiled_chunk is None:
                compiled_chunk = torch.compile(reference._titans_chunk, dynamic=False)

            def with_compiled_chunk(*a):
                # titans_update looks _titans_chunk up at call time: swap in the compiled one for this call only
                eager, reference._titans_chunk = reference._titans_chunk, compiled_chunk  # noqa: B023 set once above
                try:
                    return reference.titans_update(*a)
                finally:
                    reference._titans_chunk = eager

            # a full window of chunks: the coefficient slices' strides, which dynamo guards on, depend on its length
            variants.append(("torch.compile reference", runner(with_compiled_chunk, reference.WINDOW_CHUNKS), None))
        for name, fn, err in variants:
            fn(warm=True)
            seconds = timed(fn, device)
            tok_s = B * T / seconds
            tflops = flop / seconds / 1e12
            check_txt = "-" if err is None else f"{err:.1e}"
            rows.append(f"| {chunk} | {name} | {tok_s:,.0f} | {seconds * 1e3:,.1f} | {tflops:.3g} | {check_txt} |")
            print(rows[-1], flush=True)

    header = [
        (f"Titans memory update, forward, on {card}: B={B}, H={H}, D={D}, T={T}, depth {rule.depth}, "
         f"expansion {rule.expansion}, l2 bias, decay, momentum, residual LayerNorm."),
        ("TFLOP/s counts flops_per_token_head() (benchmarks/gpu_kernels.py); check = worst relative RMSE of y and "
         "the states against the fp64 reference on a prefix (the torch reference's row: its own, in fp32). Bounds: "
         f"{TOLERANCE}, and for ieee at least {REF_FACTOR} times the fp32 reference's error."),
        "",
        "| chunk | implementation | tokens/s | ms | TFLOP/s | check |",
        "|---|---|---|---|---|---|",
    ]
    delta_table, delta_failed = delta_rows(args, device, card)
    train_table, train_failed = delta_backward_rows(args, device, card)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + rows + delta_table + train_table) + "\n")
    if delta_failed or train_failed:
        print("delta-rule kernel check above tolerance", file=sys.stderr)
        return 1
    if failed:
        print("Titans-memory kernel check above tolerance (the delta rule's passed)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
