/*
 * multilabel_soft_margin_loss: per-class logistic losses averaged over the classes, float32.
 *
 * Row n of C classes, labels y in [0, 1] (soft labels allowed), optional weight w (one per
 * class, or one per element), optional positive-class weight p (one per class, ml_ext vec[0];
 * 1 without one) and label smoothing eps (ml_ext ext[1]): the label used is
 * t = y (1 - eps) + eps/2. ml_multilabel_soft_margin_loss_f32 is the call without them.
 *
 *   l_n        = (1/C) sum_c w_c (p_c t_c softplus(-x_c) + (1 - t_c) softplus(x_c))
 *              = (1/C) sum_c w_c (lin_c + (1 - t_c + p_c t_c) log(1 + e_c)),  e_c = exp(-|x_c|)
 *                lin_c = (1 - t_c) x_c for x_c > 0, else -p_c t_c x_c
 *   dl_n/dx_c  = w_c ((1 - t_c) sigmoid(x_c) - p_c t_c sigmoid(-x_c)) / C
 *
 * (without p: softplus(x) - t x and sigmoid(x) - t, torch's loss.) sigmoid(|x|) = 1 / (1 + e),
 * sigmoid(-|x|) = e / (1 + e): stable for every x, and this form of the gradient keeps full
 * relative accuracy for hard labels (t = 1, x large: the gradient -p sigmoid(-x) is not lost
 * to 1 - 1). The tail's factor is (1 - t) + p t, exact for t in {0, 1} (1 + (p - 1) t would
 * lose a small p to rounding), and exactly 1 without p. See common.h for the float32 math.
 * "mean" averages the N row losses.
 *
 * The target: the full (N, C) labels, or (t_cols = 0, ML_FORM_SCALAR) one label y[0] for every
 * element, e.g. the broadcast zero of marginloss.sparse's zero-target pass: read once, outside
 * the loops (the kernels are instantiated for it; the arithmetic is the same, so the results
 * are bitwise those of the full target holding that value).
 *
 * Checks, in the same pass: counts labels outside [0, 1] (NaN included; a single label counts
 * once per element), plus the entries of p that are negative or not finite (counted once,
 * before the pass).
 *
 * Memory traffic: read x, y (and w) once (y not at all for a single label), write the gradient
 * once. Work items spread over the threads: chunks of at most ML_CHUNK classes of one row (so a
 * single long row uses all of them), each summed in float64 (float32 over spans of ML_SPAN), a
 * row's chunks then added in order; rows of at most SHORT classes go in blocks of whole rows,
 * computed as one flat run of elements (full vectors whatever C is), each row summed in float32
 * over runs of 8, then float64. Row losses do not depend on the thread count.
 */
#include "common.h"

static const ml_kernel info = ML_KERNEL_FORMS(1, 0, 0, ML_TARGET_F32, 2,
                                              ML_WEIGHT_CLASS | ML_WEIGHT_FULL, 0, 2,
                                              ML_FORM_SCALAR);

const ml_kernel *ml_multilabel_soft_margin_loss_info(void) { return &info; }

#define SHORT 128   /* rows up to this long are computed in blocks of whole rows */
#define BLOCK 2048  /* elements per block of short rows */

/* Label smoothing: t = y sa + sb (sa = 1 - eps, sb = eps / 2; exactly y for eps = 0). */
typedef struct smooth {
    float a, b;
} smooth;

/* One element: returns w (p t softplus(-x) + (1 - t) softplus(x)) for the smoothed label t,
 * writes the gradient (times gs) where asked. pi is read only when has_pw. */
ML_INLINE float element(float xi, float yi, float wi, float pi, smooth sm, float gs,
                        float *restrict g, const int want_grad, const int has_pw) {
    float sig_big, ex;
    float tail = ml_logistic(xi, &sig_big, &ex);
    float t = yi * sm.a + sm.b;
    float tp = has_pw ? t * pi : t;                 /* the positive term's factor */
    float lw = has_pw ? (1.0f - t) + tp : 1.0f;     /* the tail's factor */
    /* max(x, 0) (1 - t) + max(-x, 0) p t, as (1 - t) x or -p t x: an infinite score gives
     * torch's value. Written as one product of the selected factor (the same values), so that
     * a label read once (a loop invariant) leaves the compiler the same contraction as labels
     * read per element: the results stay bitwise equal. */
    float lin = (xi > 0 ? 1.0f - t : -tp) * xi;
    float l = lin + lw * tail;
    if (want_grad) {
        /* (1 - t) sigmoid(x) - p t sigmoid(-x): no cancellation for t in {0, 1}
         * (sigmoid(x) - 1 would lose sigmoid(-x) below 2^-24) */
        float sig_small = ex * sig_big;
        float sig_pos = xi >= 0 ? sig_big : sig_small; /* sigmoid(x) */
        float sig_neg = xi >= 0 ? sig_small : sig_big; /* sigmoid(-x) */
        *g = ((1.0f - t) * sig_pos - tp * sig_neg) * gs * wi;
    }
    return l * wi;
}

