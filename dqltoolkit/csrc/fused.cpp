// Diffusion-QL's CPU hot paths as ATen operators (float32): the denoiser's reverse chain and member-
// batched Mish MLPs (forward and backward), and whole pieces of the training step with a hand-written
// backward: the TD target, the critic's regression and the actor's loss with its gradients.
//
// Why: at Hopper sizes a Diffusion-QL step is about a thousand small ops, and in eager PyTorch each one
// pays Python dispatch on the way forward and an autograd node on the way back; on a 2-core CPU that
// bookkeeping was a quarter of the step. Here each piece is one call, running the same matmuls through
// ATen and the Mish kernels of mish.c, with changes of schedule that the math allows:
//   * activations of all K chain steps go into [M, K*B, H] buffers, so each weight gradient is one
//     matmul over K*B rows (sum_k a_k^T g_k) instead of K matmuls and K-1 additions;
//   * the chain's elementwise update (x0 estimate, clamp, posterior mean, noise) is one loop per step;
//   * the training forward stores mish' of each layer rather than its input, so the backward is one
//     multiply per element, not a second exponential;
//   * the actor's Q term never computes the critic's weight gradients;
//   * a multi-seed agent runs its seeds in pairs, one core each, so a seed's working set stays in its
//     core's cache and both cores stay busy through each seed's serial parts.
// Same function as the eager path up to float rounding, with the same random numbers drawn by the
// caller in the same order (tests/test_fused.py checks values, gradients and whole training steps).
//
// Layout conventions (all tensors float32, rows contiguous):
//   weights ws = [W_2 .. W_L, W_out] with W_l [M, H, H] and W_out [M, H, A]; biases bs alike ([M, 1, *]);
//   the first layer is given by its pre-activation (chain: state part + x W_a; MLP: the caller's h1) and
//   a bias that is broadcast over rows ([M, 1, H], chain: the time part of step t) or per row ([M, B, H]).
#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <tuple>
#include <vector>

extern "C" {
void dql_mish_bias_fwd_s(const float* h, int64_t h_gs, const float* b, int64_t b_gs, int64_t b_rs, float* y, int64_t y_gs,
                         int64_t groups, int64_t rows, int64_t cols, int nthreads);
void dql_mish_bias_fwd_d_s(const float* h, int64_t h_gs, const float* b, int64_t b_gs, int64_t b_rs, float* y, int64_t y_gs, float* d,
                           int64_t d_gs, int64_t groups, int64_t rows, int64_t cols, int nthreads);
void dql_mish_bias_bwd_s(const float* h, int64_t h_gs, const float* b, int64_t b_gs, int64_t b_rs, const float* gin, int64_t g_gs,
                         float* out, int64_t o_gs, int64_t groups, int64_t rows, int64_t cols, int nthreads);
}

namespace {

using at::Tensor;

void check_rows(const Tensor& t, const char* what) {
  TORCH_CHECK(t.dim() == 3 && t.scalar_type() == at::kFloat && t.device().is_cpu(), what, ": expected a 3-D float32 CPU tensor");
  TORCH_CHECK(t.stride(2) == 1 && (t.size(1) <= 1 || t.stride(1) == t.size(2)), what, ": rows must be contiguous");
}

// --- matrix products ------------------------------------------------------------------------------
// With AgentConfig.matmul_precision = "medium" the agent switches g_wide_bf16 on: wide products then run
// as bfloat16 products with float32 accumulation and output (oneDNN's bf16 "fpmath" mode, on CPUs with
// AMX; elsewhere, AVX512-BF16 without AMX included, oneDNN stays in float32, so the agent switches this on
// only where precision.bf16_probe saw bf16 products run): 1.6-3.5x faster matmuls here. A product is
// wide when every side is >= 64 and it has >= 6M multiply-adds: a bf16 call pays ~25 us of set-up, so
// smaller products (256x128x128, the 50 candidate rows of one env) lose, and products with a narrow side
// (the action, observation and output sides, 1-16 wide) run 2-5x slower. Those stay in float32; also
// where the user set "medium" globally. The mode is torch's global state, so it is only switched outside
// parallel regions; for_members sets it for the whole region (all products of paired seeds run in bf16).
std::atomic<bool> g_wide_bf16{false};

bool set_wide_bf16(bool on) { return g_wide_bf16.exchange(on); }

at::Float32Precision mkldnn_precision() {
  return at::globalContext().float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL);
}

void set_mkldnn_precision(at::Float32Precision p) {
  at::globalContext().setFloat32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL, p);
}

// Sets the precision wanted for one product (or a region, wide = true) and restores the previous one.
struct ProductPrecision {
  bool restore = false;
  at::Float32Precision before = at::Float32Precision::NONE;
  explicit ProductPrecision(bool wide) {
    if (at::in_parallel_region()) return;
    before = mkldnn_precision();
    at::Float32Precision want = before;
    if (!wide && before == at::Float32Precision::BF16) want = at::Float32Precision::IEEE;
    if (wide && g_wide_bf16.load()) want = at::Float32Precision::BF16;
    if (want == before) return;
    set_mkldnn_precision(want);
    restore = true;
  }
  ProductPrecision(const Tensor& a, const Tensor& b) : ProductPrecision(is_wide(a.size(-2), a.size(-1), b.size(-1))) {}
  static bool is_wide(int64_t m, int64_t k, int64_t n) { return std::min({m, k, n}) >= 64 && m * k * n >= 6000000; }
  ~ProductPrecision() {
    if (restore) set_mkldnn_precision(before);
  }
};

Tensor gemm(const Tensor& a, const Tensor& b) {
  ProductPrecision g(a, b);
  return at::bmm(a, b);
}
Tensor gemm_add(const Tensor& c, const Tensor& a, const Tensor& b) {
  ProductPrecision g(a, b);
  return at::baddbmm(c, a, b);
}
void gemm_out(const Tensor& out_in, const Tensor& a, const Tensor& b) {
  ProductPrecision g(a, b);
  Tensor out = out_in;
  at::bmm_out(out, a, b);
}
void gemm2d_out(const Tensor& out_in, const Tensor& a, const Tensor& b) {
  ProductPrecision g(a, b);
  Tensor out = out_in;
  at::mm_out(out, a, b);
}
void gemm_add_out(const Tensor& out_in, const Tensor& c, const Tensor& a, const Tensor& b) {
  ProductPrecision g(a, b);
  Tensor out = out_in;
  at::baddbmm_out(out, c, a, b);
}
void gemm_add_(const Tensor& c, const Tensor& a, const Tensor& b) {
  ProductPrecision g(a, b);
  c.baddbmm_(a, b);
}

