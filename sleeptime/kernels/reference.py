"""The chunked memory update in plain torch, and the token-by-token loops that define it.

Two inner rules live here (ARCHITECTURE.md §7):

* `titans_update`: a per-head MLP memory trained online by gradient steps on an attentional bias, with momentum
  (surprise) and retention. Inside a chunk of b tokens every gradient is taken at the chunk-start weights (Titans
  §3.2, eq. 16); the chunk's effect is then a closed form of matmuls (research/titans.md §2.2): per-token gate
  products become a b x b decay kernel C built in log space, the per-token weight gradients are never materialised,
  and retrieval at each token's own post-update weights uses the dual form layer by layer. The Miras variants are
  options of the same engine: the attentional bias (l2 = Titans, l_p = Moneta, Huber = Yaad) changes the error rows;
  the retention changes the map from the accumulated state A to the weights W (identity = Titans' decay, l_q
  normalisation = Moneta, row softmax = Memora's KL retention, whose log-domain update is exactly a decay on A).
* `delta_update`: a linear memory under the gated delta rule, exact per token and computed chunk-parallel with one
  triangular solve per chunk: S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T, read o_t = q_t S_t.

Layout is head-first, [B, H, T, D], so that a chunk is a contiguous slice per head; B and H are flattened into one
batch dimension N for the batched matmuls. States and gates are fp32 (or fp64 in tests); memory use does not grow
with T beyond the inputs and outputs: chunks are processed in windows and only the running state is kept.

The sequential loops at the bottom (`titans_update_sequential`, `delta_update_sequential`) are the ground truth the
tests compare against; they take the inner gradient with autograd, independently of the hand-written backprop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

# chunks whose gate coefficients are built in one batched call: bounds the temporaries whatever the input length
WINDOW_CHUNKS = 32


@dataclass(frozen=True)
class MemoryRule:
    """How one memory learns: the inner objective, the retention and the optimiser (Miras' design axes)."""

    depth: int = 2  # MLP layers; 1 = a matrix memory
    expansion: int = 4  # hidden width = expansion * head dim
    # silu: its derivative costs three elementwise ops where gelu needs seven, and the inner loop needs both
    activation: Literal["gelu", "silu"] = "silu"
    residual_norm: bool = True  # M(x) = x + gamma * LayerNorm(MLP(x)), as in TTT and Miras
    bias: Literal["l2", "lp", "huber"] = "l2"  # attentional bias (inner loss)
    p: float = 3.0  # exponent of the l_p bias (Moneta's best setting is p = 3)
    retention: Literal["decay", "lq", "kl"] = "decay"
    q: float = 4.0  # exponent of the l_q normalisation (Moneta: q = 4)
    momentum: bool = True

    def __post_init__(self):
        if self.depth < 1:
            raise ValueError(f"memory depth must be >= 1, got {self.depth}")
        if self.bias not in ("l2", "lp", "huber"):
            raise ValueError(f"unknown attentional bias {self.bias!r}")
        if self.retention not in ("decay", "lq", "kl"):
            raise ValueError(f"unknown retention {self.retention!r}")
        if self.activation not in ("gelu", "silu"):
            raise ValueError(f"unknown activation {self.activation!r}")
        if self.bias == "lp" and self.p <= 1:
            raise ValueError("the l_p bias needs p > 1")

    def layer_shapes(self, head_dim: int) -> list[tuple[int, int]]:
        if self.depth == 1:
            return [(head_dim, head_dim)]
        hidden = self.expansion * head_dim
        return [(head_dim, hidden)] + [(hidden, hidden)] * (self.depth - 2) + [(hidden, head_dim)]

    @property
    def gate_names(self) -> tuple[str, ...]:
        names = ("theta", "alpha") + (("eta",) if self.momentum else ())
        return names + (("delta",) if self.bias == "huber" else ())


@dataclass
class TitansState:
    """The running state of a batch of per-head MLP memories.

    weights: per layer [B, H, d_in, d_out], the accumulator A (the weights themselves under decay retention).
    momentum: per layer, same shapes; empty when the rule has no momentum.
    pending: the unfinished chunk, {"k", "v": [B, H, r, D], gate name: [B, H, r]}; its tokens are applied when the
        chunk completes, so chunk boundaries stay at absolute positions however the input is split across calls.
    """

    weights: list[Tensor]
    momentum: list[Tensor]
    pending: dict[str, Tensor] = field(default_factory=dict)

    @property
    def pending_len(self) -> int:
        return self.pending["k"].shape[2] if self.pending else 0


def _act(z: Tensor, kind: str) -> Tensor:
    return F.gelu(z) if kind == "gelu" else F.silu(z)


def _act_grad(z: Tensor, kind: str) -> Tensor:
    if kind == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0))))
        pdf = torch.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
        return cdf + z * pdf
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


