/*
 * margin_ranking_loss: which of two scores should be higher, elementwise, float32.
 *
 * Per element, with scores x1, x2, label y (+1: x1 should rank higher, -1: x2) and margin m
 * (torch's definition and order of operations, for any label):
 *
 *   z       = -y (x1 - x2) + m
 *   l       = max(z, 0)
 *   dl/dx1  = -y [z >= 0],    dl/dx2 = y [z >= 0]
 *
 * At z = 0 the gradient is not 0 (torch's clamp_min passes it). The gradients are products
 * with y, as torch's, so a NaN label gives NaN gradients there; a NaN score gives a NaN loss
 * (max(NaN, 0) is written z < 0 ? 0 : z) and a zero gradient. The margin is rounded to float32
 * first. "mean" averages over all n_rows * n_cols elements; "none" writes one loss per element.
 * Either gradient may be skipped (grad[i] NULL).
 *
 * Label check, in the same pass: counts labels with |y| != 1 (NaN included).
 *
 * Memory traffic: read x1, x2 and y once, write the two gradients once (and the elementwise
 * loss for "none"). The elements are one flat range cut into fixed chunks of ML_CHUNK, spread
 * over the threads; each chunk's loss sum is float64 (float32 over spans of ML_SPAN), and the
 * chunk sums are added in order at the end, so the result does not depend on the thread count.
 */
#include "common.h"

static const ml_kernel info = ML_KERNEL(2, 1, 1, ML_TARGET_F32, 2, 0, 0);

const ml_kernel *ml_margin_ranking_loss_info(void) { return &info; }

/* Elements [s, e): writes the gradients (times gs) and the elementwise loss where asked;
 * returns the float64 loss sum via *sum and the bad-label count. */
ML_INLINE int64_t chunk(const float *restrict x1, const float *restrict x2,
                        const float *restrict y, int64_t s, int64_t e, float m, float gs,
                        float *restrict g1, float *restrict g2, float *restrict loss,
                        double *sum, const int want_g1, const int want_g2, const int want_loss,
                        const int want_sum) {
    double total = 0.0;
    int64_t bad = 0;
    for (int64_t s0 = s; s0 < e; s0 += ML_SPAN) {
        int64_t s1 = e - s0 < ML_SPAN ? e : s0 + ML_SPAN;
        float part = 0.0f;
        int32_t nbad = 0;
        ML_SIMD_SUM(part, nbad)
        for (int64_t i = s0; i < s1; i++) {
            float yi = y[i];
            float z = -yi * (x1[i] - x2[i]) + m;
            float g = (-yi * gs) * (z >= 0.0f ? 1.0f : 0.0f);
            if (want_g1) g1[i] = g;
            if (want_g2) g2[i] = -g;
            float l = z < 0.0f ? 0.0f : z;
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
    const float *x1 = (const float *)c->x[0], *x2 = (const float *)c->x[1];
    const float *y = (const float *)c->target;
    float *g1 = (float *)c->grad[0], *g2 = (float *)c->grad[1];
    float *loss = c->reduction == ML_NONE ? c->loss : 0;
    int64_t n = c->n_rows * c->n_cols;
    int64_t s = k * ML_CHUNK, e = n - s < ML_CHUNK ? n : s + ML_CHUNK;
    float m = (float)c->opt[0], gs = (float)c->gscale;
    if (loss) {
        if (g1 && g2) return chunk(x1, x2, y, s, e, m, gs, g1, g2, loss, sum, 1, 1, 1, 0);
        if (g1) return chunk(x1, x2, y, s, e, m, gs, g1, g2, loss, sum, 1, 0, 1, 0);
        if (g2) return chunk(x1, x2, y, s, e, m, gs, g1, g2, loss, sum, 0, 1, 1, 0);
        return chunk(x1, x2, y, s, e, m, gs, g1, g2, loss, sum, 0, 0, 1, 0);
    }
    if (g1 && g2) return chunk(x1, x2, y, s, e, m, gs, g1, g2, loss, sum, 1, 1, 0, 1);
    if (g1) return chunk(x1, x2, y, s, e, m, gs, g1, g2, loss, sum, 1, 0, 0, 1);
    if (g2) return chunk(x1, x2, y, s, e, m, gs, g1, g2, loss, sum, 0, 1, 0, 1);
    return chunk(x1, x2, y, s, e, m, gs, g1, g2, loss, sum, 0, 0, 0, 1);
}

int64_t ml_margin_ranking_loss_f32(const ml_call *c) {
    return ml_run_elementwise(c, run_chunk);
}
