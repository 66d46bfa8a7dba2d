/*
 * marginloss native CPU kernels: the shared ABI and helpers.
 *
 * Every loss lives in its own file csrc/<name>.c, <name> being torch.nn.functional's name of the
 * loss (soft_margin_loss, ...). All files are compiled together into one shared library by
 * marginloss/backends/native.py (plain C99, no Python or torch headers; called through ctypes).
 *
 * ABI (version ML_ABI). Each loss exports exactly two symbols:
 *
 *   int64_t ml_<name>_f32(const ml_call *call);
 *       Computes the loss and the gradient of every input whose grad pointer is not NULL, in one
 *       pass over memory, and counts the target values outside the loss's label convention.
 *       Returns that count (>= 0), or ML_ERR_NOMEM (< 0) when scratch memory ran out (nothing
 *       useful was written then).
 *
 *   const ml_kernel *ml_<name>_info(void);
 *       What the kernel takes (see ml_kernel below), so that the caller needs no per-loss table:
 *       how many inputs and options, the target's dtype and shape, which weights, whether "none"
 *       gives one loss per element or per row, and a check of the option values.
 *
 * The call (ml_call). All tensors are row-major and contiguous (the target may take one of the
 * two other forms below, where the kernel declares it); the caller checks that, and that
 * n_cols < 2^31.
 *   x[i]         differentiable inputs, i < n_inputs: float32 (n_rows, n_cols) each (a loss of
 *                vectors, e.g. a margin ranking loss, has n_cols == 1; a triplet loss has rows
 *                of n_cols features: anchor, positive, negative).
 *   grad[i]      d loss / d x[i] for a unit upstream gradient, times gscale, same layout; NULL
 *                when not wanted. Every entry is written (also for rows with a bad target).
 *   target       the target, of the dtype and shape the kernel declares; NULL when it has none.
 *                Never dereferenced out of range, whatever its values.
 *   t_cols       the entries per row of a 2-D target (row stride t_cols): n_cols, the full
 *                (n_rows, n_cols) target, which every kernel takes (and the value to pass for
 *                a kernel whose target is not 2-D, or that has none); where the kernel declares
 *                the form (ml_kernel.target_forms), W in [1, n_cols] for a narrow target
 *                (ML_FORM_NARROW: the rows' first W entries, e.g. an index list that stops
 *                there), or 0 for one value read for every element (ML_FORM_SCALAR: target[0],
 *                e.g. a broadcast zero, never materialised).
 *   weight       NULL, or float32 with row stride w_row_stride: 0 means one weight per class
 *                (n_cols,), n_cols means a full (n_rows, n_cols) weight.
 *   n_rows, n_cols
 *   opt[]        the loss's scalar options in declared order (integers as exact doubles).
 *   gscale       factor of every gradient entry: the reduction's (1 / number of loss terms for
 *                "mean", else 1), possibly times a scalar upstream gradient.
 *   reduction    ML_NONE, ML_MEAN or ML_SUM.
 *   n_threads    most threads the call may use (the kernel uses fewer for small calls; 1 never
 *                enters OpenMP).
 *   loss         float32 output: for ML_NONE one loss per row (n_rows) or, for an elementwise
 *                loss, per element (n_rows * n_cols); for ML_MEAN / ML_SUM one value: the sum of
 *                all loss terms in float64, divided by their count for ML_MEAN (0 / 0 = NaN for
 *                an empty mean), rounded once.
 *   rows         optional float64 output (row losses only): each row's loss, or NULL.
 *
 * The descriptor (ml_kernel): abi and call_size let the caller refuse a library built for
 * another layout; then n_inputs, n_opts (at most 4), elementwise, the target's dtype
 * (ML_TARGET_*) and number of dimensions (1: (n_rows,), 2: (n_rows, n_cols)), the weights taken
 * (ML_WEIGHT_* bits), check, and n_ext (how many extras it takes: 0 unless built with
 * ML_KERNEL_EXT) and target_forms (ML_FORM_* bits: the target forms beyond the full one it
 * takes, see t_cols; 0 unless built with ML_KERNEL_FORMS). Each file builds its descriptor with
 * ML_KERNEL(...), ML_KERNEL_EXT(...) or ML_KERNEL_FORMS(...).
 *
 * Extras. A loss with options of its own beyond torch's (LossSpec.extras, e.g. pos_weight,
 * label_smoothing) declares n_ext > 0 and exports a third symbol,
 *
 *   int64_t ml_<name>_ext_f32(const ml_call *call, const ml_ext *ext);
 *
 * the same computation with the extras given (ml_<name>_f32 is the call with every extra at
 * its default). ml_ext holds extra i in slot i: a scalar in ext[i], or a per-class vector in
 * vec[i] (float32, n_cols entries, contiguous; NULL when not given).
 *
 * A row's loss is final (already divided by n_cols where the loss does that). Loss terms are
 * summed in float64 (or in float32 over short fixed spans, then float64) in a fixed order that
 * does not depend on the number of threads: results are bitwise identical for any n_threads.
 *
 * Threads: OpenMP (-fopenmp) parallel loops over rows, or over fixed chunks of elements. The
 * library links libgomp.so.1 by its soname, so inside a torch process it is torch's own runtime
 * and thread team. Built without OpenMP, everything runs on the calling thread.
 */