LN_EPS = 1e-5


def _layer_norm(z: Tensor) -> tuple[Tensor, Tensor]:
    """Normalise the last dim without affine parameters; returns (x_hat, 1/std)."""
    mu = z.mean(-1, keepdim=True)
    zc = z - mu
    rstd = torch.rsqrt((zc * zc).mean(-1, keepdim=True) + LN_EPS)
    return zc * rstd, rstd


def _layer_norm_vjp(x_hat: Tensor, rstd: Tensor, grad: Tensor) -> Tensor:
    """d loss / d z for x_hat = LayerNorm(z), given d loss / d x_hat."""
    return rstd * (grad - grad.mean(-1, keepdim=True) - x_hat * (grad * x_hat).mean(-1, keepdim=True))


def bias_grad(residual: Tensor, rule: MemoryRule, delta: Tensor | None) -> Tensor:
    """d loss / d prediction for the attentional bias, per token; residual = M(k) - v, [..., D]."""
    if rule.bias == "l2":
        return 2.0 * residual
    if rule.bias == "lp":
        return rule.p * torch.sign(residual) * residual.abs().pow(rule.p - 1.0)
    # huber (Yaad): the l2 gradient near the target, delta times the l1 gradient beyond it
    inside = residual.norm(dim=-1, keepdim=True) <= delta.unsqueeze(-1)
    return torch.where(inside, 2.0 * residual, delta.unsqueeze(-1) * torch.sign(residual))


def bias_loss(residual: Tensor, rule: MemoryRule, delta: Tensor | None) -> Tensor:
    """The attentional bias itself, summed: the sequential reference differentiates this with autograd."""
    if rule.bias == "l2":
        return (residual * residual).sum()
    if rule.bias == "lp":
        return residual.abs().pow(rule.p).sum()
    norm = residual.norm(dim=-1)
    return torch.where(norm <= delta, norm * norm, delta * residual.abs().sum(-1)).sum()


def retention_map(acc: Tensor, rule: MemoryRule) -> Tensor:
    """The weights W = map(A) that the accumulated state stands for; acc is [N, d_in, d_out] (or [N, b, d_in, d_out])."""
    if rule.retention == "decay":
        return acc
    if rule.retention == "lq":
        # Moneta: W = A / ||A||_q^(q-2), the norm over each layer's whole matrix
        norm = acc.abs().pow(rule.q).sum((-2, -1), keepdim=True).pow(1.0 / rule.q)
        return acc / norm.clamp_min(1e-6).pow(rule.q - 2.0)
    # Memora: a scaled row softmax; the KL-retention step alpha*log W - eta*grad is then a decay on the logits A
    return torch.softmax(acc, dim=-1) * math.sqrt(acc.shape[-1])


def memory_forward(weights: list[Tensor], x: Tensor, rule: MemoryRule, norm_weight: Tensor | None) -> Tensor:
    """Apply the memory MLP with explicit weights: x [N, T, D], weights [N, d_in, d_out] -> [N, T, D]."""
    h = x
    for layer, w in enumerate(weights):
        h = h @ w
        if layer < len(weights) - 1:
            h = _act(h, rule.activation)
    if rule.residual_norm:
        h = x + norm_weight * _layer_norm(h)[0]
    return h