/* Labels outside [0, 1], NaN included. */
ML_INLINE int32_t bad_label(float y) { return !((y >= 0.0f) & (y <= 1.0f)); }

/* Classes [s, e) of one long row (pointers at the row; y: the single label when one_y): writes
 * grad, returns the float64 sum of the row's terms via *sum, and the bad-label count. */
ML_INLINE int64_t chunk(const float *restrict x, const float *restrict y,
                        const float *restrict w, const float *restrict pw, smooth sm, int64_t s,
                        int64_t e, float gs, float *restrict grad, double *sum,
                        const int want_grad, const int weighted, const int has_pw,
                        const int one_y) {
    const float y0 = one_y ? y[0] : 0.0f;
    double total = 0.0;
    int64_t bad = one_y ? (e - s) * bad_label(y0) : 0;
    for (int64_t s0 = s; s0 < e; s0 += ML_SPAN) {
        int64_t s1 = e - s0 < ML_SPAN ? e : s0 + ML_SPAN;
        float part = 0.0f;
        int32_t nbad = 0;
        ML_SIMD_SUM(part, nbad)
        for (int64_t i = s0; i < s1; i++) {
            float yi = one_y ? y0 : y[i];
            part += element(x[i], yi, weighted ? w[i] : 1.0f, has_pw ? pw[i] : 1.0f, sm, gs,
                            grad + i, want_grad, has_pw);
            if (!one_y) nbad += bad_label(yi);
        }
        total += part;
        bad += nbad;
    }
    *sum = total;
    return bad;
}

/* Short rows [r0, r1) of C classes, as one flat run of elements (full vectors whatever C is):
 * writes grad, each row's float64 sum of terms to v[r], returns the bad-label count. y: the
 * labels at row r0, or the single label when one_y; w: the full weight at row r0, or the class
 * weight repeated row after row; pw: the positive weight repeated row after row. */
ML_INLINE int64_t block(const float *restrict x, const float *restrict y,
                        const float *restrict w, const float *restrict pw, smooth sm,
                        int64_t n, int64_t C, float gs, float *restrict grad,
                        double *restrict v, const int want_grad, const int weighted,
                        const int has_pw, const int one_y) {
    float l[BLOCK];
    const float y0 = one_y ? y[0] : 0.0f;
    int64_t bad = one_y ? n * bad_label(y0) : 0;
#pragma omp simd reduction(+ : bad)
    for (int64_t i = 0; i < n; i++) {
        float yi = one_y ? y0 : y[i];
        l[i] = element(x[i], yi, weighted ? w[i] : 1.0f, has_pw ? pw[i] : 1.0f, sm, gs,
                       grad + i, want_grad, has_pw);
        if (!one_y) bad += bad_label(yi);
    }
    for (int64_t r = 0; r * C < n; r++) { /* float32 over runs of 8 (a tree), then float64 */
        const float *lr = l + r * C;
        double sum = 0.0;
        int64_t k = 0;
        for (; k + 8 <= C; k += 8) {
            const float *q = lr + k;
            sum += (double)(((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7])));
        }
        for (; k < C; k++) sum += lr[k];
        v[r] = sum;
    }
    return bad;
}

/* Calls f(args..., want_grad, weighted, has_pw, one_y) with the four flags as constants. */
#define ML_DISPATCH(f, g, wt, pw, oy, ...)                                                   \
    ((oy) ? ML_DISPATCH3(f, g, wt, pw, 1, __VA_ARGS__) : ML_DISPATCH3(f, g, wt, pw, 0, __VA_ARGS__))
#define ML_DISPATCH3(f, g, wt, pw, OY, ...)                                                  \
    ((g) ? ((wt) ? ((pw) ? f(__VA_ARGS__, 1, 1, 1, OY) : f(__VA_ARGS__, 1, 1, 0, OY))        \
                 : ((pw) ? f(__VA_ARGS__, 1, 0, 1, OY) : f(__VA_ARGS__, 1, 0, 0, OY)))       \
         : ((wt) ? ((pw) ? f(__VA_ARGS__, 0, 1, 1, OY) : f(__VA_ARGS__, 0, 1, 0, OY))        \
                 : ((pw) ? f(__VA_ARGS__, 0, 0, 1, OY) : f(__VA_ARGS__, 0, 0, 0, OY))))

/* Work item k: a block of short rows, or one ML_CHUNK of a long row. Writes the row losses'
 * float64 sums (short rows) or the chunk's sum to parts. */