int64_t row_stride(const Tensor& b) { return b.size(1) == 1 ? 0 : b.stride(1); }

// y = mish(h + b)
void mish_bias_fwd(const Tensor& h, const Tensor& b, const Tensor& y) {
  dql_mish_bias_fwd_s(h.data_ptr<float>(), h.stride(0), b.data_ptr<float>(), b.stride(0), row_stride(b), y.data_ptr<float>(),
                      y.stride(0), h.size(0), h.size(1), h.size(2), at::get_num_threads());
}

// y = mish(h + b) and d = mish'(h + b); d may be h
void mish_bias_fwd_deriv(const Tensor& h, const Tensor& b, const Tensor& y, const Tensor& d) {
  dql_mish_bias_fwd_d_s(h.data_ptr<float>(), h.stride(0), b.data_ptr<float>(), b.stride(0), row_stride(b), y.data_ptr<float>(),
                        y.stride(0), d.data_ptr<float>(), d.stride(0), h.size(0), h.size(1), h.size(2), at::get_num_threads());
}

// out = a @ b per member. MKL spreads a batched GEMM's members over the threads; where they do not
// divide evenly (5 seeds on 2 cores) some threads idle, so each member's GEMM then uses all threads
// (10-20% faster for 5 members of these sizes on 2 cores).
void member_mm_out(const Tensor& out_in, const Tensor& a, const Tensor& b) {
  Tensor out = out_in;
  const int64_t M = a.size(0);
  if (M == 1 || M % at::get_num_threads() == 0) {
    gemm_out(out, a, b);
    return;
  }
  for (int64_t m = 0; m < M; m++) {
    Tensor o = out.select(0, m);
    gemm2d_out(o, a.select(0, m), b.select(0, m));
  }
}

Tensor member_mm(const Tensor& a, const Tensor& b) {
  Tensor out = at::empty({a.size(0), a.size(1), b.size(2)}, a.options());
  member_mm_out(out, a, b);
  return out;
}

// Rows [k*B, (k+1)*B) of a [M, K*B, N] buffer: the k-th step's [M, B, N] block.
Tensor block(const Tensor& buf, int64_t k, int64_t B) { return buf.narrow(1, k * B, B); }

// The MLP after its first pre-activation: a_1 = mish(h1 + bias1), a_l = mish(a_{l-1} W_l + b_l), out =
// a_L W_out + b_out. act[l] (l = 0 .. L-1) receive the activations and pre[l] (l >= 1) the matmul
// outputs; they may be blocks of step buffers or scratch. With `deriv` (training), deriv[l] receives
// mish' at layer l instead, for the backward; deriv[l] may be pre[l] (overwritten), never h1.
Tensor tail_forward(const Tensor& h1, const Tensor& bias1, at::TensorList ws, at::TensorList bs, const std::vector<Tensor>& pre,
                    const std::vector<Tensor>& act, const std::vector<Tensor>* deriv) {
  const int64_t L = static_cast<int64_t>(ws.size());
  auto activate = [&](int64_t l, const Tensor& h, const Tensor& b) {
    if (deriv != nullptr) {
      mish_bias_fwd_deriv(h, b, act[l], (*deriv)[l]);
    } else {
      mish_bias_fwd(h, b, act[l]);
    }
  };
  activate(0, h1, bias1);
  for (int64_t l = 1; l < L; l++) {
    member_mm_out(pre[l], act[l - 1], ws[l - 1]);
    activate(l, pre[l], bs[l - 1]);
  }
  return gemm_add(bs[L - 1], act[L - 1], ws[L - 1]);
}

// Gradients w.r.t. every pre-activation (into g_pre[l]) from the gradient of the output.
void tail_backward(const Tensor& g_out, at::TensorList ws, const std::vector<Tensor>& deriv, const std::vector<Tensor>& g_pre) {
  const int64_t L = static_cast<int64_t>(ws.size());
  Tensor g_act = gemm(g_out, ws[L - 1].transpose(1, 2));
  for (int64_t l = L - 1; l >= 0; l--) {
    Tensor out = g_pre[l];
    at::mul_out(out, g_act, deriv[l]);
    if (l > 0) g_act = member_mm(g_pre[l], ws[l - 1].transpose(1, 2));
  }
}

// Weight and bias gradients of layers 2 .. L and the output layer, each one matmul over all rows.
void weight_grads(const std::vector<Tensor>& act, const std::vector<Tensor>& g_pre, const Tensor& g_out, std::vector<Tensor>& gw,
                  std::vector<Tensor>& gb) {
  const size_t L = act.size();
  for (size_t l = 1; l < L; l++) {
    gw.push_back(member_mm(act[l - 1].transpose(1, 2), g_pre[l]));
    gb.push_back(g_pre[l].sum(1, true));
  }
  gw.push_back(gemm(act[L - 1].transpose(1, 2), g_out));
  gb.push_back(g_out.sum(1, true));
}