def _gate_coefficients(gates: dict[str, Tensor], momentum: bool) -> dict[str, Tensor]:
    """Per-chunk coefficients of the closed form, in log space; gates are [N, nc, b].

    With a_i = 1 - alpha_i, beta_t = prod_{i<=t} a_i, m_t = prod_{i<=t} eta_i (within the chunk):
      W_t = beta_t W_0 + f_t S_0 - sum_{i<=t} C[t, i] u_i,   S_t = m_t S_0 - sum_{i<=t} n[t, i] u_i
      C[t, i] = theta_i sum_{s=i..t} (beta_t / beta_s) (m_s / m_i),   f_t = sum_{s<=t} (beta_t / beta_s) m_s
    Every ratio is exp of a non-positive number, so nothing overflows.
    """
    theta = gates["theta"]
    log_a = torch.log1p(-gates["alpha"])
    lb = log_a.cumsum(-1)  # [N, nc, b]
    b = lb.shape[-1]
    causal = torch.ones(b, b, dtype=torch.bool, device=lb.device).tril()
    decay = torch.exp((lb.unsqueeze(-1) - lb.unsqueeze(-2)).masked_fill(~causal, -math.inf))  # beta_t / beta_s
    coef = {"beta": lb.exp(), "beta_end": lb[..., -1].exp()}
    if momentum:
        # eta may reach 0 (no momentum at that token): clamp the log so that ratios stay finite
        lm = torch.log(gates["eta"].clamp_min(1e-30)).cumsum(-1)
        mom = torch.exp((lm.unsqueeze(-1) - lm.unsqueeze(-2)).masked_fill(~causal, -math.inf))  # m_s / m_i
        C = (decay @ mom) * theta.unsqueeze(-2)
        coef["f"] = decay @ lm.exp().unsqueeze(-1)  # [N, nc, b, 1]
        coef["f"] = coef["f"].squeeze(-1)
        coef["mom_end"] = lm[..., -1].exp()
        coef["s_end"] = theta * torch.exp(lm[..., -1:] - lm)  # n[b, i]
    else:
        C = decay * theta.unsqueeze(-2)
    coef["C"] = C
    coef["c_end"] = C[..., -1, :]
    return coef