static int64_t item(const ml_call *c, int64_t k, int64_t per_row, const float *w_tiled,
                    const float *pw, const float *pw_tiled, smooth sm, double *parts) {
    const int64_t C = c->n_cols;
    const float *x = (const float *)c->x[0], *y = (const float *)c->target;
    const float *w = c->weight;
    float *grad = (float *)c->grad[0];
    const float gs = (float)(c->gscale / (double)C);
    const int g = grad != 0, wt = w != 0, hp = pw != 0, oy = c->t_cols == 0;
    if (C <= SHORT) {
        int64_t per_block = BLOCK / C, r0 = k * per_block;
        int64_t r1 = c->n_rows - r0 < per_block ? c->n_rows : r0 + per_block;
        int64_t o = r0 * C, n = (r1 - r0) * C;
        const float *wb = !wt ? 0 : c->w_row_stride ? w + o : w_tiled;
        float *gb = g ? grad + o : 0;
        double *v = parts + r0;
        const float *yb = oy ? y : y + o;
        return ML_DISPATCH(block, g, wt, hp, oy, x + o, yb, wb, pw_tiled, sm, n, C, gs, gb, v);
    }
    int64_t r = per_row == 1 ? k : k / per_row;
    int64_t s = per_row == 1 ? 0 : (k % per_row) * ML_CHUNK;
    int64_t e = C - s < ML_CHUNK ? C : s + ML_CHUNK;
    int64_t o = r * C;
    const float *wr = wt ? w + r * c->w_row_stride : 0;
    float *gr = g ? grad + o : 0;
    const float *yr = oy ? y : y + o;
    return ML_DISPATCH(chunk, g, wt, hp, oy, x + o, yr, wr, pw, sm, s, e, gs, gr, parts + k);
}

/* Entries of the positive weight that are negative or not finite (NaN included). */
static int64_t bad_pos_weight(const float *pw, int64_t C) {
    int64_t bad = 0;
    for (int64_t i = 0; i < C; i++) bad += !((pw[i] >= 0.0f) & (pw[i] <= 3.4028234664e38f));
    return bad;
}

static int64_t run(const ml_call *c, const ml_ext *ext) {
    const int64_t N = c->n_rows, C = c->n_cols;
    const int short_rows = C <= SHORT;
    const float *pw = ext->vec[0];
    const double eps = ext->ext[1];
    const smooth sm = {(float)(1.0 - eps), (float)(0.5 * eps)};
    int64_t per_row = 1, n_items;
    if (C == 0) {
        n_items = 0;
    } else if (short_rows) {
        n_items = (N + BLOCK / C - 1) / (BLOCK / C);
    } else {
        per_row = (C + ML_CHUNK - 1) / ML_CHUNK;
        n_items = N * per_row;
    }
    /* the class weight and the positive weight repeated over a block of short rows */
    float w_tiled[BLOCK], pw_tiled[BLOCK];
    if (short_rows && C > 0 && c->weight && c->w_row_stride == 0)
        for (int64_t i = 0; i < BLOCK / C * C; i++) w_tiled[i] = c->weight[i % C];
    if (short_rows && C > 0 && pw)
        for (int64_t i = 0; i < BLOCK / C * C; i++) pw_tiled[i] = pw[i % C];
    /* per row (short rows, or one chunk per row) or per chunk: sums, then the row losses */
    double stack[ML_STACK_PARTS];
    int64_t n_parts = short_rows ? N : n_items;
    double *parts = c->rows && n_parts == N ? c->rows : ml_doubles(stack, ML_STACK_PARTS, n_parts);
    if (!parts) return ML_ERR_NOMEM;
    int nt = ml_threads(c->n_threads, N * C, ML_CHUNK);
    int64_t bad = pw ? bad_pos_weight(pw, C) : 0;
    if (nt == 1) {
        for (int64_t k = 0; k < n_items; k++)
            bad += item(c, k, per_row, w_tiled, pw, pw_tiled, sm, parts);
    } else {
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : bad)
        for (int64_t k = 0; k < n_items; k++)
            bad += item(c, k, per_row, w_tiled, pw, pw_tiled, sm, parts);
    }
    for (int64_t r = 0; r < N; r++) { /* in place: parts[r] never overtakes row r's chunks */
        double sum = 0.0;
        for (int64_t j = 0; j < per_row; j++) sum += parts[r * per_row + j];
        parts[r] = C > 0 ? sum / (double)C : 0.0;
    }
    ml_store_rows(c, parts);
    if (parts != c->rows) ml_free_doubles(parts, stack);
    return bad;
}

int64_t ml_multilabel_soft_margin_loss_f32(const ml_call *c) {
    static const ml_ext none = {{0.0, 0.0}, {0, 0}};
    return run(c, &none);
}

int64_t ml_multilabel_soft_margin_loss_ext_f32(const ml_call *c, const ml_ext *ext) {
    return run(c, ext);
}
