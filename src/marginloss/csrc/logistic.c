/*
 * marginloss native CPU kernels: the two logistic losses, float32.
 *
 * Each call reads the scores and labels once and, in the same loop, writes the input gradient,
 * accumulates the loss and counts labels outside the loss's convention (the fused label check).
 * Compiled on first use by marginloss/_native.py (plain C99, no Python or torch headers; called
 * through ctypes). With OpenMP, a call splits its rows over n_threads threads of the OpenMP
 * runtime torch itself has loaded (same soname, so the same thread team: no second pool
 * competing with torch's spinning workers); without OpenMP it runs the same split serially.
 *
 * Math, per element, with a = |m| and e = exp(-a) in (0, 1]:
 *
 *   softplus(-m) = log(1 + exp(-m)) = max(-m, 0) + log1p(e)           (never overflows)
 *   sigmoid(-m)  = e / (1 + e) if m >= 0, else 1 / (1 + e)             (never overflows)
 *   log1p(e)     = 2 atanh(s),  s = e / (2 + e) in (0, 1/3]            (full relative accuracy,
 *                = 2 s (1 + s^2/3 + s^4/5 + ...)  (a fitted quartic in s^2)   also for tiny e)
 *
 * 1 / (1 + e) and e / (2 + e) share one division: D = 1 / ((1 + e)(2 + e)).
 * exp is evaluated here (Cephes-style: e^t = 2^n e^r, |r| <= ln2 / 2, degree-6 polynomial, about
 * 1 ulp), scaled by 2^n in two steps so that results down to the denormals stay exact, and
 * written without library calls so that the compiler vectorises the whole loop.
 *
 * Sums: float32 partial sums over runs of SPAN elements, added into float64 (thread ranges start
 * on multiples of SPAN): results depend on the number of threads only through the order of a
 * few float64 additions, and tiny losses keep their relative accuracy (every term is computed
 * to full relative precision).
 *
 * Memory traffic: read x and y once, write the gradient once (and the elementwise loss for
 * reduction="none"). No temporaries.
 */

#include <stdint.h>
#include <string.h>

#define SPAN 512 /* elements per float32 partial sum */

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define MAX_THREADS 256

static int clamp_threads(int n) { return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n; }

/* Per-thread results, added in thread order (deterministic for a given thread count). */
static int64_t combine(const double *totals, const int64_t *bads, int n, double *total) {
    int64_t bad = 0;
    double sum = 0.0;
    for (int t = 0; t < n; t++) {
        bad += bads[t];
        if (totals) sum += totals[t];
    }
    if (total) *total = sum;
    return bad;
}

