// The denoiser's reverse chain and member-batched Mish MLPs as single ATen operators (CPU, float32).
//
// Why: at Hopper sizes a Diffusion-QL step is about a thousand small ops, and in eager PyTorch each one
// pays Python dispatch on the way forward and an autograd node on the way back; on a 2-core CPU that
// bookkeeping was a quarter of the step. Here a whole chain (or MLP) is one operator forward and one
// backward, running the same matmuls through ATen and the Mish kernels of mish.c, with two changes of
// schedule that the math allows:
//   * activations of all K chain steps go into [M, K*B, H] buffers, so each weight gradient is one
//     matmul over K*B rows (sum_k a_k^T g_k) instead of K matmuls and K-1 additions;
//   * the chain's elementwise update (x0 estimate, clamp, posterior mean, noise) is one loop per step.
//   * the training forward stores mish' of each layer rather than its input, so the backward is one
//     multiply per element, not a second exponential.
// Same function as the eager path up to float rounding (tests/test_fused.py checks forward and gradients).
//
// Layout conventions (all tensors float32, rows contiguous):
//   weights ws = [W_2 .. W_L, W_out] with W_l [M, H, H] and W_out [M, H, A]; biases bs alike ([M, 1, *]);
//   the first layer is given by its pre-activation (chain: state part + x W_a; MLP: the caller's h1) and
//   a bias that is broadcast over rows ([M, 1, H], chain: the time part of step t) or per row ([M, B, H]).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/library.h>

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
    Tensor out = pre[l];
    at::bmm_out(out, act[l - 1], ws[l - 1]);
    activate(l, pre[l], bs[l - 1]);
  }
  return at::baddbmm(bs[L - 1], act[L - 1], ws[L - 1]);
}

// Gradients w.r.t. every pre-activation (into g_pre[l]) from the gradient of the output.
void tail_backward(const Tensor& g_out, at::TensorList ws, const std::vector<Tensor>& deriv, const std::vector<Tensor>& g_pre) {
  const int64_t L = static_cast<int64_t>(ws.size());
  Tensor g_act = at::bmm(g_out, ws[L - 1].transpose(1, 2));
  for (int64_t l = L - 1; l >= 0; l--) {
    Tensor out = g_pre[l];
    at::mul_out(out, g_act, deriv[l]);
    if (l > 0) g_act = at::bmm(g_pre[l], ws[l - 1].transpose(1, 2));
  }
}

// Weight and bias gradients of layers 2 .. L and the output layer, each one matmul over all rows.
void weight_grads(const std::vector<Tensor>& act, const std::vector<Tensor>& g_pre, const Tensor& g_out, std::vector<Tensor>& gw,
                  std::vector<Tensor>& gb) {
  const size_t L = act.size();
  for (size_t l = 1; l < L; l++) {
    gw.push_back(at::bmm(act[l - 1].transpose(1, 2), g_pre[l]));
    gb.push_back(g_pre[l].sum(1, true));
  }
  gw.push_back(at::bmm(act[L - 1].transpose(1, 2), g_out));
  gb.push_back(g_out.sum(1, true));
}

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
    at::baddbmm_out(pre_k[0], sp, x, w1a);
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
    if (k > 0) gprev.baddbmm_(g_pre_k[0], w1a.transpose(1, 2));  // x_T itself is noise: no gradient needed
    gx = gprev;
  }
  Tensor G1 = g_pre[0].view({M, K, B, H});
  Tensor g_sp = G1.sum(1);
  Tensor per_step = G1.sum(2);  // [M, K, H]: gradient of the time part used at step k
  Tensor g_tp = at::zeros_like(tp);
  for (int64_t k = 0; k < K; k++) g_tp.select(1, tidx[K - 1 - k]).add_(per_step.select(1, k));
  std::vector<Tensor> out = {g_sp, g_tp, at::bmm(X.transpose(1, 2), g_pre[0])};
  std::vector<Tensor> gw, gb;
  weight_grads(act, g_pre, GE, gw, gb);
  out.insert(out.end(), gw.begin(), gw.end());
  out.insert(out.end(), gb.begin(), gb.end());
  return out;
}

// --- the twin critic's regression step ------------------------------------------------------------

// Loss and gradients of the critic update, L = sum over twins of mean_b (Q_i(s, a) - y)^2 per member,
// without an autograd graph. obs [M, B, O], actions [M, B, A], y [M, B]; the network has 2M members
// (seed-major twins) with first layer W1 [2M, O+A, H], b1 [2M, 1, H]. Returns [loss (M), gW1, gb1,
// gW_2 .. gW_out, gb_2 .. gb_out].
std::vector<Tensor> critic_grads(const Tensor& obs, const Tensor& actions, const Tensor& y, const Tensor& w1, const Tensor& b1,
                                 at::TensorList ws, at::TensorList bs) {
  at::NoGradGuard no_grad;  // the operators are their own backward: never record a graph
  check_net(ws, bs);
  const int64_t M = obs.size(0), B = obs.size(1), N = w1.size(0);
  TORCH_CHECK(N % M == 0 && y.dim() == 2 && y.size(0) == M && y.size(1) == B, "critic_grads: y must be [M, B] and the network have k*M members");
  const int64_t twins = N / M;
  Tensor x = at::cat({obs, actions}, -1).unsqueeze(1).expand({M, twins, B, obs.size(2) + actions.size(2)}).reshape({N, B, -1});
  Tensor h1 = at::bmm(x, w1);
  auto fwd = mlp_fwd(h1, b1, ws, bs, true);
  Tensor diff = std::get<0>(fwd).view({M, twins, B}) - y.unsqueeze(1);
  Tensor loss = diff.pow(2).mean(2).sum(1);
  Tensor g_out = (diff * (2.0 / static_cast<double>(B))).reshape({N, B, 1});
  std::vector<Tensor> g = mlp_bwd(g_out, b1, ws, bs, std::get<1>(fwd), true);
  std::vector<Tensor> out = {loss, at::bmm(x.transpose(1, 2), g[0]), g[1]};
  out.insert(out.end(), g.begin() + 2, g.end());
  return out;
}

}  // namespace

TORCH_LIBRARY(dqltoolkit, m) {
  m.def(
      "critic_grads(Tensor obs, Tensor actions, Tensor y, Tensor w1, Tensor b1, Tensor[] ws, Tensor[] bs) -> Tensor[]",
      &critic_grads);
  m.def("mlp_fwd(Tensor h1, Tensor bias1, Tensor[] ws, Tensor[] bs, bool save) -> (Tensor, Tensor[])", &mlp_fwd);
  m.def("mlp_bwd(Tensor g_out, Tensor bias1, Tensor[] ws, Tensor[] bs, Tensor[] saved, bool weights) -> Tensor[]", &mlp_bwd);
  m.def(
      "chain_fwd(Tensor noise, Tensor sp, Tensor tp, Tensor w1a, Tensor[] ws, Tensor[] bs, float[] coef, int[] tidx, float lim, "
      "bool save) -> (Tensor, Tensor[])",
      &chain_fwd);
  m.def(
      "chain_bwd(Tensor g, Tensor tp, Tensor w1a, Tensor[] ws, Tensor[] bs, Tensor[] saved, float[] coef, int[] tidx, float lim) "
      "-> Tensor[]",
      &chain_bwd);
}
