// The chunked Titans update on the CPU: the no-grad forward of `reference.titans_update` for decay retention.
//
// It mirrors `_gate_coefficients`, `_titans_chunk` and `_dual_form_retrieval` of sleeptime/kernels/reference.py for
// every full chunk of one call; the Python wrapper (sleeptime/kernels/cpu.py) keeps the reference's pending-remainder
// logic and runs the partial last chunk through the reference. The math, per head, for a chunk of b tokens with
// keys K, values V, queries Q ([b, D]) and the packed state X_l = [A_l | S_l] per layer ([d_in, d_out] each):
//
//   gate coefficients (a_i = 1 - alpha_i, products within the chunk):
//     beta_t = prod_{i<=t} a_i,   m_t = prod_{i<=t} eta_i,   f_t = sum_{s<=t} (beta_t / beta_s) m_s
//     C[t, i] = theta_i sum_{s=i..t} (beta_t / beta_s)(m_s / m_i)    (theta_i beta_t / beta_i without momentum)
//   forward at the chunk-start weights:  H_0 = K,  Z_l = H_l A_l,  H_{l+1} = act(Z_l)
//   error rows:  E_top = dloss/dZ_top (through the residual LayerNorm when on),  E_{l-1} = (E_l A_l^T) * act'(Z_{l-1})
//   retrieval (dual form):  h_0 = Q,  z_l = diag(beta) h_l A_l + diag(f) h_l S_l - (C o (h_l H_l^T)) E_l,
//                           h_{l+1} = act(z_l),  y = Q + gain * LayerNorm(z_top)  (or z_top)
//   state update:  A_l <- beta_b A_l + f_b S_l - H_l^T diag(c_b) E_l,   S_l <- m_b S_l - H_l^T diag(n_b) E_l
//                  with c_b = C[b-1, :] and n_b[i] = theta_i m_b / m_i.
//
// The reference builds beta, m and C as exp of differences of cumulative logs; here they are running products of
// numbers in [0, 1] (no division anywhere, so nothing overflows either), which agree to float rounding.
//
// Design: every head is independent for the whole call, so one at::parallel_for over the N = B*H heads runs the
// whole chunk loop per head, with that thread's workspaces reused across heads, chunks and calls: no allocation, no
// synchronisation and no dispatcher overhead inside the loop. The 11 matmuls per chunk are single-threaded calls of
// the f32 brgemm micro-kernel that libtorch_cpu exports (oneDNN; BLAS where it is unavailable), the elementwise work
// is fused row loops that the compiler vectorises (exp and erf are polynomial approximations to a few float ulps,
// for that reason).

#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define SLEEPTIME_HAS_MXCSR 1
#endif

namespace {

// Row-major C[m, n] = A[m, k] B[k, n] (+ C when accumulate), through oneDNN's JIT micro-kernel (brgemm) that
// libtorch exports: on this kind of machine ~1.4x the throughput of MKL's sgemm at these small shapes. It has no
// transpose or alpha options, hence the explicit transposes and the negated coefficients below; where oneDNN's
// ukernels are unavailable torch falls back to its BLAS gemm inside the same call.
inline void gemm(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                 int64_t ldc, bool accumulate) {
  at::native::cpublas::brgemm(m, n, k, lda, ldb, ldc, accumulate, A, B, C, /*is_vnni=*/false);
}

#ifdef __AVX__
// one 8 x 8 block by register shuffles (the usual unpack / shuffle / permute sequence)
inline void transpose8x8(const float* in, int64_t ld_in, float* out, int64_t ld_out) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(in + i * ld_in);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(out + i * ld_out, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(out + (i + 4) * ld_out, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}
#endif

// out[j, i] = in[i, j] for an in of [rows, cols]: 8 x 8 register blocks where AVX is on, scalar at the edges.
void transpose(const float* in, int64_t ld_in, float* out, int64_t ld_out, int64_t rows, int64_t cols) {
  int64_t rows8 = 0, cols8 = 0;
#ifdef __AVX__
  rows8 = rows / 8 * 8;
  cols8 = cols / 8 * 8;
  for (int64_t i = 0; i < rows8; i += 8)
    for (int64_t j = 0; j < cols8; j += 8) transpose8x8(in + i * ld_in + j, ld_in, out + j * ld_out + i, ld_out);
#endif
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = i < rows8 ? cols8 : 0; j < cols; ++j) out[j * ld_out + i] = in[i * ld_in + j];
}

// exp by Cephes' expf polynomial; branch-free so that loops over it vectorise. Inputs are clamped to the normal
// range (exp(-87) ~ 1.6e-38 instead of a subnormal), which no caller here can tell apart from the true value.
C10_ALWAYS_INLINE float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);  // ternaries, not std::min/max: those block vectorisation
  float n = x * 1.44269504088896341f;
  n = (n + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick; no -ffast-math in this build)
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

