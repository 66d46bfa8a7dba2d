/*
 * multilabel_margin_loss: the multi-label hinge (ranking) loss over -1-terminated index lists,
 * float32.
 *
 * Row n of C scores x; its target row (W = t_cols entries: C, or fewer for a narrow target,
 * ML_FORM_NARROW: a -1-padded row without its padding columns) lists classes t_1 .. t_K up to
 * the first negative entry or its end (entries after a negative one are ignored; a class
 * listed twice counts twice in the sum, once in the target set T). With S_j = x_{t_j}:
 *
 *   l_n        = (1/C) sum_{j <= K} sum_{k not in T} [1 - S_j + x_k]_+      (strict > 0)
 *   dl_n/dx_k  = c_k / C          (k not in T),  c_k = #{j : 1 - S_j + x_k > 0}
 *   dl_n/dx_u  = -(m_u d(u)) / C  (u in T),      d(u) = #{k not in T : 1 - x_u + x_k > 0}
 *
 * m_u being how often u is listed. torch loops over all K C pairs. Here, O(C log K) per row:
 *
 *   1. keys: q_j = S_j - 1 in float32, sorted (with their classes). ATen's pair test
 *      (1 - S_j) + x_k > 0, evaluated in float32, holds exactly when x_k > fl(S_j - 1) = q_j
 *      (rounding is monotone and fl(1 - S) = -fl(S - 1)), so the counts below are ATen's.
 *   2. c_k = #{j : q_j < x_k} for every class, 0 for the listed classes: a branch-free binary
 *      search vectorised over the classes (gathers); for lists of up to 32 entries, a compare
 *      with every key, which is cheaper there.
 *   3. histogram h[c] of the c_k; the target at sorted position i is active with exactly the k
 *      having c_k > i, so d_(i) = sum_{c > i} h[c] (a suffix sum; ties share one d).
 *   4. C l_n = sum_k c_k (1 + x_k) - sum_i d_(i) S_(i), accumulated in float64. A term is added
 *      only where its count is non-zero, so infinite scores never meet a zero count (0 * inf):
 *      an active pair with an infinite score makes the loss +inf, as in torch, and NaN scores
 *      are never active (NaN compares false; a NaN target score is sorted as +inf), as in torch.
 *
 * Label check, in the same pass: counts target entries outside [-1, C) anywhere in the row
 * (also after the first -1), plus 1 when the whole target holds only 0s and 1s while C > 2 and
 * W = C (a 0/1 mask, not an index list; a narrow target of 0s and 1s is a list). Entries >= C
 * before the first negative are skipped, never dereferenced.
 *
 * Memory traffic per row: read the target row (8 bytes per entry) and the scores once, write
 * the gradient once plus the K target entries; sort and search in per-thread scratch (about
 * 45 bytes per class, in cache). Rows are spread over the threads. The label check reads each
 * thread's whole target range in one vectorised pass first.
 */
#include "common.h"

static const ml_kernel info =
    ML_KERNEL_FORMS(1, 0, 0, ML_TARGET_I64, 2, 0, 0, 0, ML_FORM_NARROW);

const ml_kernel *ml_multilabel_margin_loss_info(void) { return &info; }

#define INSERTION 32   /* lists up to this long are sorted by insertion */
#define LINEAR 32      /* lists up to this long are counted against every key, not searched */

/* Per-thread scratch, one allocation: about 45 bytes per class, reused row after row. */
typedef struct scratch {
    float *key;        /* (2C + 2 + LINEAR) the sorted keys, padded with +inf */
    int32_t *cls;      /* (C) their classes */
    int32_t *count;    /* (C) c_k */
    double *term;      /* (C) c_k (1 + x_k) */
    int32_t *hist;     /* (4 (C + 1)) histograms of the counts */
    uint32_t *ubuf[2]; /* (C each) radix sort: keys as ordered unsigned ints */
    int32_t *cbuf[2];  /* (C each) radix sort: classes */
    uint8_t *listed;   /* (C) the class is in the row's list; all 0 between rows */
} scratch;

