/*
 * triplet_margin_loss: the triplet loss with torch's pairwise distance, float32, p = 1 or 2.
 *
 * Row n of D features: anchor a, positive p, negative q; options margin, degree P, eps and
 * swap. With torch's pairwise distance (eps added to each difference, rounded as ATen's
 * a - p + eps):
 *
 *   u = a - p + eps,   v = a - q + eps,   w = p - q + eps          (float32, per feature)
 *   d+ = ||u||_P,      d- = ||v||_P,      ds = ||w||_P   (swap: d- <- min(d-, ds))
 *   l_n = [margin + d+ - d-]_+
 *
 * For an active row (margin + d+ - d- >= 0: torch's clamp_min passes the gradient at 0), with
 * g(u) = u / ||u||_2 (P = 2; 0 for a zero u) or sign(u) (P = 1), and omega the share of d(a, q)
 * in the minimum (1 without swap; with swap 1, 0 or 1/2 on a tie, as torch.minimum):
 *
 *   dl/da = g(u) - omega g(v),   dl/dp = -g(u) - (1 - omega) g(w),
 *   dl/dq = omega g(v) + (1 - omega) g(w).
 *
 * Stable: the sums of squares are float64 (a float32 square overflows from |u| ~ 1.8e19 and
 * underflows below 1e-19; float64 does neither for any float32 u). The gradient pass is float32
 * with per-row factors 1 / d (u / d lies in [-1, 1]); a row whose factors fall outside
 * [2^-100, 2^100] (distances beyond 1e30 or below 1e-30) takes the same pass in float64.
 *
 * Memory traffic: each row of the three inputs is read once from memory (the second pass finds
 * it in L1: 12 D bytes), each gradient row written once. Rows are spread over the threads; a
 * row's sums are float64 in feature order, so results do not depend on the thread count.
 */
#include "common.h"

static const char *check(const double *opt) {
    if (opt[1] != 1.0 && opt[1] != 2.0) return "the native kernel takes p = 1 or p = 2";
    return 0;
}

static const ml_kernel info = ML_KERNEL(3, 4, 0, ML_TARGET_NONE, 0, 0, check);

const ml_kernel *ml_triplet_margin_loss_info(void) { return &info; }

typedef struct trip_row {
    const float *a, *p, *q;
    float *ga, *gp, *gq;
} trip_row;

/* Pass 1: the three norms (float64) of row r; P = 1 or 2; SWAP: also ||w||. */
ML_INLINE void norms(const trip_row *t, int64_t D, float eps, double *du, double *dv,
                     double *dw, const int P, const int SWAP) {
    const float *restrict a = t->a, *restrict p = t->p, *restrict q = t->q;
    double su = 0.0, sv = 0.0, sw = 0.0;
    ML_SIMD_SUM(su, sv, sw)
    for (int64_t j = 0; j < D; j++) {
        float u = (a[j] - p[j]) + eps, v = (a[j] - q[j]) + eps;
        if (P == 2) {
            su += (double)u * (double)u;
            sv += (double)v * (double)v;
        } else {
            su += (double)(u < 0 ? -u : u);
            sv += (double)(v < 0 ? -v : v);
        }
        if (SWAP) {
            float w = (p[j] - q[j]) + eps;
            sw += P == 2 ? (double)w * (double)w : (double)(w < 0 ? -w : w);
        }
    }
    *du = P == 2 ? sqrt(su) : su;
    *dv = P == 2 ? sqrt(sv) : sv;
    *dw = SWAP ? (P == 2 ? sqrt(sw) : sw) : 0.0;
}

ML_INLINE float sgn(float x) { return x > 0 ? 1.0f : (x < 0 ? -1.0f : 0.0f); }

/* Pass 2, float32: ga = cu g(u) - cv g(v), gp = -cu g(u) - cw g(w), gq = cv g(v) + cw g(w);
 * for P = 2 the factors include 1 / d, for P = 1 g is the sign. Each gradient pointer may be
 * NULL (not wanted). */
ML_INLINE void grads_f32(const trip_row *t, int64_t D, float eps, float cu, float cv, float cw,
                         const int P, const int SWAP) {
    const float *restrict a = t->a, *restrict p = t->p, *restrict q = t->q;
    float *restrict ga = t->ga, *restrict gp = t->gp, *restrict gq = t->gq;
#pragma omp simd
    for (int64_t j = 0; j < D; j++) {
        float u = (a[j] - p[j]) + eps, v = (a[j] - q[j]) + eps;
        float gu = P == 2 ? cu * u : cu * sgn(u);
        float gv = P == 2 ? cv * v : cv * sgn(v);
        float gw = 0.0f;
        if (SWAP) {
            float w = (p[j] - q[j]) + eps;
            gw = P == 2 ? cw * w : cw * sgn(w);
        }
        if (ga) ga[j] = gu - gv;
        if (gp) gp[j] = -gu - gw;
        if (gq) gq[j] = gv + gw;
    }
}