// erf by Eigen's rational approximation on [-4, 4] (|error| < 1e-7; erf is +-1 in float beyond).
C10_ALWAYS_INLINE float fast_erf(float x) {
  x = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x);
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  return x * p / q;
}

enum Act : int64_t { kSilu = 0, kGelu = 1 };
enum Bias : int64_t { kL2 = 0, kLp = 1, kHuber = 2 };
constexpr float kLnEps = 1e-5f;  // reference.LN_EPS
constexpr int64_t kMaxDepth = 64;

// h = act(z) and, when grad is given, act'(z): one exp per element serves both (the reference takes two passes).
void activate(const float* z, float* h, float* grad, int64_t count, int64_t act) {
  if (act == kSilu) {
    if (grad) {
      for (int64_t i = 0; i < count; ++i) {
        const float s = 1.0f / (1.0f + fast_exp(-z[i]));
        h[i] = z[i] * s;
        grad[i] = s * (1.0f + z[i] * (1.0f - s));
      }
    } else {
      for (int64_t i = 0; i < count; ++i) h[i] = z[i] / (1.0f + fast_exp(-z[i]));
    }
    return;
  }
  // exact (erf) GELU, as F.gelu
  constexpr float kInvSqrt2 = 0.70710678118654752f, kInvSqrt2Pi = 0.39894228040143268f;
  if (grad) {
    for (int64_t i = 0; i < count; ++i) {
      const float x = z[i];
      const float cdf = 0.5f * (1.0f + fast_erf(x * kInvSqrt2));
      h[i] = x * cdf;
      grad[i] = cdf + x * kInvSqrt2Pi * fast_exp(-0.5f * x * x);
    }
  } else {
    for (int64_t i = 0; i < count; ++i) h[i] = z[i] * 0.5f * (1.0f + fast_erf(z[i] * kInvSqrt2));
  }
}

// LayerNorm without affine of one row of length D: writes x_hat, returns 1/std (reference._layer_norm).
inline float layer_norm_row(const float* z, float* x_hat, int64_t D) {
  float mean = 0.0f;
  for (int64_t j = 0; j < D; ++j) mean += z[j];
  mean /= static_cast<float>(D);
  float var = 0.0f;
  for (int64_t j = 0; j < D; ++j) {
    const float c = z[j] - mean;
    x_hat[j] = c;
    var += c * c;
  }
  const float rstd = 1.0f / std::sqrt(var / static_cast<float>(D) + kLnEps);
  for (int64_t j = 0; j < D; ++j) x_hat[j] *= rstd;
  return rstd;
}

// d loss / d prediction of the attentional bias for one row, in place on the residual (reference.bias_grad).
inline void bias_grad_row(float* r, int64_t D, int64_t bias, float p, float delta) {
  if (bias == kL2) {
    for (int64_t j = 0; j < D; ++j) r[j] *= 2.0f;
  } else if (bias == kLp) {
    for (int64_t j = 0; j < D; ++j) {
      const float sign = (r[j] > 0.0f) - (r[j] < 0.0f);
      r[j] = p * sign * std::pow(std::fabs(r[j]), p - 1.0f);
    }
  } else {  // Huber: l2 inside the ball of radius delta, delta * sign beyond it
    float sq = 0.0f;
    for (int64_t j = 0; j < D; ++j) sq += r[j] * r[j];
    const bool inside = std::sqrt(sq) <= delta;
    for (int64_t j = 0; j < D; ++j) {
      const float sign = (r[j] > 0.0f) - (r[j] < 0.0f);
      r[j] = inside ? 2.0f * r[j] : delta * sign;
    }
  }
}

struct Layer {
  int64_t d_in, d_out;
};

