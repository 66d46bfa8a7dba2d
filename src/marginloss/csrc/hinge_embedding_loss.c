/*
 * hinge_embedding_loss: distances of pairs labelled similar (+1) or dissimilar (-1),
 * elementwise, float32.
 *
 * Per element, with distance x, label y and margin m (torch's definition, for any label):
 *
 *   z      = m - x
 *   l      = [y != 1] max(z, 0) + [y != -1] x
 *   dl/dx  = [y != -1] - [y != 1] [z >= 0]
 *
 * so y = 1 gives x (unclamped) and y = -1 gives [m - x]_+; any other label adds both terms, as
 * torch does (with validate=True the caller raises instead). At z = 0 the hinge's gradient is
 * -1 (torch's clamp_min passes the gradient at the bound). NaN propagates like torch: a NaN
 * distance gives a NaN loss (max(NaN, 0) is written z < 0 ? 0 : z, which keeps the NaN) and
 * the hinge's gradient 0 (NaN >= 0 is false). The margin is rounded to float32 first, as
 * torch's float32 arithmetic does. "mean" averages over all n_rows * n_cols elements; "none"
 * writes one loss per element.
 *
 * Label check, in the same pass: counts labels with |y| != 1 (NaN included).
 *
 * Memory traffic: read x and y once, write the gradient once (and the elementwise loss for
 * "none"). The elements are one flat range cut into fixed chunks of ML_CHUNK, spread over the
 * threads; each chunk's loss sum is float64 (float32 over spans of ML_SPAN), and the chunk sums
 * are added in order at the end, so the result does not depend on the thread count.
 */
#include "common.h"

static const ml_kernel info = ML_KERNEL(1, 1, 1, ML_TARGET_F32, 2, 0, 0);

const ml_kernel *ml_hinge_embedding_loss_info(void) { return &info; }

/* Elements [s, e): writes grad (times gs) and the elementwise loss where asked; returns the
 * float64 loss sum via *sum and the bad-label count. */
ML_INLINE int64_t chunk(const float *restrict x, const float *restrict y, int64_t s, int64_t e,
                        float m, float gs, float *restrict grad, float *restrict loss,
                        double *sum, const int want_grad, const int want_loss,
                        const int want_sum) {
    double total = 0.0;
    int64_t bad = 0;
    for (int64_t s0 = s; s0 < e; s0 += ML_SPAN) {
        int64_t s1 = e - s0 < ML_SPAN ? e : s0 + ML_SPAN;
        float part = 0.0f;
        int32_t nbad = 0;
        ML_SIMD_SUM(part, nbad)
        for (int64_t i = s0; i < s1; i++) {
            float yi = y[i], xi = x[i];
            float z = m - xi;
            int dissimilar = yi != 1.0f, similar = yi != -1.0f; /* NaN: both */
            if (want_grad) {
                float g = (similar ? 1.0f : 0.0f) - ((dissimilar && z >= 0.0f) ? 1.0f : 0.0f);
                grad[i] = g * gs;
            }
            float l = (dissimilar ? (z < 0.0f ? 0.0f : z) : 0.0f) + (similar ? xi : 0.0f);
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
    float m = (float)c->opt[0], gs = (float)c->gscale;
    if (loss) {
        if (grad) return chunk(x, y, s, e, m, gs, grad, loss, sum, 1, 1, 0);
        return chunk(x, y, s, e, m, gs, grad, loss, sum, 0, 1, 0);
    }
    if (grad) return chunk(x, y, s, e, m, gs, grad, loss, sum, 1, 0, 1);
    return chunk(x, y, s, e, m, gs, grad, loss, sum, 0, 0, 1);
}

int64_t ml_hinge_embedding_loss_f32(const ml_call *c) {
    return ml_run_elementwise(c, run_chunk);
}
