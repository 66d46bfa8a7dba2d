/*
 * soft_margin_loss: the two-class logistic loss, elementwise, float32.
 *
 * Per element, with label y in {-1, +1} and m = y x:
 *
 *   l      = log(1 + exp(-m)) = max(-m, 0) + log(1 + e),   e = exp(-|m|)
 *   dl/dx  = -y sigmoid(-m)   = -y (m >= 0 ? e / (1 + e) : 1 / (1 + e))
 *
 * Stable for every m (e <= 1, nothing overflows); see common.h for the float32 math (within
 * 3.4e-7 relative for l and dl/dx, finite for any finite x). At y x = -inf the gradient is its
 * limit -y (torch computes inf / inf = NaN there). "mean" averages over all n_rows * n_cols
 * elements; "none" writes one loss per element.
 *
 * Label check, in the same pass: counts labels with |y| != 1 (NaN included).
 *
 * Memory traffic: read x and y once, write the gradient once (and the elementwise loss for
 * "none"). The elements are one flat range cut into fixed chunks of ML_CHUNK, spread over the
 * threads (so a single long row uses all of them); each chunk's loss sum is float64 (float32 over
 * spans of ML_SPAN), and the chunk sums are added in order at the end.
 */
#include "common.h"

static const ml_kernel info = ML_KERNEL(1, 0, 1, ML_TARGET_F32, 2, 0, 0);

const ml_kernel *ml_soft_margin_loss_info(void) { return &info; }

/* Elements [s, e): writes grad (times gs) and the elementwise loss where asked; returns the
 * float64 loss sum via *sum and the bad-label count. */
ML_INLINE int64_t chunk(const float *restrict x, const float *restrict y, int64_t s, int64_t e,
                        float gs, float *restrict grad, float *restrict loss, double *sum,
                        const int want_grad, const int want_loss, const int want_sum) {
    double total = 0.0;
    int64_t bad = 0;
    for (int64_t s0 = s; s0 < e; s0 += ML_SPAN) {
        int64_t s1 = e - s0 < ML_SPAN ? e : s0 + ML_SPAN;
        float part = 0.0f;
        int32_t nbad = 0;
        ML_SIMD_SUM(part, nbad)
        for (int64_t i = s0; i < s1; i++) {
            float yi = y[i];
            float m = yi * x[i];
            float sig_big, ex;
            float tail = ml_logistic(m, &sig_big, &ex);
            if (want_grad) {
                /* sigmoid(-m) = e sigmoid(|m|) for m >= 0, sigmoid(|m|) otherwise */
                float num = m >= 0 ? ex : 1.0f;
                grad[i] = (-yi * gs) * (num * sig_big);
            }
            float l = (m < 0 ? -m : 0.0f) + tail;
            if (want_loss) loss[i] = l;
            if (want_sum) part += l;
            nbad += (yi < 0 ? -yi : yi) != 1.0f; /* not -1 or +1 (NaN included) */
        }
        total += part;
        bad += nbad;
    }
    *sum = total;
    return bad;
}

static int64_t run_chunk(const ml_call *c, int64_t k, double *sum) {
    const float *x = (const float *)c->x[0], *y = (const float *)c->target;
    float *grad = (float *)c->grad[0];
    float *loss = c->reduction == ML_NONE ? c->loss : 0;
    int64_t n = c->n_rows * c->n_cols;
    int64_t s = k * ML_CHUNK, e = n - s < ML_CHUNK ? n : s + ML_CHUNK;
    float gs = (float)c->gscale;
    if (loss) {
        if (grad) return chunk(x, y, s, e, gs, grad, loss, sum, 1, 1, 0);
        return chunk(x, y, s, e, gs, grad, loss, sum, 0, 1, 0);
    }
    if (grad) return chunk(x, y, s, e, gs, grad, loss, sum, 1, 0, 1);
    return chunk(x, y, s, e, gs, grad, loss, sum, 0, 0, 1);
}

int64_t ml_soft_margin_loss_f32(const ml_call *c) {
    return ml_run_elementwise(c, run_chunk);
}