// One thread's scratch, sized once for the call and reused for every head and chunk it processes.
struct Workspace {
  std::vector<std::vector<float>> hidden, act_grad, errors;  // per layer: H_{l+1} = act(Z_l), act'(Z_l), E_l
  std::vector<std::vector<float>> inputs_t, weights_t;        // per layer: H_l^T [d_in, b], A_l^T [d_out, d_in]
  std::vector<float> z, both, qk, ping, pong, rhs, C, beta, f, c_end, s_end, G, P, x_hat;
  std::vector<int64_t> key;  // the shapes it was sized for

  Workspace(const std::vector<Layer>& layers, int64_t b, int64_t D, int64_t packs) {
    int64_t widest = D;
    for (const auto& l : layers) widest = std::max({widest, l.d_in, l.d_out});
    const auto depth = static_cast<int64_t>(layers.size());
    for (int64_t l = 0; l < depth; ++l) {
      const int64_t rows = b * layers[l].d_out;
      errors.emplace_back(rows);
      inputs_t.emplace_back(b * layers[l].d_in);
      weights_t.emplace_back(l > 0 ? layers[l].d_in * layers[l].d_out : 0);
      if (l < depth - 1) {
        hidden.emplace_back(rows);
        act_grad.emplace_back(rows);
      }
    }
    z.resize(b * widest);
    both.resize(b * packs * widest);
    rhs.resize(b * packs * widest);
    ping.resize(b * widest);
    pong.resize(b * widest);
    qk.resize(b * b);
    C.resize(b * b);
    for (auto* v : {&beta, &f, &c_end, &s_end, &G, &P}) v->resize(b);
    x_hat.resize(D);
  }
};

struct Args {
  std::vector<float*> states;
  std::vector<Layer> layers;
  const float *q, *k, *v, *theta, *alpha, *eta, *delta, *gain;
  int64_t q_head, q_row, k_head, k_row, v_head, v_row;  // strides: q, k, v may be views (rows dense)
  float* out;
  int64_t T, D, b, n_chunks, act, bias;
  float p;
  bool momentum, residual_norm;
};

// Per-chunk coefficients from the raw gates (mirrors reference._gate_coefficients as running products).
void gate_coefficients(const Args& a, const float* theta, const float* alpha, const float* eta, Workspace& w,
                       float& beta_end, float& mom_end, float& f_end) {
  const int64_t b = a.b;
  float beta = 1.0f, m = 1.0f, f = 0.0f;
  float* G = w.G.data();  // sum_{s=i..t} (beta_t / beta_s)(m_s / m_i) for the current t, per i
  float* P = w.P.data();  // m_t / m_i for the current t, per i (beta_t / beta_i without momentum)
  for (int64_t t = 0; t < b; ++t) {
    const float at = 1.0f - alpha[t];
    float* row = w.C.data() + t * b;
    beta *= at;
    w.beta[t] = beta;
    if (a.momentum) {
      const float et = eta[t];
      m *= et;
      f = at * f + m;
      w.f[t] = f;
      for (int64_t i = 0; i < t; ++i) {
        P[i] *= et;
        G[i] = at * G[i] + P[i];
      }
      P[t] = 1.0f;
      G[t] = 1.0f;
      for (int64_t i = 0; i <= t; ++i) row[i] = theta[i] * G[i];
    } else {
      for (int64_t i = 0; i < t; ++i) P[i] *= at;
      P[t] = 1.0f;
      for (int64_t i = 0; i <= t; ++i) row[i] = theta[i] * P[i];
    }
    for (int64_t i = t + 1; i < b; ++i) row[i] = 0.0f;
  }
  std::copy_n(w.C.data() + (b - 1) * b, b, w.c_end.data());
  if (a.momentum) {
    for (int64_t i = 0; i < b; ++i) w.s_end[i] = theta[i] * P[i];  // theta_i m_b / m_i
  }
  beta_end = beta;
  mom_end = m;
  f_end = f;
}