// --- differentiable products under the precision rule (the eager layers' matmuls) ------------------
// With g_wide_bf16 on, the eager path's layers (heads and objectives without a fused operator) route their
// products here so that forward and backward products follow the same rule as the operators' own: bf16
// for wide ones, float32 for narrow ones (torch's own backward would run every product at one setting).
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct LayerMm : public torch::autograd::Function<LayerMm> {
  static Tensor forward(AutogradContext* ctx, const Tensor& a, const Tensor& b) {
    ctx->save_for_backward({a, b});
    return gemm(a, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& g = grads[0];
    Tensor ga = ctx->needs_input_grad(0) ? gemm(g, saved[1].transpose(1, 2)) : Tensor();
    Tensor gb = ctx->needs_input_grad(1) ? gemm(saved[0].transpose(1, 2), g) : Tensor();
    return {ga, gb};
  }
};

struct LayerAddmm : public torch::autograd::Function<LayerAddmm> {
  static Tensor forward(AutogradContext* ctx, const Tensor& c, const Tensor& a, const Tensor& b) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["c_sizes"] = c.sizes().vec();
    return gemm_add(c, a, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& g = grads[0];
    Tensor gc = ctx->needs_input_grad(0) ? at::sum_to(g, ctx->saved_data["c_sizes"].toIntVector()) : Tensor();
    Tensor ga = ctx->needs_input_grad(1) ? gemm(g, saved[1].transpose(1, 2)) : Tensor();
    Tensor gb = ctx->needs_input_grad(2) ? gemm(saved[0].transpose(1, 2), g) : Tensor();
    return {gc, ga, gb};
  }
};

Tensor layer_mm(const Tensor& a, const Tensor& b) { return LayerMm::apply(a, b); }
Tensor layer_addmm(const Tensor& c, const Tensor& a, const Tensor& b) { return LayerAddmm::apply(c, a, b); }

std::vector<Tensor> buffers(int64_t n, const Tensor& like, int64_t M, int64_t rows, int64_t cols) {
  std::vector<Tensor> out;
  for (int64_t i = 0; i < n; i++) out.push_back(at::empty({M, rows, cols}, like.options()));
  return out;
}

void check_net(at::TensorList ws, at::TensorList bs) {
  TORCH_CHECK(!ws.empty() && ws.size() == bs.size(), "fused: need as many weights as biases (at least the output layer)");
  for (size_t l = 0; l < ws.size(); l++) {
    check_rows(ws[l], "fused: weight");
    check_rows(bs[l], "fused: bias");
  }
}

// --- member-batched MLP tail --------------------------------------------------------------------

// Returns (out, saved) with saved = [act_0 .. act_{L-1}, deriv_0 .. deriv_{L-1}] when `save`.
std::tuple<Tensor, std::vector<Tensor>> mlp_fwd(const Tensor& h1, const Tensor& bias1, at::TensorList ws, at::TensorList bs, bool save) {
  at::NoGradGuard no_grad;  // the operators are their own backward: never record a graph
  check_rows(h1, "mlp_fwd: h1");
  check_rows(bias1, "mlp_fwd: bias1");
  check_net(ws, bs);
  const int64_t L = static_cast<int64_t>(ws.size()), M = h1.size(0), B = h1.size(1), H = h1.size(2);
  std::vector<Tensor> act = buffers(L, h1, M, B, H);
  std::vector<Tensor> pre = {h1};
  for (int64_t l = 1; l < L; l++) pre.push_back(at::empty({M, B, H}, h1.options()));
  std::vector<Tensor> deriv = pre;
  deriv[0] = at::empty({M, B, H}, h1.options());  // h1 is the caller's
  Tensor out = tail_forward(h1, bias1, ws, bs, pre, act, save ? &deriv : nullptr);
  std::vector<Tensor> saved;
  if (save) {
    saved = act;
    saved.insert(saved.end(), deriv.begin(), deriv.end());
  }
  return {out, saved};
}

// Returns [g_h1, g_bias1, gW_2 .. gW_L, gW_out, gb_2 .. gb_L, gb_out]; g_bias1 is summed over rows when
// the bias was broadcast (bias1 is passed for its shape). Without `weights` only g_h1 and g_bias1 are
// computed (the rest are undefined): an actor's backward through the critic needs the gradient w.r.t.
// the action, not the critic's weights.
std::vector<Tensor> mlp_bwd(const Tensor& g_out_in, const Tensor& bias1, at::TensorList ws, at::TensorList bs, at::TensorList saved,
                            bool weights) {
  at::NoGradGuard no_grad;  // the operators are their own backward: never record a graph
  const int64_t L = static_cast<int64_t>(ws.size());
  TORCH_CHECK(static_cast<int64_t>(saved.size()) == 2 * L, "mlp_bwd: wrong number of saved tensors");
  Tensor g_out = g_out_in.contiguous();
  std::vector<Tensor> act(saved.begin(), saved.begin() + L), deriv(saved.begin() + L, saved.end());
  const int64_t M = act[0].size(0), B = act[0].size(1), H = act[0].size(2);
  std::vector<Tensor> g_pre = buffers(L, act[0], M, B, H);
  tail_backward(g_out, ws, deriv, g_pre);
  std::vector<Tensor> gw, gb;
  if (weights) {
    weight_grads(act, g_pre, g_out, gw, gb);
  } else {
    gw.resize(L);
    gb.resize(L);
  }
  std::vector<Tensor> out = {g_pre[0], bias1.size(1) == 1 ? g_pre[0].sum(1, true) : g_pre[0]};
  out.insert(out.end(), gw.begin(), gw.end());
  out.insert(out.end(), gb.begin(), gb.end());
  return out;
}

// --- the reverse diffusion chain ----------------------------------------------------------------

struct StepCoef {
  float recip, recipm1, coef1, coef2, std;
};

StepCoef coef_at(at::ArrayRef<double> coef, int64_t j) {
  return {static_cast<float>(coef[5 * j]), static_cast<float>(coef[5 * j + 1]), static_cast<float>(coef[5 * j + 2]),
          static_cast<float>(coef[5 * j + 3]), static_cast<float>(coef[5 * j + 4])};
}

// Returns (x, saved). noise [M, K, B, A]: noise[:, 0] is x_T, noise[:, k] (k >= 1) is added after reverse
// step k; sp [M, B, H] the state part of the first layer (bias included); tp [M, T, H] the time part of
// every network time; coef: 5 floats per chain position j (recip, recipm1, coef1, coef2, std), step k
// runs position j = K-1-k at network time tidx[j]. saved = [X, X0, XF, deriv_0 .. deriv_{L-1}, act_0 ..
// act_{L-1}] with X, X0: [M, K*B, A] (step inputs, unclamped x0 estimates), XF [M, B, A] (unclamped end),
// deriv_l and act_l [M, K*B, H] (mish' and the activation of layer l at every step).
std::tuple<Tensor, std::vector<Tensor>> chain_fwd(const Tensor& noise_in, const Tensor& sp, const Tensor& tp, const Tensor& w1a,
                                                  at::TensorList ws, at::TensorList bs, at::ArrayRef<double> coef,
                                                  at::IntArrayRef tidx, double lim_d, bool save) {
  at::NoGradGuard no_grad;  // the operators are their own backward: never record a graph
  check_net(ws, bs);
  check_rows(sp, "chain_fwd: state part");
  check_rows(tp, "chain_fwd: time part");
  check_rows(w1a, "chain_fwd: action weight");
  const Tensor noise = noise_in.contiguous();
  TORCH_CHECK(noise.dim() == 4 && noise.scalar_type() == at::kFloat, "chain_fwd: noise must be [M, K, B, A] float32");
  const int64_t M = noise.size(0), K = noise.size(1), B = noise.size(2), A = noise.size(3), H = sp.size(2);
  const int64_t L = static_cast<int64_t>(ws.size());
  TORCH_CHECK(static_cast<int64_t>(tidx.size()) == K && static_cast<int64_t>(coef.size()) == 5 * K, "chain_fwd: need K time indices and 5K coefficients");
  const float lim = static_cast<float>(lim_d);
  const int64_t rows = save ? K * B : B;
  std::vector<Tensor> pre = buffers(L, sp, M, rows, H), act = buffers(L, sp, M, rows, H);
  Tensor X, X0;
  if (save) {
    X = at::empty({M, K * B, A}, sp.options());
    X0 = at::empty({M, K * B, A}, sp.options());
  }
  Tensor x = noise.select(1, 0).contiguous();
  const float* nz = noise.data_ptr<float>();
  for (int64_t k = 0; k < K; k++) {
    const int64_t j = K - 1 - k;
    const int64_t kk = save ? k : 0;
    std::vector<Tensor> pre_k, act_k;
    for (int64_t l = 0; l < L; l++) {
      pre_k.push_back(block(pre[l], kk, B));
      act_k.push_back(block(act[l], kk, B));
    }
    if (save) block(X, k, B).copy_(x);
    gemm_add_out(pre_k[0], sp, x, w1a);
    // training: pre_k is overwritten by mish' (the backward needs nothing else of it)
    Tensor eps = tail_forward(pre_k[0], tp.narrow(1, tidx[j], 1), ws, bs, pre_k, act_k, save ? &pre_k : nullptr).contiguous();
    const StepCoef c = coef_at(coef, j);
    Tensor xn = at::empty({M, B, A}, sp.options());
    const float* xp = x.data_ptr<float>();
    const float* ep = eps.data_ptr<float>();
    float* op = xn.data_ptr<float>();
    float* x0p = save ? X0.data_ptr<float>() : nullptr;
    for (int64_t m = 0; m < M; m++) {
      const float* zp = nz + ((m * K) + k + 1) * B * A;  // noise[m, k + 1], read only when j > 0
      for (int64_t e = 0; e < B * A; e++) {
        const int64_t i = m * B * A + e;
        float x0 = c.recip * xp[i] - c.recipm1 * ep[i];
        if (save) x0p[(m * K + k) * B * A + e] = x0;
        float x0c = x0 < -lim ? -lim : (x0 > lim ? lim : x0);
        float v = c.coef1 * x0c + c.coef2 * xp[i];
        op[i] = j > 0 ? v + c.std * zp[e] : v;
      }
    }
    x = xn;
  }
  Tensor out = x.clamp(-lim, lim);
  std::vector<Tensor> saved;
  if (save) {
    saved = {X, X0, x};
    saved.insert(saved.end(), pre.begin(), pre.end());
    saved.insert(saved.end(), act.begin(), act.end());
  }
  return {out, saved};
}

// The reverse chain of a multistep plan (DPM-Solver++(2M), dqltoolkit/heads/samplers.py), forward only and
// without a graph (acting, the critic's targets): coef holds 6 floats per chain position j (recip, recipm1,
// coef1, coef2, std, coef0) and the step is x <- coef1 clamp(x0) + coef2 x + coef0 clamp(x0 of the step
// before) (+ std noise[k + 1] when j > 0). Other arguments as chain_fwd's; returns the clamped end.
Tensor chain_fwd_multistep(const Tensor& noise_in, const Tensor& sp, const Tensor& tp, const Tensor& w1a, at::TensorList ws,
                           at::TensorList bs, at::ArrayRef<double> coef, at::IntArrayRef tidx, double lim_d) {
  at::NoGradGuard no_grad;
  check_net(ws, bs);
  check_rows(sp, "chain_fwd_multistep: state part");
  check_rows(tp, "chain_fwd_multistep: time part");
  check_rows(w1a, "chain_fwd_multistep: action weight");
  const Tensor noise = noise_in.contiguous();
  TORCH_CHECK(noise.dim() == 4 && noise.scalar_type() == at::kFloat, "chain_fwd_multistep: noise must be [M, K, B, A] float32");
  const int64_t M = noise.size(0), K = noise.size(1), B = noise.size(2), A = noise.size(3), H = sp.size(2);
  const int64_t L = static_cast<int64_t>(ws.size());
  TORCH_CHECK(static_cast<int64_t>(tidx.size()) == K && static_cast<int64_t>(coef.size()) == 6 * K,
              "chain_fwd_multistep: need K time indices and 6K coefficients");
  const float lim = static_cast<float>(lim_d);
  std::vector<Tensor> pre = buffers(L, sp, M, B, H), act = buffers(L, sp, M, B, H);
  Tensor x = noise.select(1, 0).contiguous();
  Tensor prev = at::zeros({M, B, A}, sp.options());  // the clamped x0 of the step before
  const float* nz = noise.data_ptr<float>();
  float* pp = prev.data_ptr<float>();
  for (int64_t k = 0; k < K; k++) {
    const int64_t j = K - 1 - k;
    gemm_add_out(pre[0], sp, x, w1a);
    Tensor eps = tail_forward(pre[0], tp.narrow(1, tidx[j], 1), ws, bs, pre, act, nullptr).contiguous();
    const float recip = static_cast<float>(coef[6 * j]), recipm1 = static_cast<float>(coef[6 * j + 1]);
    const float c1 = static_cast<float>(coef[6 * j + 2]), c2 = static_cast<float>(coef[6 * j + 3]);
    const float sd = static_cast<float>(coef[6 * j + 4]), c0 = static_cast<float>(coef[6 * j + 5]);
    Tensor xn = at::empty({M, B, A}, sp.options());
    const float* xp = x.data_ptr<float>();
    const float* ep = eps.data_ptr<float>();
    float* op = xn.data_ptr<float>();
    for (int64_t m = 0; m < M; m++) {
      const float* zp = nz + ((m * K) + k + 1) * B * A;  // noise[m, k + 1], read only when j > 0
      for (int64_t e = 0; e < B * A; e++) {
        const int64_t i = m * B * A + e;
        const float x0 = recip * xp[i] - recipm1 * ep[i];
        const float x0c = x0 < -lim ? -lim : (x0 > lim ? lim : x0);
        float v = c1 * x0c + c2 * xp[i] + c0 * pp[i];
        if (j > 0) v += sd * zp[e];
        op[i] = v;
        pp[i] = x0c;
      }
    }
    x = xn;
  }
  return x.clamp(-lim, lim);
}

// Returns [g_sp, g_tp, g_w1a, gW_2 .. gW_L, gW_out, gb_2 .. gb_L, gb_out].
std::vector<Tensor> chain_bwd(const Tensor& g_in, const Tensor& tp, const Tensor& w1a, at::TensorList ws, at::TensorList bs,
                              at::TensorList saved, at::ArrayRef<double> coef, at::IntArrayRef tidx, double lim_d) {
  at::NoGradGuard no_grad;  // the operators are their own backward: never record a graph
  const int64_t L = static_cast<int64_t>(ws.size());
  TORCH_CHECK(static_cast<int64_t>(saved.size()) == 3 + 2 * L, "chain_bwd: wrong number of saved tensors");
  const Tensor &X = saved[0], &X0 = saved[1], &XF = saved[2];
  std::vector<Tensor> pre(saved.begin() + 3, saved.begin() + 3 + L), act(saved.begin() + 3 + L, saved.end());
  const int64_t M = X.size(0), B = XF.size(1), A = XF.size(2), K = X.size(1) / B, H = pre[0].size(2);
  const float lim = static_cast<float>(lim_d);
  std::vector<Tensor> g_pre = buffers(L, X, M, K * B, H);
  Tensor GE = at::empty({M, K * B, A}, X.options());
  // the final clamp
  Tensor gx = g_in.contiguous().clone();
  {
    float* g = gx.data_ptr<float>();
    const float* xf = XF.data_ptr<float>();
    for (int64_t i = 0; i < M * B * A; i++)
      if (!(xf[i] >= -lim && xf[i] <= lim)) g[i] = 0.0f;
  }
  const float* x0p = X0.data_ptr<float>();
  float* gep = GE.data_ptr<float>();
  for (int64_t k = K - 1; k >= 0; k--) {
    const int64_t j = K - 1 - k;
    const StepCoef c = coef_at(coef, j);
    Tensor gprev = at::empty({M, B, A}, X.options());
    const float* g = gx.data_ptr<float>();
    float* gp = gprev.data_ptr<float>();
    for (int64_t m = 0; m < M; m++) {
      for (int64_t e = 0; e < B * A; e++) {
        const int64_t i = m * B * A + e, s = (m * K + k) * B * A + e;
        const float x0 = x0p[s];
        const float g_x0 = (x0 >= -lim && x0 <= lim) ? c.coef1 * g[i] : 0.0f;
        gep[s] = -c.recipm1 * g_x0;
        gp[i] = c.coef2 * g[i] + c.recip * g_x0;
      }
    }
    std::vector<Tensor> pre_k, g_pre_k;
    for (int64_t l = 0; l < L; l++) {
      pre_k.push_back(block(pre[l], k, B));
      g_pre_k.push_back(block(g_pre[l], k, B));
    }
    tail_backward(block(GE, k, B), ws, pre_k, g_pre_k);
    if (k > 0) gemm_add_(gprev, g_pre_k[0], w1a.transpose(1, 2));  // x_T itself is noise: no gradient needed
    gx = gprev;
  }
  Tensor G1 = g_pre[0].view({M, K, B, H});
  Tensor g_sp = G1.sum(1);
  Tensor per_step = G1.sum(2);  // [M, K, H]: gradient of the time part used at step k
  Tensor g_tp = at::zeros_like(tp);
  for (int64_t k = 0; k < K; k++) g_tp.select(1, tidx[K - 1 - k]).add_(per_step.select(1, k));
  std::vector<Tensor> out = {g_sp, g_tp, gemm(X.transpose(1, 2), g_pre[0])};
  std::vector<Tensor> gw, gb;
  weight_grads(act, g_pre, GE, gw, gb);
  out.insert(out.end(), gw.begin(), gw.end());
  out.insert(out.end(), gb.begin(), gb.end());
  return out;
}

// --- seed by seed -----------------------------------------------------------------------------------

// The step operators below run a multi-seed agent seed by seed (members are independent): batching all
// members' GEMMs made each of them slower (working set; 5 members do not split evenly over 2 cores).
// On 2 cores, 5 seeds: batched 73 ms a step, one after another 70 ms, in pairs (for_members) 63 ms.
std::vector<Tensor> member_slice(at::TensorList ts, int64_t m, int64_t per) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.narrow(0, m * per, per));
  return out;
}

