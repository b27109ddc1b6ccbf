/* Fused Mish forward/backward for contiguous float32 CPU tensors, optionally with the bias add fused in.
 *
 * With e = exp(x), m = e (e + 2) and q = 1 / (m + 2):
 *   mish(x)  = x * tanh(softplus(x)) = x m q
 *   mish'(x) = m q + 4 x e (e + 1) q^2        (since 1 - tanh^2 = 4 (m + 1) q^2 and m + 1 = (e + 1)^2)
 * so each direction costs one exponential and one reciprocal per element. The exponential is inlined
 * (Cody-Waite range reduction + Cephes' degree-6 polynomial, ~2 ulp) so that the compiler vectorises the
 * loops; a call into libm's vector expf was 4x slower here. The ``_bias`` variants compute
 * mish(h + b) for h [rows, cols] and b [cols] without materialising h + b, which saves the copy of the
 * broadcast bias that baddbmm makes before its matmul.
 *
 * Parallel over ``nthreads`` with OpenMP. The library is linked against libgomp.so.1, the soname of the
 * runtime PyTorch already loaded, so the dynamic linker binds it to that same runtime and its warm thread
 * pool: there is no second OpenMP runtime competing for the cores. Compiled into the fused operators'
 * library by dqltoolkit/_native.py. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PARALLEL_MIN 16384

static inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 20.0f ? 20.0f : x);  /* mish(x) = x to float precision beyond 20 */
  float k = __builtin_roundf(x * 1.44269504088896341f);
  float r = x - k * 0.693359375f;
  r = r + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  int32_t bits = ((int32_t)k + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline float mish_f(float v) {
  float e = exp_approx(v);
  float m = e * (e + 2.0f);
  return v * m / (m + 2.0f);
}

static inline float mish_grad(float v) {
  float e = exp_approx(v);
  float m = e * (e + 2.0f);
  float q = 1.0f / (m + 2.0f);
  return m * q + 4.0f * v * e * (e + 1.0f) * q * q;
}

/* Strided forms, used by the fused operators in fused.cpp.
 * h, y: [groups, rows, cols] with rows contiguous (row stride = cols) and group strides h_gs, y_gs;
 * b: bias with group stride b_gs and row stride b_rs (0: one bias row broadcast over the rows).
 *
 * y = mish(h + b) and, when d is not NULL (training), d = mish'(h + b), so that the backward is one
 * multiply (g * d) instead of a second exponential per element. d may be h itself (written in place). */
void dql_mish_bias_fwd_d_s(const float* h, int64_t h_gs, const float* restrict b, int64_t b_gs, int64_t b_rs, float* restrict y,
                           int64_t y_gs, float* d, int64_t d_gs, int64_t groups, int64_t rows, int64_t cols, int nthreads) {
  int64_t n = groups * rows;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (n * cols >= PARALLEL_MIN && nthreads > 1)
  for (int64_t gr = 0; gr < n; gr++) {
    int64_t g = gr / rows, r = gr % rows;
    const float* bb = b + g * b_gs + r * b_rs;
    const float* hh = h + g * h_gs + r * cols;
    float* yy = y + g * y_gs + r * cols;
    if (d == NULL) {
#pragma omp simd
      for (int64_t c = 0; c < cols; c++) yy[c] = mish_f(hh[c] + bb[c]);
      continue;
    }
    float* dd = d + g * d_gs + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; c++) {
      float v = hh[c] + bb[c];
      float e = exp_approx(v);
      float m = e * (e + 2.0f);
      float q = 1.0f / (m + 2.0f);
      yy[c] = v * m * q;
      dd[c] = m * q + 4.0f * v * e * (e + 1.0f) * q * q;
    }
  }
}

void dql_mish_bias_fwd_s(const float* restrict h, int64_t h_gs, const float* restrict b, int64_t b_gs, int64_t b_rs,
                         float* restrict y, int64_t y_gs, int64_t groups, int64_t rows, int64_t cols, int nthreads) {
  dql_mish_bias_fwd_d_s(h, h_gs, b, b_gs, b_rs, y, y_gs, NULL, 0, groups, rows, cols, nthreads);
}

/* out = gin * mish'(h + b), same layout rules; gin and out have group strides g_gs and o_gs */
void dql_mish_bias_bwd_s(const float* restrict h, int64_t h_gs, const float* restrict b, int64_t b_gs, int64_t b_rs,
                         const float* restrict gin, int64_t g_gs, float* restrict out, int64_t o_gs, int64_t groups, int64_t rows,
                         int64_t cols, int nthreads) {
  int64_t n = groups * rows;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (n * cols >= PARALLEL_MIN && nthreads > 1)
  for (int64_t gr = 0; gr < n; gr++) {
    int64_t g = gr / rows, r = gr % rows;
    const float* bb = b + g * b_gs + r * b_rs;
    const float* hh = h + g * h_gs + r * cols;
    const float* gg = gin + g * g_gs + r * cols;
    float* oo = out + g * o_gs + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; c++) oo[c] = gg[c] * mish_grad(hh[c] + bb[c]);
  }
}