void run_chunk(const Args& a, int64_t n, int64_t c, Workspace& w) {
  const int64_t b = a.b, D = a.D, depth = static_cast<int64_t>(a.layers.size());
  const int64_t packs = a.momentum ? 2 : 1;
  const int64_t t0 = c * b;
  const float* q = a.q + n * a.q_head + t0 * a.q_row;
  const float* k = a.k + n * a.k_head + t0 * a.k_row;
  const float* v = a.v + n * a.v_head + t0 * a.v_row;
  const int64_t g0 = n * a.T + t0;
  const float* gain = a.gain ? a.gain + n * D : nullptr;
  float beta_end, mom_end, f_end;
  gate_coefficients(a, a.theta + g0, a.alpha + g0, a.momentum ? a.eta + g0 : nullptr, w, beta_end, mom_end, f_end);

  // this head's packed state per layer, [d_in, packs * d_out]
  float* states[kMaxDepth];
  for (int64_t l = 0; l < depth; ++l) states[l] = a.states[l] + n * a.layers[l].d_in * packs * a.layers[l].d_out;
  // layer inputs of the chunk-start forward: K, then the hidden activations ([b, d_in] each)
  auto input = [&](int64_t l) -> const float* { return l == 0 ? k : w.hidden[l - 1].data(); };
  auto input_ld = [&](int64_t l) { return l == 0 ? a.k_row : a.layers[l].d_in; };

  // forward at the chunk-start weights A_l = X_l[:, :d_out]; each layer input is also kept transposed, [d_in, b],
  // the operand of the retrieval's h H^T and of the update's H^T R
  for (int64_t l = 0; l < depth; ++l) {
    const auto [din, dout] = a.layers[l];
    const int64_t ldx = packs * dout;
    transpose(input(l), input_ld(l), w.inputs_t[l].data(), b, b, din);
    float* z = l < depth - 1 ? w.z.data() : w.errors[depth - 1].data();  // the top Z becomes E_top in place
    gemm(b, dout, din, input(l), input_ld(l), states[l], ldx, z, dout, false);
    if (l < depth - 1) activate(z, w.hidden[l].data(), w.act_grad[l].data(), b * dout, a.act);
  }

  // error rows at the top: d loss / d Z_top
  float* e = w.errors[depth - 1].data();
  for (int64_t t = 0; t < b; ++t) {
    float* row = e + t * D;
    const float* kt = k + t * a.k_row;
    const float* vt = v + t * a.v_row;
    const float delta_t = a.bias == kHuber ? a.delta[g0 + t] : 0.0f;
    if (a.residual_norm) {
      float* xh = w.x_hat.data();
      const float rstd = layer_norm_row(row, xh, D);
      for (int64_t j = 0; j < D; ++j) row[j] = kt[j] + gain[j] * xh[j] - vt[j];
      bias_grad_row(row, D, a.bias, a.p, delta_t);
      // LayerNorm VJP of grad = gain * err: rstd * (grad - mean(grad) - x_hat * mean(grad * x_hat))
      float mean_g = 0.0f, mean_gx = 0.0f;
      for (int64_t j = 0; j < D; ++j) {
        row[j] *= gain[j];
        mean_g += row[j];
        mean_gx += row[j] * xh[j];
      }
      mean_g /= static_cast<float>(D);
      mean_gx /= static_cast<float>(D);
      for (int64_t j = 0; j < D; ++j) row[j] = rstd * (row[j] - mean_g - xh[j] * mean_gx);
    } else {
      for (int64_t j = 0; j < D; ++j) row[j] -= vt[j];
      bias_grad_row(row, D, a.bias, a.p, delta_t);
    }
  }
  // back through the layers at the chunk-start weights: E_{l-1} = (E_l A_l^T) * act'(Z_{l-1})
  for (int64_t l = depth - 1; l > 0; --l) {
    const auto [din, dout] = a.layers[l];
    float* prev = w.errors[l - 1].data();
    transpose(states[l], packs * dout, w.weights_t[l].data(), din, din, dout);
    gemm(b, din, dout, w.errors[l].data(), dout, w.weights_t[l].data(), din, prev, din, false);
    const float* grad = w.act_grad[l - 1].data();
    for (int64_t i = 0; i < b * din; ++i) prev[i] *= grad[i];
  }

  // retrieval at each token's own weights, layer by layer (dual form)
  const float* h = q;
  int64_t ldh = a.q_row;
  for (int64_t l = 0; l < depth; ++l) {
    const auto [din, dout] = a.layers[l];
    const int64_t ldx = packs * dout;
    float* z = (l % 2 == 0) ? w.ping.data() : w.pong.data();
    // one matmul reads A and S side by side
    gemm(b, ldx, din, h, ldh, states[l], ldx, w.both.data(), ldx, false);
    gemm(b, b, din, h, ldh, w.inputs_t[l].data(), b, w.qk.data(), b, false);
    for (int64_t t = 0; t < b; ++t) {
      float* qk = w.qk.data() + t * b;
      const float* crow = w.C.data() + t * b;
      // -C: the matmul below accumulates (no alpha); C is zero above the diagonal: causal
      for (int64_t i = 0; i < b; ++i) qk[i] *= -crow[i];
      const float* both = w.both.data() + t * ldx;
      float* zt = z + t * dout;
      const float bt = w.beta[t];
      if (a.momentum) {
        const float ft = w.f[t];
        for (int64_t j = 0; j < dout; ++j) zt[j] = bt * both[j] + ft * both[dout + j];
      } else {
        for (int64_t j = 0; j < dout; ++j) zt[j] = bt * both[j];
      }
    }
    gemm(b, dout, b, w.qk.data(), b, w.errors[l].data(), dout, z, dout, true);
    if (l < depth - 1) activate(z, z, nullptr, b * dout, a.act);
    h = z;
    ldh = dout;
  }
  float* y = a.out + (n * a.T + t0) * D;
  for (int64_t t = 0; t < b; ++t) {
    const float* zt = h + t * D;
    float* yt = y + t * D;
    if (a.residual_norm) {
      float* xh = w.x_hat.data();
      layer_norm_row(zt, xh, D);
      for (int64_t j = 0; j < D; ++j) yt[j] = q[t * a.q_row + j] + gain[j] * xh[j];
    } else {
      std::copy_n(zt, D, yt);
    }
  }

  // commit: [A | S] <- [beta_b A + f_b S | m_b S] - H^T [diag(c_b) E | diag(n_b) E]
  for (int64_t l = 0; l < depth; ++l) {
    const auto [din, dout] = a.layers[l];
    const int64_t ldx = packs * dout;
    const float* err = w.errors[l].data();
    float* rhs = w.rhs.data();
    for (int64_t t = 0; t < b; ++t) {  // negated: the matmul accumulates
      const float ct = -w.c_end[t];
      for (int64_t j = 0; j < dout; ++j) rhs[t * ldx + j] = ct * err[t * dout + j];
      if (a.momentum) {
        const float st = -w.s_end[t];
        for (int64_t j = 0; j < dout; ++j) rhs[t * ldx + dout + j] = st * err[t * dout + j];
      }
    }
    float* x = states[l];
    for (int64_t r = 0; r < din; ++r) {
      float* A = x + r * ldx;
      if (a.momentum) {
        float* S = A + dout;
        for (int64_t j = 0; j < dout; ++j) {
          A[j] = beta_end * A[j] + f_end * S[j];
          S[j] *= mom_end;
        }
      } else {
        for (int64_t j = 0; j < dout; ++j) A[j] *= beta_end;
      }
    }
    gemm(din, ldx, b, w.inputs_t[l].data(), b, rhs, ldx, x, ldx, true);
  }
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), "titans_chunks: ", name,
              " must be a contiguous float32 CPU tensor");
}