#ifndef MARGINLOSS_COMMON_H
#define MARGINLOSS_COMMON_H

#include <math.h> /* INFINITY, NAN (no calls) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ML_ABI 2

#define ML_NONE 0 /* reductions */
#define ML_MEAN 1
#define ML_SUM 2

#define ML_TARGET_NONE 0 /* target dtypes */
#define ML_TARGET_F32 1
#define ML_TARGET_I64 2

#define ML_WEIGHT_CLASS 1 /* weights a kernel takes (bits) */
#define ML_WEIGHT_FULL 2

#define ML_FORM_SCALAR 1 /* target forms beyond the full one a kernel takes (bits) */
#define ML_FORM_NARROW 2

#define ML_ERR_NOMEM (-1)

typedef struct ml_call {
    const void *x[3];
    void *grad[3];
    const void *target;
    const float *weight;
    int64_t w_row_stride;
    int64_t n_rows, n_cols;
    int64_t t_cols;
    double opt[4];
    double gscale;
    int32_t reduction;
    int32_t n_threads;
    float *loss;
    double *rows;
} ml_call;

typedef struct ml_ext {
    double ext[2];
    const float *vec[2];
} ml_ext;

typedef struct ml_kernel {
    int32_t abi;         /* ML_ABI */
    int32_t call_size;   /* sizeof(ml_call): the caller checks its layout against it */
    int32_t n_inputs;    /* differentiable inputs, 1 to 3 */
    int32_t n_opts;      /* scalar options, 0 to 4 */
    int32_t elementwise; /* ML_NONE gives one loss per element (1) or per row (0) */
    int32_t target;      /* ML_TARGET_* */
    int32_t target_ndim; /* 1: (n_rows,); 2: (n_rows, n_cols) */
    int32_t weight;      /* ML_WEIGHT_* bits; 0: the loss takes no weight */
    /* check(opt): NULL when the kernel computes with these option values, else why not (one
     * line). The field is NULL when every value is fine. */
    const char *(*check)(const double *opt);
    int32_t n_ext;        /* extras (ml_ext slots) ml_<name>_ext_f32 takes, 0 to 2 */
    int32_t target_forms; /* ML_FORM_* bits: the target forms besides the full one */
} ml_kernel;

/* A kernel's descriptor, in the field order above from n_inputs on. */
#define ML_KERNEL(n_inputs, n_opts, elementwise, target, target_ndim, weight, check)          \
    {ML_ABI, (int32_t)sizeof(ml_call), n_inputs, n_opts, elementwise, target, target_ndim,  \
     weight, check, 0, 0}
/* The same for a kernel that also reads n_ext extras. */
#define ML_KERNEL_EXT(n_inputs, n_opts, elementwise, target, target_ndim, weight, check, n_ext) \
    {ML_ABI, (int32_t)sizeof(ml_call), n_inputs, n_opts, elementwise, target, target_ndim,  \
     weight, check, n_ext, 0}
/* The same for a kernel that also takes the target forms `forms` (ML_FORM_* bits). */
#define ML_KERNEL_FORMS(n_inputs, n_opts, elementwise, target, target_ndim, weight, check,   \
                        n_ext, forms)                                                        \
    {ML_ABI, (int32_t)sizeof(ml_call), n_inputs, n_opts, elementwise, target, target_ndim,  \
     weight, check, n_ext, forms}

#if defined(__GNUC__) || defined(__clang__)
#define ML_INLINE static inline __attribute__((always_inline))
#else
#define ML_INLINE static inline
#endif
#define ML_MAX_THREADS 256

/* One place for the OpenMP simd pragma: vectorise a loop with sum reductions in any order.
 * Without -fopenmp(-simd) the pragma is ignored and the loop stays correct. */
#define ML_PRAGMA(x) _Pragma(#x)
#define ML_SIMD_SUM(...) ML_PRAGMA(omp simd reduction(+ : __VA_ARGS__))

/* ------------------------------------------------------------------------------------------
 * Threads and scratch memory
 */