// f(m) for every member. With two or more threads, pairs of members run side by side, one thread each
// (inside the parallel region ATen, MKL and the Mish kernels run single-threaded), and an odd member
// left over runs alone on all threads.
template <class F>
void for_members(int64_t M, const F& f) {
  const int64_t paired = at::get_num_threads() >= 2 ? (M / 2) * 2 : 0;
  if (paired > 0) {
    ProductPrecision region(true);
    at::parallel_for(0, paired, 1, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; m++) f(m);
    });
  }
  for (int64_t m = paired; m < M; m++) f(m);
}

std::vector<Tensor> cat_members(const std::vector<std::vector<Tensor>>& per_member) {
  std::vector<Tensor> out;
  for (size_t i = 0; i < per_member[0].size(); i++) {
    std::vector<Tensor> parts;
    for (const auto& r : per_member) parts.push_back(r[i]);
    out.push_back(at::cat(parts, 0));
  }
  return out;
}

// --- gradient clipping ----------------------------------------------------------------------------

// Per-member gradient norms [M] (tensors whose leading dim is k*M are grouped seed-major, k twins per
// seed) and, when max_norm > 0, grads scaled in place by min(1, max_norm / (norm + 1e-6)) per member:
// torch.nn.utils.clip_grad_norm_ applied to each seed's parameters on their own.
Tensor clip_members(std::vector<Tensor>& grads, int64_t M, double max_norm) {
  Tensor sq = at::zeros({M}, grads[0].options());
  for (const Tensor& g : grads) sq.add_(g.reshape({M, -1}).pow(2).sum(1));
  Tensor norm = sq.sqrt();
  if (max_norm > 0) {
    Tensor scale = (max_norm / (norm + 1e-6)).clamp_max(1.0).unsqueeze(1);
    for (Tensor& g : grads) g.view({M, -1}).mul_(scale);
  }
  return norm;
}

