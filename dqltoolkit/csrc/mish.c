/* Fused Mish forward/backward for contiguous float32 CPU tensors.
 * Single-threaded on purpose: an OpenMP runtime of our own would fight PyTorch's for the cores.
 * One pass over memory each way with one vectorised expf, where eager PyTorch makes softplus, tanh and a
 * multiply (and their backward) separate passes. Built on first use by dqltoolkit/_native.py. */
#include <math.h>
#include <stdint.h>

void dql_mish_fwd(const float* restrict x, float* restrict y, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    float e = expf(fminf(v, 20.0f));
    float m = e * (e + 2.0f);
    y[i] = v * m / (m + 2.0f);
  }
}

void dql_mish_bwd(const float* restrict x, const float* restrict g, float* restrict out, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    float e = expf(fminf(v, 20.0f));
    float m = e * (e + 2.0f);
    float t = m / (m + 2.0f);
    float s = e / (1.0f + e);
    out[i] = g[i] * (t + v * (1.0f - t * t) * s);
  }
}