/* Threads for `work` units (elements, or pairs) at `per_thread` units per thread at least. */
ML_INLINE int ml_threads(int budget, int64_t work, int64_t per_thread) {
    int64_t t = work / per_thread;
    if (t > budget) t = budget;
    if (t > ML_MAX_THREADS) t = ML_MAX_THREADS;
    return t < 1 ? 1 : (int)t;
}

/* `n` doubles: `stack` when it has room for them, else the heap (NULL when that fails). */
ML_INLINE double *ml_doubles(double *stack, int64_t stack_len, int64_t n) {
    if (n <= stack_len) return stack;
    return (double *)malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
}

ML_INLINE void ml_free_doubles(double *p, const double *stack) {
    if (p != stack) free(p);
}

/* Writes the row losses `v` (n_rows of them, final) to the outputs: the float32 loss (per row,
 * or reduced in float64 in row order) and, when asked, the float64 rows. */
static inline void ml_store_rows(const ml_call *c, const double *v) {
    int64_t n = c->n_rows;
    if (c->rows && c->rows != v) memcpy(c->rows, v, (size_t)n * sizeof(double));
    if (c->reduction == ML_NONE) {
        for (int64_t r = 0; r < n; r++) c->loss[r] = (float)v[r];
        return;
    }
    double sum = 0.0;
    for (int64_t r = 0; r < n; r++) sum += v[r];
    c->loss[0] = (float)(c->reduction == ML_MEAN ? sum / (double)n : sum);
}

/* ------------------------------------------------------------------------------------------
 * Logistic math, float32, no library calls (vectorises).
 *
 * For a score-times-label v, with a = |v| and e = exp(-a) in [0, 1]:
 *
 *   softplus(-a) = log(1 + e) = 2 atanh(s),  s = e / (2 + e) in [0, 1/3]
 *                = 2 s (1 + s^2/3 + s^4/5 + ...)        (full relative accuracy, also tiny e)
 *   sigmoid(a)   = 1 / (1 + e),   sigmoid(-a) = e / (1 + e)
 *
 * s and both sigmoids share one division: D = 1 / ((1 + e)(2 + e)), so 1 / (1 + e) = (2 + e) D
 * and e / (2 + e) = e (1 + e) D. The caller picks the sigmoid by the sign of v and adds
 * max(-v, 0) for softplus(-v) = max(-v, 0) + log(1 + e). Nothing overflows for any |v|.
 *
 * exp(t), t <= 0 (Cephes-style): t = n ln2 + r, n = round(t / ln2), |r| <= ln2 / 2, with ln2 in
 * two parts (n ln2_hi exact); e^r by a degree-7 polynomial (error about 1 ulp); 2^n built from
 * the bits of the rounding constant (no float -> int conversion). t is clamped to -88, so
 * n >= -127: results below the smallest normal float (2^-126, t < -87.34) are denormal down to
 * t = -87.7 and exactly 0 below (n = -127 gives the bit pattern of +0); their absolute error is
 * below 2^-126. NaN propagates.
 *
 * Accuracy (measured over [-110, 110] and +-1e4 against float64): loss and gradient within
 * 3.4e-7 relative (about 6 half-ulps) wherever the result is a normal float.
 */

ML_INLINE float ml_bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

ML_INLINE uint32_t ml_float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* e^t for t <= 0 (or NaN); 0 below about -87.7 */
ML_INLINE float ml_exp_nonpos(float t) {
    t = t < -88.0f ? -88.0f : t;
    /* 1.5 * 2^23 + round(t / ln2): the integer lands in the low mantissa bits */
    float big = t * 1.44269504088896341f + 12582912.0f;
    float n = big - 12582912.0f;
    float r = t - n * 0.693359375f;  /* exact: ln2_hi has 9 significant bits */
    r = r + n * 2.12194440e-4f;      /* - n ln2_lo */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;      /* e^r */
    /* (n + 127) << 23 = 2^n for n in [-126, 0]; +0 for n = -127. The bits of `big` are
     * 0x4B400000 + n, and 0x4B400000 << 23 vanishes modulo 2^32. */
    return p * ml_bits_float((ml_float_bits(big) + 127u) << 23);
}

/* 2 atanh(s) for s in [0, 1/3]: 2 s q(s^2), q a degree-4 least-squares fit (Chebyshev nodes of
 * [0, 1/9]) of atanh(s) / s = 1 + s^2/3 + s^4/5 + ...; its error (5e-9) is below float32's
 * rounding. The factor 2 is folded into the coefficients. */
