/*
 * multi_margin_loss: the multi-class hinge loss (torch's definition), float32.
 *
 * Row n of C scores x with target class y (an index), options p in {1, 2} and margin, optional
 * weight w (one per class; a full weight gives row n its own w_{n,y}):
 *
 *   z_j          = x_j - (x_y - margin)                (float32, rounded exactly as ATen's
 *                                                       margin - x_y + x_j)
 *   l_n          = (w_y / C) sum_{j != y} [z_j > 0] z_j^p
 *   dl_n/dx_j    = (w_y / C) p z_j^(p-1) [z_j > 0]     (j != y; the subgradient at z = 0 is 0)
 *   dl_n/dx_y    = - sum_{j != y} dl_n/dx_j
 *
 * The weight multiplies after the power (as ATen). Per row the one pass accumulates
 * S_p = sum [z]_+^p for the loss and, for the target's gradient, S_{p-1} (the count of active
 * classes for p = 1, sum [z]_+ for p = 2), so dl/dx_y = -(w_y / C) p S_{p-1} is not a sum of
 * rounded terms. Sums: float32 over spans of ML_SPAN classes, then float64.
 *
 * Label check, in the same pass: counts targets outside [0, C). Such a row is never read at its
 * target: its loss and gradient are 0.
 *
 * Memory traffic: read the row's scores once (and its target and weight), write its gradient
 * once, then the target's entry again. Rows are spread over the threads.
 */
#include "common.h"

#define ML_SHORT_ROW 16 /* classes: rows up to this long skip the vector loop */

static const char *check(const double *opt) {
    if (opt[0] != 1.0 && opt[0] != 2.0) return "the native kernel takes p = 1 or p = 2";
    return 0;
}

static const ml_kernel info =
    ML_KERNEL(1, 2, 0, ML_TARGET_I64, 1, ML_WEIGHT_CLASS | ML_WEIGHT_FULL, check);

const ml_kernel *ml_multi_margin_loss_info(void) { return &info; }

/* One class j of a row: adds [z_j]_+^p to *part and its S_{p-1} term to *part_lower, writes
 * the gradient entry where asked. */
#define TERM(j)                                                                               \
    do {                                                                                      \
        float z = x[j] - shift;                                                               \
        float zp = (z > 0.0f) & ((j) != y) ? z : 0.0f; /* [z]_+, 0 for the target */          \
        if (p == 1) {                                                                         \
            part += zp;                                                                       \
            part_lower += zp > 0.0f ? 1.0f : 0.0f;                                            \
            if (want_grad) grad[j] = zp > 0.0f ? coef : 0.0f;                                 \
        } else {                                                                              \
            part += zp * zp;                                                                  \
            part_lower += zp;                                                                 \
            if (want_grad) grad[j] = (2.0f * coef) * zp;                                      \
        }                                                                                     \
    } while (0)

/* One row: returns sum_{j != y} [z_j]_+^p (float64) and writes the gradient (coef = w_y gscale
 * / C) where asked. Rows shorter than a vector register's few loads run as a plain loop (the
 * vector loop's set-up and its reductions cost more than such a row). */
ML_INLINE double row(const float *restrict x, int64_t C, int64_t y, float margin, float coef,
                     float *restrict grad, const int p, const int want_grad) {
    const float shift = x[y] - margin;
    double loss = 0.0, lower = 0.0; /* S_p and S_{p-1} */
    if (C <= ML_SHORT_ROW) {
        float part = 0.0f, part_lower = 0.0f;
        for (int64_t j = 0; j < C; j++) TERM(j);
        loss = part;
        lower = part_lower;
    } else {
        for (int64_t s0 = 0; s0 < C; s0 += ML_SPAN) {
            int64_t s1 = C - s0 < ML_SPAN ? C : s0 + ML_SPAN;
            float part = 0.0f, part_lower = 0.0f;
            ML_SIMD_SUM(part, part_lower)
            for (int64_t j = s0; j < s1; j++) TERM(j);
            loss += part;
            lower += part_lower;
        }
    }
    if (want_grad) grad[y] = (float)(-(double)coef * p * lower);
    return loss;
}

/* Rows [r0, r1): their losses into v[r], gradients where asked; returns the bad targets. */
static int64_t rows(const ml_call *c, int64_t r0, int64_t r1, double *v) {
    const int64_t C = c->n_cols;
    const int64_t *t = (const int64_t *)c->target;
    const int p = c->opt[0] == 2.0 ? 2 : 1;
    const float margin = (float)c->opt[1];
    int64_t bad = 0;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = (const float *)c->x[0] + r * C;
        float *grad = c->grad[0] ? (float *)c->grad[0] + r * C : 0;
        int64_t y = t[r];
        if (y < 0 || y >= C) { /* never dereferenced: a zero row */
            bad++;
            v[r] = 0.0;
            if (grad) memset(grad, 0, (size_t)C * sizeof(float));
            continue;
        }
        double w = c->weight ? (double)c->weight[r * c->w_row_stride + y] : 1.0;
        float coef = (float)(c->gscale * w / (double)C);
        double s;
        if (p == 1 && grad) s = row(x, C, y, margin, coef, grad, 1, 1);
        else if (p == 1) s = row(x, C, y, margin, coef, grad, 1, 0);
        else if (grad) s = row(x, C, y, margin, coef, grad, 2, 1);
        else s = row(x, C, y, margin, coef, grad, 2, 0);
        v[r] = w * s / (double)C;
    }
    return bad;
}

int64_t ml_multi_margin_loss_f32(const ml_call *c) {
    return ml_run_rows(c, c->n_rows * c->n_cols, rows);
}