static int scratch_alloc(scratch *s, int64_t C) {
    size_t n = (size_t)C, n_keys = 2 * n + 2 + LINEAR;
    char *p = (char *)malloc(8 * n + 4 * (n_keys + n + n + 4 * (n + 1) + 4 * n) + n);
    if (!p) return 0;
    s->term = (double *)p;
    s->key = (float *)(s->term + n);
    s->cls = (int32_t *)(s->key + n_keys);
    s->count = s->cls + n;
    s->hist = s->count + n;
    s->ubuf[0] = (uint32_t *)(s->hist + 4 * (n + 1));
    s->ubuf[1] = s->ubuf[0] + n;
    s->cbuf[0] = (int32_t *)(s->ubuf[1] + n);
    s->cbuf[1] = s->cbuf[0] + n;
    s->listed = (uint8_t *)(s->cbuf[1] + n);
    memset(s->listed, 0, n);
    return 1;
}

/* float <-> unsigned int with the same order (no NaN here) */
ML_INLINE uint32_t key_to_u(float f) {
    uint32_t u = ml_float_bits(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

ML_INLINE float u_to_key(uint32_t u) {
    return ml_bits_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

/* Sorts key[0..n) ascending, carrying cls along. */
static void sort_keys(scratch *s, int64_t n) {
    float *key = s->key;
    int32_t *cls = s->cls;
    if (n <= INSERTION) {
        for (int64_t i = 1; i < n; i++) {
            float k = key[i];
            int32_t c = cls[i];
            int64_t j = i;
            for (; j > 0 && key[j - 1] > k; j--) {
                key[j] = key[j - 1];
                cls[j] = cls[j - 1];
            }
            key[j] = k;
            cls[j] = c;
        }
        return;
    }
    /* LSD radix sort on the keys' ordered bits: 4 passes of 8 bits, all histograms from one
     * read; a pass where every key has the same digit is skipped */
    uint32_t *u = s->ubuf[0];
    int32_t *c = s->cbuf[0];
    int32_t h[4][256];
    memset(h, 0, sizeof h);
    for (int64_t i = 0; i < n; i++) {
        uint32_t v = key_to_u(key[i]);
        u[i] = v;
        c[i] = cls[i];
        h[0][v & 255u]++;
        h[1][(v >> 8) & 255u]++;
        h[2][(v >> 16) & 255u]++;
        h[3][v >> 24]++;
    }
    int cur = 0;
    for (int pass = 0; pass < 4; pass++) {
        int shift = 8 * pass;
        int32_t *hp = h[pass];
        uint32_t *ui = s->ubuf[cur], *uo = s->ubuf[1 - cur];
        if (hp[(ui[0] >> shift) & 255u] == n) continue;
        int32_t sum = 0;
        for (int b = 0; b < 256; b++) {
            int32_t t = hp[b];
            hp[b] = sum;
            sum += t;
        }
        int32_t *ci = s->cbuf[cur], *co = s->cbuf[1 - cur];
        for (int64_t i = 0; i < n; i++) {
            int32_t at = hp[(ui[i] >> shift) & 255u]++;
            uo[at] = ui[i];
            co[at] = ci[i];
        }
        cur = 1 - cur;
    }
    for (int64_t i = 0; i < n; i++) {
        key[i] = u_to_key(s->ubuf[cur][i]);
        cls[i] = s->cbuf[cur][i];
    }
}

/* c_k = #{i : key[i] < x_k} for the C classes, 0 for the listed ones, into count; c_k / C
 * (times gscale) into grad where asked; the terms c_k (1 + x_k) of the loss into term (0 where
 * c_k = 0, so that an infinite score never meets a zero count).
 *
 * Short lists (n <= LINEAR): every class is compared with the first W keys (W >= n fixed at
 * compile time; keys from n on are +inf): the key loop unrolls and the class loop vectorises,
 * 2 W vector operations per 16 classes. Long lists: a branch-free binary search over the P
 * sorted keys (a power of 2 above n; keys from n on are +inf, so no count reaches them),
 * vectorised over the classes (a gather per level), log2(P) passes over count. */
ML_INLINE void count_classes(const float *restrict x, const float *restrict key, int64_t P,
                             const uint8_t *restrict listed, int32_t *restrict count,
                             int64_t C, float scale, float *restrict grad,
                             double *restrict term, const int W, const int want_grad) {
    if (W == 0) { /* search */
        for (int64_t l = 0; l < C; l++) count[l] = 0;
        for (int64_t step = P >> 1; step >= 1; step >>= 1) {
            for (int64_t l = 0; l < C; l++) {
                int32_t a = count[l];
                count[l] = key[a + step - 1] < x[l] ? a + (int32_t)step : a;
            }
        }
    }
#pragma omp simd
    for (int64_t l = 0; l < C; l++) {
        float xl = x[l];
        int32_t c = 0;
        if (W == 0) {
            c = count[l];
        } else {
#pragma GCC unroll 32
            for (int i = 0; i < W; i++) c += key[i] < xl;
        }
        c = listed[l] ? 0 : c;
        count[l] = c;
        if (want_grad) grad[l] = (float)c * scale;
        term[l] = c > 0 ? (double)c * (1.0 + (double)xl) : 0.0;
    }
}

/* One row (its list: the entries before the first negative one, of the `width` <= C in t).
 * Returns its loss times C, in float64. */
static double row(const float *restrict x, const int64_t *restrict t, int64_t width, int64_t C,
                  float scale, float *restrict grad, scratch *s) {
    /* keys q = S - 1 of the listed classes in range (NaN scores sort as +inf), marked listed
     * (at most width <= C of them: the scratch's size) */
    int64_t n = 0;
    for (int64_t j = 0; j < width; j++) {
        int64_t u = t[j];
        if (u < 0) break;
        if (u >= C) continue; /* out of range: skipped (counted as bad) */
        float q = x[u] - 1.0f;
        s->key[n] = q == q ? q : (float)INFINITY;
        s->cls[n] = (int32_t)u;
        s->listed[u] = 1;
        n++;
    }
    if (n == 0) { /* nothing listed: no active pair */
        if (grad) memset(grad, 0, (size_t)C * sizeof(float));
        return 0.0;
    }
    sort_keys(s, n);
    int64_t P = 2; /* the search's width: a power of 2 above n */
    while (P <= n) P <<= 1;
    /* the linear count's width (1, 2, 4, or a multiple of 8), or 0 for the search */
    int W = n <= 2 ? (int)n : n <= 4 ? 4 : n <= LINEAR ? (int)(n + 7) / 8 * 8 : 0;
    for (int64_t i = n; i < (W ? W : P); i++) s->key[i] = (float)INFINITY;

    /* c_k, the non-target gradient and the terms c_k (1 + x_k) */
    const float *key = s->key;
    const uint8_t *listed = s->listed;
    int32_t *cnt = s->count;
    double *term = s->term;
    /* W and want_grad as compile-time constants */
#define COUNT(W_, G_) count_classes(x, key, P, listed, cnt, C, scale, grad, term, W_, G_)
    switch (2 * W + (grad != 0)) {
    case 2: COUNT(1, 0); break;
    case 3: COUNT(1, 1); break;
    case 4: COUNT(2, 0); break;
    case 5: COUNT(2, 1); break;
    case 8: COUNT(4, 0); break;
    case 9: COUNT(4, 1); break;
    case 16: COUNT(8, 0); break;
    case 17: COUNT(8, 1); break;
    case 32: COUNT(16, 0); break;
    case 33: COUNT(16, 1); break;
    case 48: COUNT(24, 0); break;
    case 49: COUNT(24, 1); break;
    case 64: COUNT(32, 0); break;
    case 65: COUNT(32, 1); break;
    case 0: COUNT(0, 0); break;
    default: COUNT(0, 1); break;
    }
#undef COUNT

    /* sum_k c_k (1 + x_k), and the histogram h of the counts (four interleaved sums and
     * histograms, so that neither waits on itself) */
    int32_t *h = s->hist;
    int64_t w = n + 1, k = 0;
    memset(h, 0, (size_t)(4 * w) * sizeof(int32_t));
    double p0 = 0.0, p1 = 0.0, p2 = 0.0, p3 = 0.0;
    for (; k + 4 <= C; k += 4) {
        h[cnt[k]]++;
        h[w + cnt[k + 1]]++;
        h[2 * w + cnt[k + 2]]++;
        h[3 * w + cnt[k + 3]]++;
        p0 += term[k];
        p1 += term[k + 1];
        p2 += term[k + 2];
        p3 += term[k + 3];
    }
    for (; k < C; k++) {
        h[cnt[k]]++;
        p0 += term[k];
    }
    double pos = (p0 + p1) + (p2 + p3);

    /* d_(i) = #{k : c_k > i} = sum_{c > i} h[c]; the targets' terms and gradients */
    double neg = 0.0;
    int32_t d = 0;
    for (int64_t i = n - 1; i >= 0; i--) {
        d += h[i + 1] + h[w + i + 1] + h[2 * w + i + 1] + h[3 * w + i + 1]; /* d_(i) */
        if (d > 0) {
            int32_t u = s->cls[i];
            neg += (double)d * (double)x[u];
            if (grad) grad[u] -= (float)d * scale;
        }
    }
    for (int64_t i = 0; i < n; i++) s->listed[s->cls[i]] = 0;
    return pos - neg;
}

/* Rows [r0, r1): losses into v[r]; returns the bad entries (and the non-0/1 ones in *not01),
 * or ML_ERR_NOMEM. */
static int64_t rows(const ml_call *c, int64_t r0, int64_t r1, double *v, int64_t *not01) {
    const int64_t C = c->n_cols, W = c->t_cols;
    if (r0 >= r1) return 0;
    /* the label check: one pass over the range's whole target (entries after a row's first
     * negative one included) */
    const int64_t *t = (const int64_t *)c->target;
    int64_t bad = 0, n01 = 0;
#pragma omp simd reduction(+ : bad, n01)
    for (int64_t i = r0 * W; i < r1 * W; i++) {
        int64_t ti = t[i];
        bad += (ti < -1) | (ti >= C);
        n01 += (ti != 0) & (ti != 1);
    }
    *not01 += n01;
    scratch s;
    if (!scratch_alloc(&s, C)) return ML_ERR_NOMEM;
    const float scale = (float)(c->gscale / (double)C);
    for (int64_t r = r0; r < r1; r++) {
        const float *x = (const float *)c->x[0] + r * C;
        float *grad = c->grad[0] ? (float *)c->grad[0] + r * C : 0;
        v[r] = row(x, t + r * W, W, C, scale, grad, &s) / (double)C;
    }
    free(s.term);
    return bad;
}

int64_t ml_multilabel_margin_loss_f32(const ml_call *c) {
    int64_t N = c->n_rows, C = c->n_cols;
    double stack[ML_STACK_PARTS];
    double *v = c->rows ? c->rows : ml_doubles(stack, ML_STACK_PARTS, N);
    if (!v) return ML_ERR_NOMEM;
    if (C == 0) { /* nothing listed, nothing to check */
        for (int64_t r = 0; r < N; r++) v[r] = 0.0;
        ml_store_rows(c, v);
        if (v != c->rows) ml_free_doubles(v, stack);
        return 0;
    }
    int nt = ml_threads(c->n_threads, N * C, ML_CHUNK / 4);
    if (nt > N) nt = (int)N;
    int64_t bad = 0, not01 = 0;
    int failed = 0;
    if (nt <= 1) {
        bad = rows(c, 0, N, v, &not01);
        failed = bad < 0;
    } else {
#pragma omp parallel for num_threads(nt) schedule(static, 1) reduction(+ : bad, not01, failed)
        for (int t = 0; t < nt; t++) {
            int64_t b = rows(c, N * t / nt, N * (t + 1) / nt, v, &not01);
            if (b < 0) failed++;
            else bad += b;
        }
    }
    if (failed) {
        if (v != c->rows) ml_free_doubles(v, stack);
        return ML_ERR_NOMEM;
    }
    ml_store_rows(c, v);
    if (v != c->rows) ml_free_doubles(v, stack);
    return bad + (N > 0 && C > 2 && c->t_cols == C && not01 == 0);
}