ML_INLINE float ml_two_atanh(float s) {
    float u = s * s;
    float q = 0.28027810280802646f;
    q = q * u + 0.27998141249825976f;
    q = q * u + 0.40021792633095776f;
    q = q * u + 0.666664104406210f;
    q = q * u + 2.0f;
    return s * q;
}

/* The logistic parts of v: returns log(1 + e) with e = exp(-|v|); *sig_big = sigmoid(|v|),
 * *e_out = e (so sigmoid(-|v|) = e * sig_big). */
ML_INLINE float ml_logistic(float v, float *sig_big, float *e_out) {
    float a = v < 0 ? -v : v;
    float e = ml_exp_nonpos(-a);
    float d1 = 1.0f + e, d2 = 2.0f + e;
    float inv = 1.0f / (d1 * d2);
    *sig_big = d2 * inv;
    *e_out = e;
    return ml_two_atanh(e * d1 * inv);
}

/* ------------------------------------------------------------------------------------------
 * Elementwise losses and rows split into chunks: every chunk's sum is float64, computed by one
 * thread; chunks are combined in order afterwards, so no sum depends on the thread count.
 */
#define ML_SPAN 512          /* elements per float32 partial sum */
#define ML_CHUNK (16 * 1024) /* elements per chunk (a multiple of ML_SPAN) */
#define ML_STACK_PARTS 1024  /* partial sums kept on the stack before the heap is used */

/* Chunk k of an elementwise kernel: stores its loss / gradient elements, writes its float64
 * sum to *part (for a reduced loss) and returns its count of bad labels. */
typedef int64_t (*ml_chunk_fn)(const ml_call *c, int64_t k, double *part);

/* The driver of the elementwise kernels: all n_rows * n_cols elements in chunks of ML_CHUNK
 * (over threads when that pays), the chunks' sums added in chunk order (no result depends on
 * the thread count), c->loss[0] set for "mean" / "sum". Returns the bad-label count, or
 * ML_ERR_NOMEM. Inlined, so run_chunk is a direct (inlinable) call in each kernel. */
ML_INLINE int64_t ml_run_elementwise(const ml_call *c, ml_chunk_fn run_chunk) {
    int64_t n = c->n_rows * c->n_cols;
    int64_t n_chunks = (n + ML_CHUNK - 1) / ML_CHUNK;
    double stack[ML_STACK_PARTS];
    double *parts = ml_doubles(stack, ML_STACK_PARTS, n_chunks);
    int nt = ml_threads(c->n_threads, n, ML_CHUNK);
    if (!parts) return ML_ERR_NOMEM;
    int64_t bad = 0;
    if (nt == 1) {
        for (int64_t k = 0; k < n_chunks; k++) bad += run_chunk(c, k, &parts[k]);
    } else {
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : bad)
        for (int64_t k = 0; k < n_chunks; k++) bad += run_chunk(c, k, &parts[k]);
    }
    if (c->reduction != ML_NONE) {
        double total = 0.0;
        for (int64_t k = 0; k < n_chunks; k++) total += parts[k];
        c->loss[0] = (float)(c->reduction == ML_MEAN ? total / (double)n : total);
    }
    ml_free_doubles(parts, stack);
    return bad;
}

/* Rows [r0, r1) of a per-row kernel: their losses into v[r] (float64), gradients where asked;
 * returns the bad-label count. */
typedef int64_t (*ml_rows_fn)(const ml_call *c, int64_t r0, int64_t r1, double *v);

/* The driver of a per-row kernel: the rows in contiguous blocks, one per thread (`work`, the
 * elements the call reads, decides how many threads pay; never more than rows), then the rows'
 * losses stored or reduced in row order (ml_store_rows: no result depends on the thread count).
 * Returns the bad-label count, or ML_ERR_NOMEM. Inlined, so `rows` is a direct call. */
ML_INLINE int64_t ml_run_rows(const ml_call *c, int64_t work, ml_rows_fn rows) {
    int64_t N = c->n_rows;
    double stack[ML_STACK_PARTS];
    double *v = c->rows ? c->rows : ml_doubles(stack, ML_STACK_PARTS, N);
    int nt = ml_threads(c->n_threads, work, ML_CHUNK);
    if (nt > N) nt = (int)N;
    if (!v) return ML_ERR_NOMEM;
    int64_t bad = 0;
    if (nt <= 1) {
        bad = rows(c, 0, N, v);
    } else {
#pragma omp parallel for num_threads(nt) schedule(static, 1) reduction(+ : bad)
        for (int t = 0; t < nt; t++) bad += rows(c, N * t / nt, N * (t + 1) / nt, v);
    }
    ml_store_rows(c, v);
    if (v != c->rows) ml_free_doubles(v, stack);
    return bad;
}

#endif /* MARGINLOSS_COMMON_H */