// states: per layer [N, d_in, d_out (x2 with momentum)], updated in place. q, k, v: [N, T, D] with T >= b * n_chunks
// (any strides with dense rows);
// theta, alpha, eta, delta: [N, T] (eta, delta empty when unused); gain: [N, D] or empty; out: [N, T, D] whose rows
// of the full chunks are written.
void titans_chunks(at::TensorList states, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& theta, const at::Tensor& alpha, const at::Tensor& eta, const at::Tensor& delta,
                   const at::Tensor& gain, const at::Tensor& out, int64_t chunk, int64_t n_chunks, int64_t act,
                   int64_t bias, double p, bool momentum, bool residual_norm) {
  TORCH_CHECK(!states.empty() && static_cast<int64_t>(states.size()) <= kMaxDepth && chunk >= 1 && n_chunks >= 0,
              "titans_chunks: bad arguments");
  for (const auto* t : {&q, &k, &v}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 3 && t->stride(2) == 1,
                "titans_chunks: q, k, v must be float32 CPU tensors [N, T, D] with dense rows");
  }
  check(out, "out");
  check(theta, "theta");
  check(alpha, "alpha");
  const int64_t N = k.size(0), T = k.size(1), D = k.size(2);
  TORCH_CHECK(q.sizes() == k.sizes() && v.sizes() == k.sizes() && out.sizes() == k.sizes(), "titans_chunks: shapes");
  TORCH_CHECK(chunk * n_chunks <= T && theta.numel() == N * T && alpha.numel() == N * T, "titans_chunks: lengths");
  Args a;
  int64_t prev_out = D;
  const int64_t packs = momentum ? 2 : 1;
  for (const auto& s : states) {
    check(s, "states");
    TORCH_CHECK(s.dim() == 3 && s.size(0) == N && s.size(1) == prev_out && s.size(2) % packs == 0, "titans_chunks: state shapes");
    a.layers.push_back({s.size(1), s.size(2) / packs});
    a.states.push_back(s.data_ptr<float>());
    prev_out = s.size(2) / packs;
  }
  TORCH_CHECK(prev_out == D, "titans_chunks: the last layer must map back to the head dim");
  if (momentum) {
    check(eta, "eta");
    TORCH_CHECK(eta.numel() == N * T, "titans_chunks: eta length");
  }
  if (bias == kHuber) {
    check(delta, "delta");
    TORCH_CHECK(delta.numel() == N * T, "titans_chunks: delta length");
  }
  if (residual_norm) {
    check(gain, "gain");
    TORCH_CHECK(gain.numel() == N * D, "titans_chunks: gain shape");
  }
  TORCH_CHECK(act == kSilu || act == kGelu, "titans_chunks: unknown activation");
  TORCH_CHECK(bias == kL2 || bias == kLp || bias == kHuber, "titans_chunks: unknown bias");
  a.q = q.data_ptr<float>();
  a.k = k.data_ptr<float>();
  a.v = v.data_ptr<float>();
  a.q_head = q.stride(0), a.q_row = q.stride(1);
  a.k_head = k.stride(0), a.k_row = k.stride(1);
  a.v_head = v.stride(0), a.v_row = v.stride(1);
  a.theta = theta.data_ptr<float>();
  a.alpha = alpha.data_ptr<float>();
  a.eta = momentum ? eta.data_ptr<float>() : nullptr;
  a.delta = bias == kHuber ? delta.data_ptr<float>() : nullptr;
  a.gain = residual_norm ? gain.data_ptr<float>() : nullptr;
  a.out = out.data_ptr<float>();
  a.T = T;
  a.D = D;
  a.b = chunk;
  a.n_chunks = n_chunks;
  a.act = act;
  a.bias = bias;
  a.p = static_cast<float>(p);
  a.momentum = momentum;
  a.residual_norm = residual_norm;
  if (n_chunks == 0) return;

