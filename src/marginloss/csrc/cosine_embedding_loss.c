/*
 * cosine_embedding_loss: similar (+1) / dissimilar (-1) pairs by cosine, float32.
 *
 * Row n: vectors x1, x2 of D features, label y, option margin; torch's eps = 1e-12 (a float32
 * constant in ATen) is added to each squared norm:
 *
 *   r1 = sum x1^2 + eps,  r2 = sum x2^2 + eps,  c = sum x1 x2 / sqrt(r1 r2)
 *   l_n = 1 - c (y = 1),  [c - margin]_+ (y = -1),  0 (any other y: what torch computes)
 *   s   = dl/dc = -1 (y = 1),  1 (y = -1 and c >= margin: clamp_min passes at 0),  0 otherwise
 *   dl/dx1 = s (x2 / sqrt(r1 r2) - c x1 / r1),   dl/dx2 = s (x1 / sqrt(r1 r2) - c x2 / r2)
 *
 * Stable: the three sums are float64, which no float32 product overflows or underflows (torch's
 * float32 sums give inf, and a NaN loss, from |x| ~ 1.8e19). A zero vector has c = 0 and the
 * finite gradient torch gives (x2 / (1e-6 sqrt(r2)) for x1 = 0). The gradient pass is float32
 * with per-row factors, or float64 for a row whose factors fall outside [2^-100, 2^100].
 *
 * Label check, in the same pass: counts labels other than -1 and +1 (NaN included).
 *
 * Memory traffic: each row of x1 and x2 read once from memory (the second pass finds it in L1),
 * each gradient row written once, one label read. Rows are spread over the threads; results do
 * not depend on the thread count.
 */
#include "common.h"

static const ml_kernel info = ML_KERNEL(2, 1, 0, ML_TARGET_F32, 1, 0, 0);

const ml_kernel *ml_cosine_embedding_loss_info(void) { return &info; }

ML_INLINE int extreme(double c) {
    double m = c < 0 ? -c : c;
    return m != 0.0 && (m > 0x1p100 || m < 0x1p-100);
}

/* Rows [r0, r1): losses into out[r], gradients where asked; returns the bad labels. */
static int64_t rows(const ml_call *c, int64_t r0, int64_t r1, double *out) {
    const int64_t D = c->n_cols;
    const float margin = (float)c->opt[0];
    const float *y = (const float *)c->target;
    int64_t bad = 0;
    for (int64_t r = r0; r < r1; r++) {
        const float *restrict x1 = (const float *)c->x[0] + r * D;
        const float *restrict x2 = (const float *)c->x[1] + r * D;
        float *restrict g1 = c->grad[0] ? (float *)c->grad[0] + r * D : 0;
        float *restrict g2 = c->grad[1] ? (float *)c->grad[1] + r * D : 0;
        double s11 = 0.0, s22 = 0.0, s12 = 0.0;
        ML_SIMD_SUM(s11, s22, s12)
        for (int64_t j = 0; j < D; j++) {
            double a = (double)x1[j], b = (double)x2[j];
            s11 += a * a;
            s22 += b * b;
            s12 += a * b;
        }
        double r1 = s11 + (double)1e-12f, r2 = s22 + (double)1e-12f; /* ATen's float eps */
        double inv = 1.0 / sqrt(r1 * r2);
        /* c and the hinge rounded to float32 as ATen's: the kink is decided alike */
        float cf = (float)(s12 * inv);
        double cos = (double)cf;
        float yr = y[r];
        double slope = 0.0;
        if (yr == 1.0f) {
            out[r] = (double)(1.0f - cf);
            slope = -1.0;
        } else if (yr == -1.0f) {
            float h = cf - margin;
            out[r] = h < 0 ? 0.0 : (double)h; /* NaN stays NaN */
            slope = h >= 0 ? 1.0 : 0.0;
        } else {
            out[r] = 0.0;
            bad++;
        }
        if (!g1 && !g2) continue;
        if (slope == 0.0) {
            if (g1) memset(g1, 0, (size_t)D * sizeof(float));
            if (g2) memset(g2, 0, (size_t)D * sizeof(float));
            continue;
        }
        double k = slope * c->gscale;
        double k12 = k * inv, k11 = k * cos / r1, k22 = k * cos / r2;
        if (extreme(k12) || extreme(k11) || extreme(k22)) {
            for (int64_t j = 0; j < D; j++) {
                double a = (double)x1[j], b = (double)x2[j];
                if (g1) g1[j] = (float)(k12 * b - k11 * a);
                if (g2) g2[j] = (float)(k12 * a - k22 * b);
            }
            continue;
        }
        float f12 = (float)k12, f11 = (float)k11, f22 = (float)k22;
        if (g1 && g2) {
#pragma omp simd
            for (int64_t j = 0; j < D; j++) {
                float a = x1[j], b = x2[j];
                g1[j] = f12 * b - f11 * a;
                g2[j] = f12 * a - f22 * b;
            }
        } else if (g1) {
#pragma omp simd
            for (int64_t j = 0; j < D; j++) g1[j] = f12 * x2[j] - f11 * x1[j];
        } else {
#pragma omp simd
            for (int64_t j = 0; j < D; j++) g2[j] = f12 * x1[j] - f22 * x2[j];
        }
    }
    return bad;
}

int64_t ml_cosine_embedding_loss_f32(const ml_call *c) {
    return ml_run_rows(c, 2 * c->n_rows * c->n_cols, rows);
}