// --- the twin critic's regression step ------------------------------------------------------------

// Loss and gradients of the critic update, L = sum over twins of mean_b (Q_i(s, a) - y)^2 per member,
// without an autograd graph. obs [M, B, O], actions [M, B, A], y [M, B]; the network has 2M members
// (seed-major twins) with first layer W1 [2M, O+A, H], b1 [2M, 1, H]. Returns [loss (M), grad norm (M),
// gW1, gb1, gW_2 .. gW_out, gb_2 .. gb_out], the gradients clipped per seed to max_norm (0: not clipped).
std::vector<Tensor> critic_grads(const Tensor& obs, const Tensor& actions, const Tensor& y, const Tensor& w1, const Tensor& b1,
                                 at::TensorList ws, at::TensorList bs, double max_norm) {
  at::NoGradGuard no_grad;  // the operators are their own backward: never record a graph
  check_net(ws, bs);
  const int64_t M = obs.size(0), B = obs.size(1), N = w1.size(0);
  TORCH_CHECK(N % M == 0 && y.dim() == 2 && y.size(0) == M && y.size(1) == B, "critic_grads: y must be [M, B] and the network have k*M members");
  const int64_t twins = N / M;
  if (M > 1) {
    std::vector<std::vector<Tensor>> per(M);
    for_members(M, [&](int64_t m) {
      per[m] = critic_grads(obs.narrow(0, m, 1), actions.narrow(0, m, 1), y.narrow(0, m, 1), w1.narrow(0, m * twins, twins),
                            b1.narrow(0, m * twins, twins), member_slice(ws, m, twins), member_slice(bs, m, twins), max_norm);
    });
    return cat_members(per);
  }
  Tensor x = at::cat({obs, actions}, -1).unsqueeze(1).expand({M, twins, B, obs.size(2) + actions.size(2)}).reshape({N, B, -1});
  Tensor h1 = gemm(x, w1);
  auto fwd = mlp_fwd(h1, b1, ws, bs, true);
  Tensor diff = std::get<0>(fwd).view({M, twins, B}) - y.unsqueeze(1);
  Tensor loss = diff.pow(2).mean(2).sum(1);
  Tensor g_out = (diff * (2.0 / static_cast<double>(B))).reshape({N, B, 1});
  std::vector<Tensor> g = mlp_bwd(g_out, b1, ws, bs, std::get<1>(fwd), true);
  std::vector<Tensor> grads = {gemm(x.transpose(1, 2), g[0]), g[1]};
  grads.insert(grads.end(), g.begin() + 2, g.end());
  Tensor norm = clip_members(grads, M, max_norm);
  std::vector<Tensor> out = {loss, norm};
  out.insert(out.end(), grads.begin(), grads.end());
  return out;
}