/* Pass 2 in float64 (P = 2, rows with extreme factors). */
static void grads_f64(const trip_row *t, int64_t D, float eps, double cu, double cv, double cw,
                      int swap) {
    for (int64_t j = 0; j < D; j++) {
        double u = (double)((t->a[j] - t->p[j]) + eps), v = (double)((t->a[j] - t->q[j]) + eps);
        double w = swap ? (double)((t->p[j] - t->q[j]) + eps) : 0.0;
        double gu = cu * u, gv = cv * v, gw = cw * w;
        if (t->ga) t->ga[j] = (float)(gu - gv);
        if (t->gp) t->gp[j] = (float)(-gu - gw);
        if (t->gq) t->gq[j] = (float)(gv + gw);
    }
}

static void zero_grads(const trip_row *t, int64_t D) {
    if (t->ga) memset(t->ga, 0, (size_t)D * sizeof(float));
    if (t->gp) memset(t->gp, 0, (size_t)D * sizeof(float));
    if (t->gq) memset(t->gq, 0, (size_t)D * sizeof(float));
}

ML_INLINE int extreme(double c) {
    double m = c < 0 ? -c : c;
    return m != 0.0 && (m > 0x1p100 || m < 0x1p-100);
}

/* Rows [r0, r1): losses into v[r], gradients where asked (no labels: 0 bad ones). */
static int64_t rows(const ml_call *c, int64_t r0, int64_t r1, double *out) {
    const int64_t D = c->n_cols;
    const float margin = (float)c->opt[0];
    const int P = c->opt[1] == 1.0 ? 1 : 2, swap = c->opt[3] != 0.0;
    const float eps = (float)c->opt[2];
    const int want = c->grad[0] || c->grad[1] || c->grad[2];
    for (int64_t r = r0; r < r1; r++) {
        trip_row t = {(const float *)c->x[0] + r * D, (const float *)c->x[1] + r * D,
                      (const float *)c->x[2] + r * D,
                      c->grad[0] ? (float *)c->grad[0] + r * D : 0,
                      c->grad[1] ? (float *)c->grad[1] + r * D : 0,
                      c->grad[2] ? (float *)c->grad[2] + r * D : 0};
        double du, dv, dw;
        if (P == 2 && swap) norms(&t, D, eps, &du, &dv, &dw, 2, 1);
        else if (P == 2) norms(&t, D, eps, &du, &dv, &dw, 2, 0);
        else if (swap) norms(&t, D, eps, &du, &dv, &dw, 1, 1);
        else norms(&t, D, eps, &du, &dv, &dw, 1, 0);
        /* the share of d(a, q) in min(d(a, q), d(p, q)); NaN propagates as torch.minimum */
        double omega = 1.0, dmin = dv;
        if (swap) {
            omega = dv < dw ? 1.0 : (dv == dw ? 0.5 : 0.0);
            dmin = (dv != dv || dv <= dw) ? dv : dw;
        }
        /* in float32, rounded as ATen's margin + d+ - d- (the kink is decided alike) */
        float z = ((float)margin + (float)du) - (float)dmin;
        out[r] = z < 0 ? 0.0 : (double)z; /* NaN stays NaN */
        if (!want) continue;
        if (!(z >= 0)) {
            zero_grads(&t, D);
            continue;
        }
        double cu = c->gscale, cv = c->gscale * omega, cw = c->gscale * (1.0 - omega);
        if (P == 2) { /* g = u / ||u||, 0 for a zero u */
            cu = du > 0 ? cu / du : 0.0;
            cv = dv > 0 ? cv / dv : 0.0;
            cw = dw > 0 ? cw / dw : 0.0;
            if (extreme(cu) || extreme(cv) || extreme(cw)) {
                grads_f64(&t, D, eps, cu, cv, cw, swap);
                continue;
            }
        }
        if (P == 2 && swap) grads_f32(&t, D, eps, (float)cu, (float)cv, (float)cw, 2, 1);
        else if (P == 2) grads_f32(&t, D, eps, (float)cu, (float)cv, 0.0f, 2, 0);
        else if (swap) grads_f32(&t, D, eps, (float)cu, (float)cv, (float)cw, 1, 1);
        else grads_f32(&t, D, eps, (float)cu, (float)cv, 0.0f, 1, 0);
    }
    return 0;
}

int64_t ml_triplet_margin_loss_f32(const ml_call *c) {
    return ml_run_rows(c, 3 * c->n_rows * c->n_cols, rows);
}