def _titans_chunk(
    states: list[Tensor],
    q: Tensor | None,
    k: Tensor,
    v: Tensor,
    coef: dict[str, Tensor],
    delta: Tensor | None,
    rule: MemoryRule,
    norm_weight: Tensor | None,
    commit: bool,
) -> tuple[Tensor | None, list[Tensor]]:
    """One chunk: q, k, v [N, b, D]; coefficient tensors for this chunk ([N, b, b], [N, b], [N]).

    states holds, per layer, the accumulator and the momentum side by side, [N, d_in, 2 d_out] ([N, d_in, d_out]
    without momentum): one matmul then reads both, and one matmul writes both updates.
    Returns the retrieval output at each token's post-update weights (None when q is None) and, when commit is set,
    the chunk-end states (else the incoming ones).
    """
    depth = len(states)
    widths = [x.shape[-1] // 2 if rule.momentum else x.shape[-1] for x in states]
    w0 = [retention_map(x[..., :o], rule) for x, o in zip(states, widths)]

    # forward at the chunk-start weights, keeping each layer's input and pre-activation
    inputs, pre = [], []
    h = k
    for layer, w in enumerate(w0):
        inputs.append(h)
        z = h @ w
        pre.append(z)
        h = _act(z, rule.activation) if layer < depth - 1 else z
    if rule.residual_norm:
        x_hat, rstd = _layer_norm(h)
        err = bias_grad(k + norm_weight * x_hat - v, rule, delta)
        d = _layer_norm_vjp(x_hat, rstd, norm_weight * err)
    else:
        d = bias_grad(h - v, rule, delta)
    # error rows per layer: d loss_i / d z_i at W_0
    errors = [d]
    for layer in range(depth - 1, 0, -1):
        d = (d @ w0[layer].transpose(-1, -2)) * _act_grad(pre[layer - 1], rule.activation)
        errors.insert(0, d)

    out = None
    if q is not None:
        if rule.retention == "decay":
            out = _dual_form_retrieval(states, widths, q, inputs, errors, coef, rule, norm_weight)
        else:
            out = _materialised_retrieval(states, widths, q, inputs, errors, coef, rule, norm_weight)
    if not commit:
        return out, states

    N = k.shape[0]
    new_states = []
    for layer, (x, o) in enumerate(zip(states, widths)):
        x_t = inputs[layer].transpose(-1, -2)
        e = errors[layer]
        if rule.momentum:
            # [A | S] <- [beta_b A + f_b S - X^T diag(c_b) E | m_b S - X^T diag(n_b) E]
            rows = torch.stack([coef["c_end"], coef["s_end"]], dim=-1)  # [N, b, 2]
            rhs = (rows.unsqueeze(-1) * e.unsqueeze(-2)).reshape(N, -1, 2 * o)
            scale = torch.stack([coef["beta_end"], coef["mom_end"]], dim=-1).view(N, 1, 2, 1)
            new = torch.baddbmm((x.view(N, -1, 2, o) * scale).view_as(x), x_t, rhs, alpha=-1.0)
            new[..., :o] += coef["f"][:, -1, None, None] * x[..., o:]
        else:
            new = torch.baddbmm(coef["beta_end"][:, None, None] * x, x_t, coef["c_end"].unsqueeze(-1) * e, alpha=-1.0)
        new_states.append(new)
    return out, new_states


def _dual_form_retrieval(states, widths, q, inputs, errors, coef, rule, norm_weight) -> Tensor:
    """Retrieval at each token's own weights W_t without materialising them (the TTT dual form, layer by layer)."""
    C, beta = coef["C"], coef["beta"].unsqueeze(-1)
    h = q
    depth = len(states)
    for layer, (x, o) in enumerate(zip(states, widths)):
        both = h @ x
        if rule.momentum:
            base = torch.addcmul(beta * both[..., :o], coef["f"].unsqueeze(-1), both[..., o:])
        else:
            base = beta * both
        z = torch.baddbmm(base, C * (h @ inputs[layer].transpose(-1, -2)), errors[layer], alpha=-1.0)
        h = _act(z, rule.activation) if layer < depth - 1 else z
    if rule.residual_norm:
        h = q + norm_weight * _layer_norm(h)[0]
    return h


def _materialised_retrieval(states, widths, q, inputs, errors, coef, rule, norm_weight) -> Tensor:
    """Retrieval through a non-linear retention map: each token's accumulator A_t is built, mapped and applied."""
    C, beta = coef["C"], coef["beta"]
    per_token = []
    for layer, (x, o) in enumerate(zip(states, widths)):
        acc = beta[..., None, None] * x[..., :o].unsqueeze(1)  # [N, b, d_in, d_out]
        if rule.momentum:
            acc = acc + coef["f"][..., None, None] * x[..., o:].unsqueeze(1)
        acc = acc - torch.einsum("nti,nid,nio->ntdo", C, inputs[layer], errors[layer])
        per_token.append(retention_map(acc, rule))
    h = q
    for layer, w in enumerate(per_token):
        h = torch.einsum("ntd,ntdo->nto", h, w)
        if layer < len(per_token) - 1:
            h = _act(h, rule.activation)
    if rule.residual_norm:
        h = q + norm_weight * _layer_norm(h)[0]
    return h


def _pack(state: TitansState, rule: MemoryRule) -> list[Tensor]:
    """Per layer [N, d_in, d_out (x2 with momentum)]: accumulator and momentum side by side."""
    B, H = state.weights[0].shape[:2]
    if rule.momentum:
        return [torch.cat([a, s], dim=-1).reshape(B * H, a.shape[2], -1) for a, s in zip(state.weights, state.momentum)]
    return [a.reshape(B * H, *a.shape[2:]) for a in state.weights]


def _unpack(states: list[Tensor], B: int, H: int, rule: MemoryRule, pending: dict[str, Tensor]) -> TitansState:
    full = [x.reshape(B, H, *x.shape[1:]) for x in states]
    if rule.momentum:
        halves = [x.chunk(2, dim=-1) for x in full]
        return TitansState([a for a, _ in halves], [s for _, s in halves], pending)
    return TitansState(full, [], pending)


def titans_init_state(init_weights: list[Tensor], batch: int, rule: MemoryRule) -> TitansState:
    """A fresh state from the learned initial memory; init_weights are per layer [H, d_in, d_out]."""
    weights = [w.unsqueeze(0).expand(batch, *w.shape).clone() for w in init_weights]
    momentum = [torch.zeros_like(w) for w in weights] if rule.momentum else []
    return TitansState(weights, momentum, {})


@dataclass
class FlatCall:
    """One call's inputs flattened over N = B * H, with the unfinished chunk of the previous call in front.

    The first `pending` rows were retrieved by that earlier call: only their update is still due, so their query
    rows are zeros and their outputs are dropped. q, k, v: [N, pending + T, D]; gates: [N, pending + T].
    """

    B: int
    H: int
    T: int
    pending: int
    q: Tensor
    k: Tensor
    v: Tensor
    gates: dict[str, Tensor]

    def unfinished(self, start: int) -> dict[str, Tensor]:
        """The rows from `start` on, as the next call's pending tokens ([B, H, r, ...])."""
        def unflat(x: Tensor) -> Tensor:
            rows = x[:, start:]
            return rows.reshape(self.B, self.H, *rows.shape[1:])

        return {"k": unflat(self.k), "v": unflat(self.v)} | {n: unflat(g) for n, g in self.gates.items()}

    def output(self, y: Tensor) -> Tensor:
        """[N, pending + T, D] -> this call's outputs [B, H, T, D]."""
        return y[:, self.pending :].reshape(self.B, self.H, self.T, y.shape[-1])


def flatten_call(
    state: TitansState, q: Tensor, k: Tensor, v: Tensor, gates: dict[str, Tensor], rule: MemoryRule,
    chunk_size: int, norm_weight: Tensor | None,
) -> FlatCall:
    """Check a titans_update call's arguments and lay them out as every implementation consumes them."""
    B, H, T, _D = k.shape
    if q.shape != k.shape or v.shape != k.shape:
        raise ValueError(f"q, k, v must share one shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    missing = set(rule.gate_names) - set(gates)
    if missing:
        raise ValueError(f"missing gates: {sorted(missing)}")
    if rule.residual_norm and norm_weight is None:
        raise ValueError("a residual-norm memory needs norm_weight [H, D]")
    N, r = B * H, state.pending_len
    flat = lambda x: x.reshape(N, x.shape[2], *x.shape[3:])
    ks, vs = flat(k), flat(v)
    gs = {n: flat(gates[n]).to(state.weights[0].dtype) for n in rule.gate_names}
    if r:
        ks = torch.cat([flat(state.pending["k"]).to(ks.dtype), ks], dim=1)
        vs = torch.cat([flat(state.pending["v"]).to(vs.dtype), vs], dim=1)
        gs = {n: torch.cat([flat(state.pending[n]).to(gs[n].dtype), gs[n]], dim=1) for n in rule.gate_names}
    qs = F.pad(flat(q), (0, 0, r, 0)) if r else flat(q)
    return FlatCall(B, H, T, r, qs, ks, vs, gs)


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
    """Feed T tokens through the memory and retrieve at each token after its own update.

    Args:
        state: the running state (see TitansState); chunk boundaries are counted from its first token ever.
        q, k, v: [B, H, T, D].
        gates: per token and head, [B, H, T] each: theta (step size), alpha (forget), eta (momentum, when the rule
            has momentum), delta (Huber threshold, for the Huber bias).
        chunk_size: tokens per chunk; gradients inside a chunk are taken at the chunk-start weights.
        norm_weight: [H, D], the gain of the residual LayerNorm (needed when rule.residual_norm).
    Returns:
        y: [B, H, T, D], the retrieval M_t(q_t); the new state.
    """
    call = flatten_call(state, q, k, v, gates, rule, chunk_size, norm_weight)
    N, D, r = call.B * call.H, k.shape[-1], call.pending
    qs, ks, vs, gs = call.q, call.k, call.v, call.gates
    nw = None if norm_weight is None else norm_weight.repeat(call.B, 1).unsqueeze(1)  # [N, 1, D]

    states = _pack(state, rule)
    total = ks.shape[1]
    n_full = total // chunk_size
    outputs = []
    for start in range(0, n_full, WINDOW_CHUNKS):
        stop = min(n_full, start + WINDOW_CHUNKS)
        lo, hi = start * chunk_size, stop * chunk_size
        window = {n: g[:, lo:hi].reshape(N, stop - start, chunk_size) for n, g in gs.items()}
        coefs = _gate_coefficients(window, rule.momentum)
        for c in range(stop - start):
            a, b = lo + c * chunk_size, lo + (c + 1) * chunk_size
            coef = {name: t[:, c] for name, t in coefs.items()}
            delta = window["delta"][:, c] if "delta" in window else None
            y, states = _titans_chunk(states, qs[:, a:b], ks[:, a:b], vs[:, a:b], coef, delta, rule, nw, commit=True)
            outputs.append(y)
    tail = total - n_full * chunk_size
    pending = {}
    if tail:
        a = n_full * chunk_size
        window = {n: g[:, a:].unsqueeze(1) for n, g in gs.items()}
        coef = {name: t[:, 0] for name, t in _gate_coefficients(window, rule.momentum).items()}
        delta = window["delta"][:, 0] if "delta" in window else None
        y, _ = _titans_chunk(states, qs[:, a:], ks[:, a:], vs[:, a:], coef, delta, rule, nw, commit=False)
        outputs.append(y)
        pending = call.unfinished(a)
    y = torch.cat(outputs, dim=1) if outputs else qs.new_zeros(N, r, D)
    return call.output(y), _unpack(states, call.B, call.H, rule, pending)


def titans_retrieve(state: TitansState, q: Tensor, rule: MemoryRule, norm_weight: Tensor | None = None) -> Tensor:
    """Read the memory at its committed weights without updating it: q [B, H, T, D] -> [B, H, T, D] (MAC's h_t)."""
    B, H, T, D = q.shape
    weights = [retention_map(w.reshape(B * H, *w.shape[2:]), rule) for w in state.weights]
    nw = None if norm_weight is None else norm_weight.repeat(B, 1).unsqueeze(1)
    return memory_forward(weights, q.reshape(B * H, T, D), rule, nw).reshape(B, H, T, D)


def titans_flush(state: TitansState, rule: MemoryRule, norm_weight: Tensor | None = None) -> TitansState:
    """Apply the unfinished chunk as if it ended here (the state the token loop holds after its last token)."""
    if not state.pending:
        return state
    B, H = state.weights[0].shape[:2]
    N = B * H
    p = {n: t.reshape(N, *t.shape[2:]) for n, t in state.pending.items()}
    coef = {n: t[:, 0] for n, t in _gate_coefficients({n: p[n].unsqueeze(1) for n in rule.gate_names}, rule.momentum).items()}
    nw = None if norm_weight is None else norm_weight.repeat(B, 1).unsqueeze(1)
    _, states = _titans_chunk(_pack(state, rule), None, p["k"], p["v"], coef, p.get("delta"), rule, nw, commit=True)
    return _unpack(states, B, H, rule, {})


def titans_update_sequential(
    state: TitansState,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gates: dict[str, Tensor],
    rule: MemoryRule,
    chunk_size: int,
    norm_weight: Tensor | None = None,
    position: int = 0,
) -> tuple[Tensor, TitansState]:
    """Ground truth: the token-by-token rule with the gradient point refreshed at chunk boundaries.

    For each token t: u_t = grad_W bias(M_W(k_t), v_t) at W = map(A) of the last chunk boundary; then
    S_t = eta_t S_{t-1} - theta_t u_t, A_t = (1 - alpha_t) A_{t-1} + S_t, y_t = M_{map(A_t)}(q_t).
    `position` is the absolute index of the first token (chunk boundaries are absolute). The state's pending field is
    ignored: this loop keeps A and S current after every token. At chunk_size 1 this is exactly Titans eqs. 13-14.
    """
    B, H, T, D = k.shape
    acc = [w.clone() for w in state.weights]
    mom = [s.clone() for s in state.momentum] if rule.momentum else [torch.zeros_like(w) for w in acc]
    frozen = None
    ys = []
    for t in range(T):
        if frozen is None or (position + t) % chunk_size == 0:
            frozen = [w.detach().clone() for w in acc]
        for b in range(B):
            for h in range(H):
                ws = [retention_map(w[b, h], rule).detach().requires_grad_(True) for w in frozen]
                kt, vt = k[b, h, t : t + 1].detach(), v[b, h, t : t + 1].detach()
                nw = None if norm_weight is None else norm_weight[h].detach()
                delta = gates["delta"][b, h, t].detach() if "delta" in gates else None
                with torch.enable_grad():
                    pred = memory_forward([w.unsqueeze(0) for w in ws], kt.unsqueeze(0), rule, nw)[0]
                    grads = torch.autograd.grad(bias_loss(pred - vt, rule, delta), ws)
                theta, alpha = gates["theta"][b, h, t], gates["alpha"][b, h, t]
                eta = gates["eta"][b, h, t] if rule.momentum else 0.0
                for layer, g in enumerate(grads):
                    mom[layer][b, h] = eta * mom[layer][b, h] - theta * g
                    acc[layer][b, h] = (1 - alpha) * acc[layer][b, h] + mom[layer][b, h]
        current = [retention_map(w.reshape(B * H, *w.shape[2:]), rule) for w in acc]
        nw = None if norm_weight is None else norm_weight.repeat(B, 1).unsqueeze(1)
        ys.append(memory_forward(current, q[:, :, t].reshape(B * H, 1, D), rule, nw).reshape(B, H, 1, D))
    return torch.cat(ys, dim=2), TitansState(acc, mom if rule.momentum else [], {})


def delta_update(
    state: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, alpha: Tensor, chunk_size: int = 64
) -> tuple[Tensor, Tensor]:
    """The gated delta rule, exact per token, chunk-parallel.

    S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T with a_t = 1 - alpha_t; o_t = q_t S_t.
    Inside a chunk, S_t = G_t S_0 + sum_{j<=t} (G_t/G_j) k_j^T d_j with G the running product of a, and the new-value
    rows d solve the unit lower-triangular system (I + diag(b) strict_tril((G_t/G_j) K K^T)) D = diag(b)(V - diag(G) K S_0).

    Args:
        state: [B, H, Dk, Dv]. q, k: [B, H, T, Dk] (k unit-norm for a contraction). v: [B, H, T, Dv].
        beta (write rate in (0, 1)) and alpha (forget, in [0, 1)): [B, H, T].
    Returns:
        o: [B, H, T, Dv] and the new state.
    """
    B, H, T, Dk = k.shape
    Dv = v.shape[-1]
    N = B * H
    S = state.reshape(N, Dk, Dv)
    qs, ks, vs = q.reshape(N, T, Dk), k.reshape(N, T, Dk), v.reshape(N, T, Dv)
    bs, als = beta.reshape(N, T).to(S.dtype), alpha.reshape(N, T).to(S.dtype)
    outputs = []
    for a in range(0, T, chunk_size * WINDOW_CHUNKS):
        # a window of whole chunks (the last one may be short): the solves are batched over the window's chunks
        b_ = min(T, a + chunk_size * WINDOW_CHUNKS)
        for c0 in range(a, b_, chunk_size):
            c1 = min(b_, c0 + chunk_size)
            kc, vc, qc = ks[:, c0:c1], vs[:, c0:c1], qs[:, c0:c1]
            bc = bs[:, c0:c1].unsqueeze(-1)
            lg = torch.log1p(-als[:, c0:c1]).cumsum(-1)  # log G_t
            n = c1 - c0
            causal = torch.ones(n, n, dtype=torch.bool, device=S.device).tril()
            ratio = torch.exp((lg.unsqueeze(-1) - lg.unsqueeze(-2)).masked_fill(~causal, -math.inf))
            system = torch.eye(n, dtype=S.dtype, device=S.device) + bc * (ratio * (kc @ kc.transpose(-1, -2))).tril(-1)
            g = lg.exp().unsqueeze(-1)
            rhs = bc * (vc - g * (kc @ S))
            d = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
            outputs.append(g * (qc @ S) + (ratio * (qc @ kc.transpose(-1, -2))) @ d)
            end = torch.exp(lg[:, -1:] - lg).unsqueeze(-1)  # G_n / G_j
            S = lg[:, -1].exp()[:, None, None] * S + kc.transpose(-1, -2) @ (end * d)
    o = torch.cat(outputs, dim=1) if outputs else vs.new_zeros(N, 0, Dv)
    return o.reshape(B, H, T, Dv), S.reshape(B, H, Dk, Dv)


def delta_update_sequential(
    state: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, alpha: Tensor
) -> tuple[Tensor, Tensor]:
    """Ground truth for delta_update: the recurrence one token at a time."""
    S = state.clone()
    eye = torch.eye(k.shape[-1], dtype=S.dtype, device=S.device)
    outs = []
    for t in range(k.shape[2]):
        kt, vt = k[:, :, t].unsqueeze(-1), v[:, :, t].unsqueeze(-2)  # [B, H, Dk, 1], [B, H, 1, Dv]
        bt, at = beta[:, :, t][..., None, None], (1 - alpha[:, :, t])[..., None, None]
        S = at * ((eye - bt * kt @ kt.transpose(-1, -2)) @ S) + bt * kt @ vt
        outs.append((q[:, :, t].unsqueeze(-2) @ S).squeeze(-2))
    return torch.stack(outs, dim=2), S


__all__ = [
    "MemoryRule",
    "TitansState",
    "delta_update",
    "delta_update_sequential",
    "memory_forward",
    "retention_map",
    "titans_flush",
    "titans_init_state",
    "titans_retrieve",
    "titans_update",
    "titans_update_sequential",
]