// [W_a, b_a, W_b, b_b, ...] from position `from` on -> weights and biases.
void split_layers(at::TensorList params, size_t from, std::vector<Tensor>& ws, std::vector<Tensor>& bs) {
  for (size_t i = from; i + 1 < params.size(); i += 2) {
    ws.push_back(params[i]);
    bs.push_back(params[i + 1]);
  }
}

// --- Diffusion-QL's actor step ------------------------------------------------------------------------

// Twin Q of (obs, actions) with the critic's weights as constants; saves what the action gradient needs.
Tensor policy_q_forward(const Tensor& obs, const Tensor& actions, const Tensor& w1, const Tensor& b1, at::TensorList ws,
                        at::TensorList bs, std::vector<Tensor>& saved) {
  const int64_t M = obs.size(0), B = obs.size(1), N = w1.size(0), k = N / M;
  Tensor x = at::cat({obs, actions}, -1).unsqueeze(1).expand({M, k, B, obs.size(2) + actions.size(2)}).reshape({N, B, -1});
  auto fwd = mlp_fwd(gemm(x, w1), b1, ws, bs, true);
  saved = std::get<1>(fwd);
  return std::get<0>(fwd).view({M, k, B});
}

// d(sum_b g[b] Q_k(s_b, a_b))/d(actions) [1, B, A] for one seed (M = 1), through twin k alone: the Q
// term maximises one twin's mean, the other only scales it (detached), so the other twin's backward
// would multiply zeros.
Tensor policy_q_backward(const Tensor& g, int64_t k, const Tensor& w1, at::TensorList ws, const std::vector<Tensor>& saved,
                         int64_t obs_dim) {
  const int64_t L = static_cast<int64_t>(ws.size()), B = g.size(1), A = w1.size(1) - obs_dim, H = w1.size(2);
  std::vector<Tensor> ws_k, deriv_k;
  for (int64_t l = 0; l < L; l++) {
    ws_k.push_back(ws[l].narrow(0, k, 1));
    deriv_k.push_back(saved[L + l].narrow(0, k, 1));
  }
  std::vector<Tensor> g_pre = buffers(L, w1, 1, B, H);
  tail_backward(g, ws_k, deriv_k, g_pre);
  return gemm(g_pre[0], w1.narrow(0, k, 1).narrow(1, obs_dim, A).transpose(1, 2));
}