ALWAYS_INLINE float bits_to_float(int32_t i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

/* e^t for t <= 0 (or NaN). Underflows to 0 below t = -104, like expf. */
ALWAYS_INLINE float exp_nonpos(float t) {
    t = t < -104.0f ? -104.0f : t;
    float n = t * 1.44269504088896341f;       /* t / ln 2 */
    n = (n + 12582912.0f) - 12582912.0f;      /* rounded to the nearest integer (1.5 * 2^23) */
    float r = t - n * 0.693359375f;           /* t - n ln2, ln2 split in two parts */
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;               /* e^r */
    int32_t k = (int32_t)n;                   /* in [-150, 0] */
    int32_t k1 = k / 2, k2 = k - k1;          /* 2^k = 2^k1 2^k2, each a normal float */
    return p * bits_to_float((k1 + 127) << 23) * bits_to_float((k2 + 127) << 23);
}

/* 2 atanh(s) for s in [0, 1/3]: 2 s q(s^2), q a degree-4 least-squares fit (on Chebyshev
 * nodes of [0, 1/9]) of atanh(s) / s = 1 + s^2/3 + s^4/5 + ...; its error, 5e-9, is below
 * float32's rounding. */
ALWAYS_INLINE float two_atanh(float s) {
    float u = s * s;
    float q = 0.14013905140401323f;
    q = q * u + 0.13999070624912988f;
    q = q * u + 0.20010896316547888f;
    q = q * u + 0.333332052203105f;
    q = q * u + 1.0f;
    return 2.0f * s * q;
}

/* For score-times-label v: e = exp(-|v|); *sig_pos = sigmoid(|v|) = 1 / (1 + e),
 * *sig_neg = sigmoid(-|v|) = e / (1 + e); returns log1p(e). */
ALWAYS_INLINE float logistic_parts(float v, float *sig_pos, float *sig_neg) {
    float a = v < 0 ? -v : v;
    float e = exp_nonpos(-a);
    float d1 = 1.0f + e, d2 = 2.0f + e;
    float inv = 1.0f / (d1 * d2);
    *sig_pos = d2 * inv;
    *sig_neg = e * d2 * inv;
    return two_atanh(e * d1 * inv);
}

/* ---------------------------------------------------------------------------------------------
 * soft_margin_loss: l = log(1 + exp(-y x)),  dl/dx = -y sigmoid(-y x).
 * Elements [0, n). grad (scaled by gscale) and loss (elementwise) may be NULL.
 * Writes the float64 sum of l to *total; returns the number of labels not in {-1, +1} (NaN too).
 */
ALWAYS_INLINE int64_t soft_margin_body(const float *restrict x, const float *restrict y,
                                       int64_t n, float gscale, float *restrict grad,
                                       float *restrict loss, double *restrict total,
                                       const int want_grad, const int want_loss) {
    double sum = 0.0;
    int64_t bad = 0;
    for (int64_t s0 = 0; s0 < n; s0 += SPAN) {
        int64_t s1 = n - s0 < SPAN ? n : s0 + SPAN;
        float part = 0.0f;
        int32_t nbad = 0;
        for (int64_t i = s0; i < s1; i++) {
            float yi = y[i];
            float m = yi * x[i];
            float sp, sn;
            float tail = logistic_parts(m, &sp, &sn);
            float l = (m < 0 ? -m : 0.0f) + tail;
            if (want_grad) grad[i] = -yi * (m >= 0 ? sn : sp) * gscale;
            if (want_loss) loss[i] = l;
            part += l;
            nbad += (yi < 0 ? -yi : yi) != 1.0f; /* not -1 or +1 (NaN included) */
        }
        sum += part;
        bad += nbad;
    }
    *total = sum;
    return bad;
}

static int64_t soft_margin_range(const float *x, const float *y, int64_t n, float gscale,
                                 float *grad, float *loss, double *total) {
    if (grad && loss) return soft_margin_body(x, y, n, gscale, grad, loss, total, 1, 1);
    if (grad) return soft_margin_body(x, y, n, gscale, grad, loss, total, 1, 0);
    if (loss) return soft_margin_body(x, y, n, gscale, grad, loss, total, 0, 1);
    return soft_margin_body(x, y, n, gscale, grad, loss, total, 0, 0);
}

int64_t ml_soft_margin_f32(const float *x, const float *y, int64_t n, float gscale, float *grad,
                           float *loss, double *total, int n_threads) {
    double totals[MAX_THREADS];
    int64_t bads[MAX_THREADS];
    n_threads = clamp_threads(n_threads);
    /* thread t takes the elements [t step, (t + 1) step), step a multiple of SPAN */
    int64_t step = ((n + n_threads - 1) / n_threads + SPAN - 1) / SPAN * SPAN;
#pragma omp parallel for num_threads(n_threads) schedule(static, 1) if (n_threads > 1)
    for (int t = 0; t < n_threads; t++) {
        int64_t s = t * step < n ? t * step : n, e = s + step < n ? s + step : n;
        bads[t] = soft_margin_range(x + s, y + s, e - s, gscale, grad ? grad + s : 0,
                                    loss ? loss + s : 0, &totals[t]);
    }
    return combine(totals, bads, n_threads, total);
}

/* ---------------------------------------------------------------------------------------------
 * multilabel_soft_margin_loss, rows [0, n_rows) of C classes:
 *   l_nc = w_c (softplus(x) - y x) = w_c (max(x, 0) - y x + log1p(e)),
 *   dl_nc/dx = w_c gscale (sigmoid(x) - y).
 * w (row stride w_stride: 0 for one weight per class, C for a full weight) may be NULL; grad
 * may be NULL. Writes each row's float64 sum of l to rows[r]; returns the number of labels
 * outside [0, 1] (NaN too).
 */
ALWAYS_INLINE int64_t multilabel_body(const float *restrict x, const float *restrict y,
                                      const float *restrict w, int64_t w_stride, int64_t n_rows,
                                      int64_t C, float gscale, float *restrict grad,
                                      double *restrict rows, const int want_grad,
                                      const int weighted) {
    int64_t bad = 0;
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * C, *yr = y + r * C;
        const float *wr = weighted ? w + r * w_stride : 0;
        float *gr = want_grad ? grad + r * C : 0;
        double sum = 0.0;
        for (int64_t s0 = 0; s0 < C; s0 += SPAN) {
            int64_t s1 = C - s0 < SPAN ? C : s0 + SPAN;
            float part = 0.0f;
            int32_t nbad = 0;
            for (int64_t i = s0; i < s1; i++) {
                float xi = xr[i], yi = yr[i];
                float sp, sn;
                float tail = logistic_parts(xi, &sp, &sn);
                float l = (xi > 0 ? xi : 0.0f) - yi * xi + tail;
                float g = ((xi >= 0 ? sp : sn) - yi) * gscale;
                if (weighted) {
                    l *= wr[i];
                    g *= wr[i];
                }
                if (want_grad) gr[i] = g;
                part += l;
                nbad += !((yi >= 0.0f) & (yi <= 1.0f));
            }
            sum += part;
            bad += nbad;
        }
        rows[r] = sum;
    }
    return bad;
}

static int64_t multilabel_range(const float *x, const float *y, const float *w,
                                int64_t w_stride, int64_t n_rows, int64_t C, float gscale,
                                float *grad, double *rows) {
    if (grad && w) return multilabel_body(x, y, w, w_stride, n_rows, C, gscale, grad, rows, 1, 1);
    if (grad) return multilabel_body(x, y, w, w_stride, n_rows, C, gscale, grad, rows, 1, 0);
    if (w) return multilabel_body(x, y, w, w_stride, n_rows, C, gscale, grad, rows, 0, 1);
    return multilabel_body(x, y, w, w_stride, n_rows, C, gscale, grad, rows, 0, 0);
}

int64_t ml_multilabel_soft_margin_f32(const float *x, const float *y, const float *w,
                                      int64_t w_stride, int64_t n_rows, int64_t C, float gscale,
                                      float *grad, double *rows, int n_threads) {
    int64_t bads[MAX_THREADS];
    n_threads = clamp_threads(n_threads);
    int64_t step = (n_rows + n_threads - 1) / n_threads; /* rows per thread */
#pragma omp parallel for num_threads(n_threads) schedule(static, 1) if (n_threads > 1)
    for (int t = 0; t < n_threads; t++) {
        int64_t s = t * step < n_rows ? t * step : n_rows;
        int64_t e = s + step < n_rows ? s + step : n_rows;
        bads[t] = multilabel_range(x + s * C, y + s * C, w ? w + s * w_stride : 0, w_stride,
                                   e - s, C, gscale, grad ? grad + s * C : 0, rows + s);
    }
    return combine(0, bads, n_threads, 0);
}