#ifdef SLEEPTIME_HAS_MXCSR
  // the worker threads follow the caller's denormal mode (torch.set_flush_denormal sets only the calling thread)
  const unsigned int caller_csr = _mm_getcsr() & 0x8040u;  // FTZ | DAZ
#endif
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
#ifdef SLEEPTIME_HAS_MXCSR
    const unsigned int saved = _mm_getcsr();
    _mm_setcsr((saved & ~0x8040u) | caller_csr);
#endif
    // kept per thread across calls (a model calls this every segment): no allocation or page faults per call
    thread_local std::unique_ptr<Workspace> cached;
    std::vector<int64_t> key = {a.b, a.D, packs};
    for (const auto& l : a.layers) key.insert(key.end(), {l.d_in, l.d_out});
    if (!cached || cached->key != key) {
      cached = std::make_unique<Workspace>(a.layers, a.b, a.D, packs);
      cached->key = std::move(key);
    }
    Workspace& w = *cached;
    // a head at a time through all its chunks: its state stays in this core's cache
    for (int64_t n = begin; n < end; ++n)
      for (int64_t c = 0; c < a.n_chunks; ++c) run_chunk(a, n, c, w);
#ifdef SLEEPTIME_HAS_MXCSR
    _mm_setcsr(saved);
#endif
  });
}

}  // namespace

TORCH_LIBRARY(sleeptime_cpu, m) {
  m.def(
      "titans_chunks(Tensor(a!)[] states, Tensor q, Tensor k, Tensor v, Tensor theta, Tensor alpha, Tensor eta, "
      "Tensor delta, Tensor gain, Tensor(b!) out, int chunk, int n_chunks, int act, int bias, float p, bool momentum, "
      "bool residual_norm) -> ()",
      &titans_chunks);
}