// The loss L = L_bc + eta * L_q of every member and its gradients w.r.t. the head's parameters, forward
// and backward in one operator. L_bc: the DDPM loss at steps t with noise bc_noise; L_q: the reference
// code's normalised term on the reverse chain's end (approx = false) or on EDP's one-step estimate of
// a0 from the noised dataset action (approx = true), with twin `coin[m] > 0.5` choosing Q1 (an ensemble
// of N: network floor((1 - coin) N), normalised by the next one).
// head = [tW1, tb1, tW2, tb2, W1, b1, W2, b2, .., W_out, b_out] (time MLP, then the denoiser; W1's rows
// are action, time embedding, state); critic = [cW1, cb1, cW2, cb2, ..] (constants). Returns [L_bc (M),
// L_q (M), grad norm (M), gradients in head order clipped per seed to max_norm (0: not clipped)].
std::vector<Tensor> ql_actor_grads(const Tensor& obs, const Tensor& actions, const Tensor& t, const Tensor& bc_noise,
                                   const Tensor& chain_noise, const Tensor& coin, const Tensor& emb, const Tensor& sqrt_abar,
                                   const Tensor& sqrt_1m_abar, at::TensorList head, at::TensorList critic, at::ArrayRef<double> coef,
                                   at::IntArrayRef tidx, double lim, double eta, bool approx, double max_norm) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(head.size() >= 8 && head.size() % 2 == 0 && critic.size() >= 4 && critic.size() % 2 == 0, "ql_actor_grads: bad parameter lists");
  const int64_t M = obs.size(0), B = obs.size(1), O = obs.size(2), A = actions.size(2);
  if (M > 1) {
    const int64_t k = critic[0].size(0) / M;
    std::vector<std::vector<Tensor>> per(M);
    for_members(M, [&](int64_t m) {
      auto one = [m](const Tensor& x) { return x.narrow(0, m, 1); };
      per[m] = ql_actor_grads(one(obs), one(actions), one(t), one(bc_noise), approx ? chain_noise : one(chain_noise), one(coin), emb,
                              sqrt_abar, sqrt_1m_abar, member_slice(head, m, 1), member_slice(critic, m, k), coef, tidx, lim, eta, approx,
                              max_norm);
    });
    return cat_members(per);
  }
  const Tensor &tW1 = head[0], &tb1 = head[1], &tW2 = head[2], &tb2 = head[3], &W1 = head[4], &b1 = head[5];
  const int64_t D = tW1.size(1), H = W1.size(2), T = emb.size(0);
  std::vector<Tensor> ws, bs, cws, cbs;
  split_layers(head, 6, ws, bs);  // after the time MLP (4) and the first layer (2)
  split_layers(critic, 2, cws, cbs);
  const Tensor W1a = W1.narrow(1, 0, A), W1t = W1.narrow(1, A, D), W1s = W1.narrow(1, A + D, O);
  // time MLP over all T steps, then its first-layer contribution tp [M, T, H]; the state part sp [M, B, H]
  Tensor emb_m = emb.unsqueeze(0).expand({M, T, D}).contiguous();
  auto tfwd = mlp_fwd(gemm(emb_m, tW1), tb1, {tW2}, {tb2}, true);
  Tensor tout = std::get<0>(tfwd);
  Tensor tp = gemm(tout, W1t);
  Tensor sp = gemm_add(b1, obs, W1s);
  // behaviour cloning: eps_theta(x_t, t, s)
  Tensor a_t = sqrt_abar.index_select(0, t.reshape(-1)).view({M, B, 1});
  Tensor s_t = sqrt_1m_abar.index_select(0, t.reshape(-1)).view({M, B, 1});
  Tensor x_t = a_t * actions + s_t * bc_noise;
  Tensor t_rows = t.unsqueeze(-1).expand({M, B, H});
  Tensor tsel = at::gather(tp, 1, t_rows);
  auto bfwd = mlp_fwd(gemm_add(sp, x_t, W1a), tsel, ws, bs, true);
  Tensor eps = std::get<0>(bfwd);
  Tensor bc = (eps - bc_noise).pow(2).mean({1, 2});
  // the Q term's actions
  Tensor new_actions, estimate_raw;
  std::vector<Tensor> chain_saved;
  if (approx) {
    estimate_raw = (x_t - s_t * eps) / a_t;
    new_actions = estimate_raw.clamp(-lim, lim);
  } else {
    auto cfwd = chain_fwd(chain_noise, sp, tp, W1a, ws, bs, coef, tidx, lim, true);
    new_actions = std::get<0>(cfwd);
    chain_saved = std::get<1>(cfwd);
  }
  std::vector<Tensor> q_saved;
  Tensor q = policy_q_forward(obs, new_actions, critic[0], critic[1], cws, cbs, q_saved);  // [M, N, B]
  Tensor mean = q.mean(2), scale = q.abs().mean(2);
  // the network whose mean is maximised, k = floor((1 - coin) N), normalised by network k + 1 mod N (twins:
  // Q1 when coin > 0.5, by Q2); float arithmetic as the eager path's float32 tensors. coin is a CPU
  // tensor, so reading it costs no device synchronisation
  const int64_t n_q = q.size(1);
  const float pick = std::floor((1.0f - coin.item<float>()) * static_cast<float>(n_q));
  const int64_t k = std::min<int64_t>(std::max<int64_t>(static_cast<int64_t>(pick), 0), n_q - 1);
  Tensor inv = scale.select(1, (k + 1) % n_q).reciprocal();  // [1]
  Tensor ql = -mean.select(1, k) * inv;
  // backward of L_bc + eta L_q
  Tensor g_q = (inv * (-eta / static_cast<double>(B))).view({1, 1, 1}).expand({1, B, 1}).contiguous();
  Tensor g_new = policy_q_backward(g_q, k, critic[0], cws, q_saved, O);
  Tensor g_eps = (eps - bc_noise) * (2.0 / static_cast<double>(B * A));
  std::vector<Tensor> gw(ws.size()), gb(ws.size());
  Tensor g_sp, g_tp, g_w1a;
  if (approx) {
    Tensor inside = (estimate_raw >= -lim).logical_and(estimate_raw <= lim);
    g_eps = g_eps - at::where(inside, g_new, at::zeros_like(g_new)) * s_t / a_t;
    g_sp = at::zeros_like(sp);
    g_tp = at::zeros_like(tp);
    g_w1a = at::zeros_like(W1a);
  } else {
    std::vector<Tensor> cg = chain_bwd(g_new, tp, W1a, ws, bs, chain_saved, coef, tidx, lim);
    g_sp = cg[0];
    g_tp = cg[1];
    g_w1a = cg[2];
    for (size_t l = 0; l < ws.size(); l++) {
      gw[l] = cg[3 + l];
      gb[l] = cg[3 + ws.size() + l];
    }
  }
  std::vector<Tensor> bg = mlp_bwd(g_eps, tsel, ws, bs, std::get<1>(bfwd), true);
  const Tensor& g_h1 = bg[0];
  for (size_t l = 0; l < ws.size(); l++) {
    gw[l] = gw[l].defined() ? gw[l] + bg[2 + l] : bg[2 + l];
    gb[l] = gb[l].defined() ? gb[l] + bg[2 + ws.size() + l] : bg[2 + ws.size() + l];
  }
  g_sp = g_sp + g_h1;
  g_w1a = g_w1a + gemm(x_t.transpose(1, 2), g_h1);
  g_tp = g_tp.scatter_add(1, t_rows, g_h1);
  // first layer: action rows (g_w1a), time rows through tp = tout W1t, state rows and bias through sp
  Tensor gW1 = at::empty_like(W1);
  gW1.narrow(1, 0, A).copy_(g_w1a);
  gW1.narrow(1, A, D).copy_(gemm(tout.transpose(1, 2), g_tp));
  gW1.narrow(1, A + D, O).copy_(gemm(obs.transpose(1, 2), g_sp));
  Tensor gb1 = g_sp.sum(1, true);
  // time MLP
  std::vector<Tensor> tg = mlp_bwd(gemm(g_tp, W1t.transpose(1, 2)), tb1, {tW2}, {tb2}, std::get<1>(tfwd), true);
  std::vector<Tensor> grads = {gemm(emb_m.transpose(1, 2), tg[0]), tg[1], tg[2], tg[3], gW1, gb1};
  for (size_t l = 0; l < ws.size(); l++) {
    grads.push_back(gw[l]);
    grads.push_back(gb[l]);
  }
  Tensor norm = clip_members(grads, M, max_norm);
  std::vector<Tensor> out = {bc, ql, norm};
  out.insert(out.end(), grads.begin(), grads.end());
  return out;
}

// --- the critic's regression target ------------------------------------------------------------------

// Twin target-critic values [M, k, B] of (s', a') with a' sampled by the (EMA) diffusion head's reverse
// chain from `noise` [M, K, B, A]: the part of y = r + gamma (1 - d) min(Q1', Q2') that needs networks.
// head and critic are parameter lists as in ql_actor_grads (constants here).
Tensor target_q(const Tensor& next_obs, const Tensor& noise, const Tensor& emb, at::TensorList head, at::TensorList critic,
                at::ArrayRef<double> coef, at::IntArrayRef tidx, double lim) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(head.size() >= 8 && head.size() % 2 == 0 && critic.size() >= 4 && critic.size() % 2 == 0, "target_q: bad parameter lists");
  const int64_t M = next_obs.size(0), B = next_obs.size(1), O = next_obs.size(2), A = noise.size(3);
  if (M > 1) {
    const int64_t k = critic[0].size(0) / M;
    std::vector<Tensor> per(M);
    for_members(M, [&](int64_t m) {
      per[m] = target_q(next_obs.narrow(0, m, 1), noise.narrow(0, m, 1), emb, member_slice(head, m, 1), member_slice(critic, m, k), coef, tidx,
                        lim);
    });
    return at::cat(per, 0);
  }
  const Tensor &tW1 = head[0], &tb1 = head[1], &tW2 = head[2], &tb2 = head[3], &W1 = head[4], &b1 = head[5];
  const int64_t D = tW1.size(1), T = emb.size(0);
  std::vector<Tensor> ws, bs, cws, cbs;
  split_layers(head, 6, ws, bs);  // after the time MLP (4) and the first layer (2)
  split_layers(critic, 2, cws, cbs);
  Tensor tout = std::get<0>(mlp_fwd(gemm(emb.unsqueeze(0).expand({M, T, D}).contiguous(), tW1), tb1, {tW2}, {tb2}, false));
  Tensor tp = gemm(tout, W1.narrow(1, A, D));
  Tensor sp = gemm_add(b1, next_obs, W1.narrow(1, A + D, O));
  Tensor na = std::get<0>(chain_fwd(noise, sp, tp, W1.narrow(1, 0, A), ws, bs, coef, tidx, lim, false));
  const int64_t N = critic[0].size(0), k = N / M;
  Tensor x = at::cat({next_obs, na}, -1).unsqueeze(1).expand({M, k, B, O + A}).reshape({N, B, -1});
  return std::get<0>(mlp_fwd(gemm(x, critic[0]), critic[1], cws, cbs, false)).view({M, k, B});
}

}  // namespace

TORCH_LIBRARY(dqltoolkit, m) {
  m.def("set_wide_bf16(bool on) -> bool", &set_wide_bf16);
  m.def("layer_mm(Tensor a, Tensor b) -> Tensor", &layer_mm);
  m.def("layer_addmm(Tensor c, Tensor a, Tensor b) -> Tensor", &layer_addmm);
  m.def("target_q(Tensor next_obs, Tensor noise, Tensor emb, Tensor[] head, Tensor[] critic, float[] coef, int[] tidx, float lim) -> Tensor",
        &target_q);
  m.def(
      "ql_actor_grads(Tensor obs, Tensor actions, Tensor t, Tensor bc_noise, Tensor chain_noise, Tensor coin, Tensor emb, "
      "Tensor sqrt_abar, Tensor sqrt_1m_abar, Tensor[] head, Tensor[] critic, float[] coef, int[] tidx, float lim, float eta, "
      "bool approx, float max_norm) -> Tensor[]",
      &ql_actor_grads);
  m.def(
      "critic_grads(Tensor obs, Tensor actions, Tensor y, Tensor w1, Tensor b1, Tensor[] ws, Tensor[] bs, float max_norm) -> Tensor[]",
      &critic_grads);
  m.def("mlp_fwd(Tensor h1, Tensor bias1, Tensor[] ws, Tensor[] bs, bool save) -> (Tensor, Tensor[])", &mlp_fwd);
  m.def("mlp_bwd(Tensor g_out, Tensor bias1, Tensor[] ws, Tensor[] bs, Tensor[] saved, bool weights) -> Tensor[]", &mlp_bwd);
  m.def(
      "chain_fwd(Tensor noise, Tensor sp, Tensor tp, Tensor w1a, Tensor[] ws, Tensor[] bs, float[] coef, int[] tidx, float lim, "
      "bool save) -> (Tensor, Tensor[])",
      &chain_fwd);
  m.def(
      "chain_fwd_multistep(Tensor noise, Tensor sp, Tensor tp, Tensor w1a, Tensor[] ws, Tensor[] bs, float[] coef, int[] tidx, "
      "float lim) -> Tensor",
      &chain_fwd_multistep);
  m.def(
      "chain_bwd(Tensor g, Tensor tp, Tensor w1a, Tensor[] ws, Tensor[] bs, Tensor[] saved, float[] coef, int[] tidx, float lim) "
      "-> Tensor[]",
      &chain_bwd);
}
