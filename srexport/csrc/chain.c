/* A chain of small convolutions run as one fused, row-streaming CPU kernel (srexport/native.py).
 *
 * ONNX Runtime runs FSRCNN layer by layer: every 56-channel intermediate of a 1080p frame (100+ MB)
 * goes out to memory and back, its per-channel PReLUs are separate passes, and its blocked kernels
 * pad 12 channels to 16. Here each layer keeps only the rows its consumer still needs in a ring
 * buffer (about 1 MB in all for a 1080p frame, against hundreds), a row is computed as soon as the
 * next layer asks for it, the PReLU is applied to the accumulators before they are stored, and a
 * 12-channel layer computes 12 channels.
 *
 * Layer l computes output row y from rows y + top .. y + top + kh - 1 of layer l - 1 (layer -1 is the
 * input image, one channel), zero outside the image, like an ONNX Conv with zero padding. The last
 * layer is a 1x1 convolution whose channels are taps of the output phases (a strided ConvTranspose
 * as one GEMM-shaped layer without its zero taps, see sr_chain_rows). Vectors are GCC's generic
 * vectors as wide as one register of the instruction set -march=native selects (16 floats for
 * AVX-512, 8 for AVX2, 4 for SSE or NEON), with register blocking to match.
 *
 * bf16 (built where -march=native gives AVX512_BF16): a layer may read its input as bf16 pairs and
 * store its output as bf16 pairs. A bf16 row of C channels is C / 2 rows of 32-bit words, word x
 * of pair row p holding channels 2p (low half) and 2p + 1 (high half) of pixel x, so one vector
 * load feeds vdpbf16ps (16 lanes, each adding two bf16 products into an FP32 accumulator) and a
 * weight pair is one broadcast 32-bit word. The first layer (one input channel) reads the FP32
 * image and the last one writes FP32 taps: only the intermediate activations and the weights of
 * the layers after the first are rounded to bf16; every sum is FP32.
 */
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

/* Vector width and register blocking by instruction set: COB output channels x XB vectors of
 * accumulators (see DEFINE_ROW) must stay in registers, with room for the inputs and a weight. */
#if defined(__AVX512F__)
#define VL 16 /* floats per vector: one AVX-512 register */
#define ALL(x) {x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}
#elif defined(__AVX__)
#define VL 8 /* one AVX register */
#define ALL(x) {x, x, x, x, x, x, x, x}
#else
#define VL 4 /* one SSE or NEON register */
#define ALL(x) {x, x, x, x}
#endif
#if defined(__AVX512F__) || defined(__aarch64__) /* 32 vector registers: up to 28 accumulators */
#define ROW_BLOCKS(X) X(14, 2) X(12, 2) X(8, 3) X(7, 4) X(6, 4) X(5, 4) X(4, 4) X(3, 4) X(2, 4) X(1, 4)
#else /* 16 registers (AVX2, SSE): up to 12 */
#define ROW_BLOCKS(X) X(6, 2) X(5, 2) X(4, 3) X(3, 4) X(2, 4) X(1, 4)
#endif

typedef float vf __attribute__((vector_size(VL * 4)));
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4)));
typedef int vi __attribute__((vector_size(VL * 4)));

#define XB_MAX 4       /* widest run of vectors one call keeps in registers */
#define PAD 16         /* zero columns left and right of every stored row: windows reach at most PAD */
#define MAX_LAYERS 32
#define MAX_KH 16

enum { ACT_NONE, ACT_PRELU, ACT_TANH };

typedef struct {
    int cin, cout, kh, kw, top, left, act;
    int in_bf16, out_bf16; /* input rows / output rows stored as bf16 pairs (see the top) */
    const float *w;      /* [cout / B][cin][kh][kw][B], B = sr_block(cout); in_bf16: 32-bit words
                            [cout / B][cin / 2][kh][kw][B], each the bf16 pair (channel 2p, 2p + 1) */
    const float *b;      /* [cout] */
    const float *slope;  /* [cout] PReLU slopes (act == ACT_PRELU) */
} sr_conv;

typedef struct {         /* the last layer's channels: each adds into one output phase at an offset */
    const int *phase;    /* ry * s + rx, or -1 for a channel that only pads the count */
    const int *dy, *dx;  /* channel c of LR row y + dy, column x + dx adds into output phase (y, x) */
    const float *bias;   /* [s * s] */
} sr_taps;

static inline vf load(const float *p) { return *(const vfu *)p; }
static inline void store(float *p, vf v) { *(vfu *)p = v; }
static inline vf splat(float x) { return (vf)ALL(x); } /* not (vf){} + x: an add the compiler must keep */

static inline vf blend(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

static inline vf prelu(vf v, float slope) { return blend(v > splat(0.0f), v, v * splat(slope)); }

/* tanh(x) = sign(x) (1 - t) / (1 + t) with t = exp(-2|x|) in [0, 1]: no cancellation for large |x|,
 * absolute error about 1e-7 everywhere. exp by n = round(z log2 e), r = z - n ln 2 (two-part ln 2),
 * e^r by its degree-7 Taylor polynomial (|r| <= 0.35: truncation 6e-9), 2^n into the exponent bits. */
static inline vf tanh_v(vf x) {
    const vi sign_bit = (vi)ALL((int)0x80000000u);
    vf a = (vf)((vi)x & ~sign_bit);
    a = blend(a < splat(9.0f), a, splat(9.0f)); /* tanh(9) rounds to 1 in float */
    const vf z = a * splat(-2.0f);
    const vi n = __builtin_convertvector(z * splat(1.44269504f) - splat(0.5f), vi); /* z <= 0: rounds */
    const vf nf = __builtin_convertvector(n, vf);
    const vf r = z - nf * splat(0.693145752f) - nf * splat(1.42860677e-6f);
    vf p = splat(1.0f / 5040);
    p = p * r + splat(1.0f / 720);
    p = p * r + splat(1.0f / 120);
    p = p * r + splat(1.0f / 24);
    p = p * r + splat(1.0f / 6);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    const vf t = p * (vf)((n + 127) << 23);
    const vf y = (splat(1.0f) - t) / (splat(1.0f) + t);
    return (vf)((vi)y | ((vi)x & sign_bit));
}

static inline vf activate(const sr_conv *g, int c, vf v) {
    if (g->act == ACT_PRELU) return prelu(v, g->slope[c]);
    if (g->act == ACT_TANH) return tanh_v(v);
    return v;
}

/* COB output channels x XB vectors of pixels in registers; one input vector load feeds COB FMAs.
 * Weights are packed by block: [cout / COB][cin][kh][kw][COB], so one pointer walks them in order. */
#define TAP(COB, XB, src)                                                                                     \
    do {                                                                                               \
        vf in[XB];                                                                                    \
        for (int u = 0; u < XB; u++) in[u] = load((src) + u * VL);                                     \
        for (int j = 0; j < COB; j++) {                                                                \
            vf wj = splat(w[j]);                                                                      \
            for (int u = 0; u < XB; u++) acc[j][u] += wj * in[u];                                      \
        }                                                                                              \
        w += COB;                                                                                      \
    } while (0)

#if defined(__AVX512BF16__)
/* Two FP32 vectors (channels 2p and 2p + 1 of 16 pixels) as 16 words of bf16 pairs, rounded to
 * nearest even. */
static inline void store_pair(unsigned *dst, vf even, vf odd) {
    const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh((__m512)even));
    const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh((__m512)odd));
    _mm512_storeu_si512(dst, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
}
#define STORE_BF16(COB, XB)                                                                            \
    for (int j = 0; j + 1 < COB; j += 2) { /* COB even: sr_chain_rows checks */                     \
        unsigned *dst = (unsigned *)out + (size_t)((c0 + j) / 2) * stride + PAD + x;                   \
        for (int u = 0; u < XB; u++)                                                                   \
            store_pair(dst + u * VL, activate(g, c0 + j, acc[j][u]), activate(g, c0 + j + 1, acc[j + 1][u])); \
    }
#else
#define STORE_BF16(COB, XB)
#endif

/* The activated accumulators into the output rows: FP32 rows, or bf16 pair rows (COB even). */
#define STORE(COB, XB)                                                                                 \
    if (g->out_bf16) {                                                                                 \
        STORE_BF16(COB, XB)                                                                            \
    } else                                                                                             \
        for (int j = 0; j < COB; j++) {                                                                \
            float *dst = out + (size_t)(c0 + j) * stride + PAD + x;                                    \
            for (int u = 0; u < XB; u++) store(dst + u * VL, activate(g, c0 + j, acc[j][u]));          \
        }

#define DEFINE_ROW(COB, XB)                                                                            \
    static void row_##COB##_##XB(const sr_conv *g, const float *const *rows, int stride, float *out, \
                                 int wv, int c0) {                                                     \
        const float *block = g->w + (size_t)c0 * g->cin * g->kh * g->kw;                               \
        for (int x = 0; x < wv; x += VL * XB) {                                                        \
            vf acc[COB][XB];                                                                          \
            for (int j = 0; j < COB; j++)                                                              \
                for (int u = 0; u < XB; u++) acc[j][u] = splat(g->b[c0 + j]);                          \
            const float *w = block;                                                                    \
            if (g->kh == 1 && g->kw == 1) { /* 1x1: one flat loop over the input channels */           \
                const float *src = rows[0] + PAD + x + g->left;                                        \
                for (int ci = 0; ci < g->cin; ci++, src += stride) TAP(COB, XB, src);                         \
            } else {                                                                                   \
                for (int ci = 0; ci < g->cin; ci++)                                                    \
                    for (int ky = 0; ky < g->kh; ky++) {                                               \
                        const float *src = rows[ky] + (size_t)ci * stride + PAD + x + g->left;         \
                        for (int kx = 0; kx < g->kw; kx++) TAP(COB, XB, src + kx);                            \
                    }                                                                                  \
            }                                                                                          \
            STORE(COB, XB)                                                                             \
        }                                                                                              \
    }

ROW_BLOCKS(DEFINE_ROW)

#if defined(__AVX512BF16__)
/* As TAP, on bf16 pairs: one load of 16 words (two channels or kernel positions of 16 pixels)
 * feeds COB vdpbf16ps, each with its weight pair broadcast from memory. */
#define TAP_BF16(COB, XB, src)                                                                         \
    do {                                                                                               \
        __m512bh in[XB];                                                                               \
        for (int u = 0; u < XB; u++) in[u] = (__m512bh)_mm512_loadu_si512((src) + u * VL);             \
        for (int j = 0; j < COB; j++) {                                                                \
            const __m512bh wj = (__m512bh)_mm512_set1_epi32((int)w[j]);                                \
            for (int u = 0; u < XB; u++) acc[j][u] = (vf)_mm512_dpbf16_ps((__m512)acc[j][u], in[u], wj); \
        }                                                                                              \
        w += COB;                                                                                      \
    } while (0)

#define DEFINE_ROW_BF16(COB, XB)                                                                       \
    static void rowb_##COB##_##XB(const sr_conv *g, const float *const *rows, int stride, float *out,\
                                  int wv, int c0) {                                                    \
        const int pairs = g->cin / 2;                                                                  \
        const unsigned *block = (const unsigned *)g->w + (size_t)c0 * pairs * g->kh * g->kw;           \
        for (int x = 0; x < wv; x += VL * XB) {                                                        \
            vf acc[COB][XB];                                                                           \
            for (int j = 0; j < COB; j++)                                                              \
                for (int u = 0; u < XB; u++) acc[j][u] = splat(g->b[c0 + j]);                          \
            const unsigned *w = block;                                                                 \
            if (g->kh == 1 && g->kw == 1) {                                                            \
                const unsigned *src = (const unsigned *)rows[0] + PAD + x + g->left;                   \
                for (int p = 0; p < pairs; p++, src += stride) TAP_BF16(COB, XB, src);                 \
            } else {                                                                                   \
                for (int p = 0; p < pairs; p++)                                                        \
                    for (int ky = 0; ky < g->kh; ky++) {                                               \
                        const unsigned *src = (const unsigned *)rows[ky] + (size_t)p * stride + PAD + x + g->left; \
                        for (int kx = 0; kx < g->kw; kx++) TAP_BF16(COB, XB, src + kx);                \
                    }                                                                                  \
            }                                                                                          \
            STORE(COB, XB)                                                                             \
        }                                                                                              \
    }

ROW_BLOCKS(DEFINE_ROW_BF16)
#endif

typedef void (*row_fn)(const sr_conv *, const float *const *, int, float *, int, int);

/* The largest channel block that divides cout (so no remainder code is needed), for FP32 or bf16
 * input rows (NULL: this build has no bf16 dot products). */
static row_fn pick_row(int cout, int in_bf16, int *block) {
    /* few channels over more vectors beat many over one: 16 x 1 would load one input vector per 16
     * FMAs (plus 16 broadcasts), 8 x 3 loads 3 per 24 */
#define BLOCK_OF(COB, XB) COB,
#define ROW_OF(COB, XB) row_##COB##_##XB,
    static const int blocks[] = {ROW_BLOCKS(BLOCK_OF)};
    static const row_fn fns[] = {ROW_BLOCKS(ROW_OF)};
#if defined(__AVX512BF16__)
#define ROWB_OF(COB, XB) rowb_##COB##_##XB,
    static const row_fn fns_bf16[] = {ROW_BLOCKS(ROWB_OF)};
#else
    static const row_fn fns_bf16[sizeof blocks / sizeof blocks[0]] = {0};
#endif
    for (int i = 0;; i++)
        if (cout % blocks[i] == 0) {
            *block = blocks[i];
            return in_bf16 ? fns_bf16[i] : fns[i];
        }
}

/* 1 when this build computes bf16 layers (AVX512_BF16's vdpbf16ps), else 0. */
int sr_has_bf16(void) {
#if defined(__AVX512BF16__)
    return 1;
#else
    return 0;
#endif
}

/* Floats per vector in this build (16: AVX-512, 8: AVX2, 4: SSE or NEON). */
int sr_vector_floats(void) { return VL; }

/* The block size weights of a layer with cout outputs are packed by (see DEFINE_ROW). */
int sr_block(int cout) {
    int block;
    pick_row(cout, 0, &block);
    return block;
}

typedef struct {
    int H, W, wv, stride;
    const sr_conv *layers;
    const float *in;
    float *zero;                     /* a row of zeros (every channel) for rows outside the image */
    float *ring[MAX_LAYERS + 1];     /* ring[0]: input rows; ring[l + 1]: rows of layer l */
    int cap[MAX_LAYERS + 1], next[MAX_LAYERS + 1];
    int words[MAX_LAYERS + 1];       /* rows of `stride` words per image row: channels, or channels / 2 for bf16 */
} stream;

static const float *row_at(stream *t, int i, int y) { /* row y of ring i */
    if (y < 0 || y >= t->H) return t->zero;
    return t->ring[i] + (size_t)(y % t->cap[i]) * t->words[i] * t->stride;
}

/* Compute ring i (0: copy of the input) up to row `need`, asking ring i - 1 first. */
static void advance(stream *t, int i, int need) {
    if (need > t->H - 1) need = t->H - 1;
    while (t->next[i] <= need) {
        const int y = t->next[i]++;
        float *dst = t->ring[i] + (size_t)(y % t->cap[i]) * t->words[i] * t->stride;
        if (i == 0) {
            memcpy(dst + PAD, t->in + (size_t)y * t->W, t->W * sizeof(float));
            continue; /* the padding columns stay zero from calloc */
        }
        const sr_conv *c = &t->layers[i - 1];
        advance(t, i - 1, y + c->top + c->kh - 1);
        const float *rows[MAX_KH];
        for (int ky = 0; ky < c->kh; ky++) rows[ky] = row_at(t, i - 1, y + c->top + ky);
        int block;
        row_fn fn = pick_row(c->cout, c->in_bf16, &block);
        for (int c0 = 0; c0 < c->cout; c0 += block) fn(c, rows, t->stride, dst, t->wv, c0);
        /* the columns past the image (computed from padding, up to a block's width) are the next
         * layer's zero padding */
        for (int ch = 0; ch < t->words[i]; ch++)
            memset(dst + (size_t)ch * t->stride + PAD + t->W, 0, (t->stride - PAD - t->W) * sizeof(float));
    }
}

/* Rows [y0, y1) of the H x W input through the chain into out ((H*s) x (W*s)). The last layer is
 * a 1x1 convolution whose channels are (phase, offset) taps of the output: a strided
 * ConvTranspose as a GEMM-shaped convolution without zero taps, whose rows are added into s*s
 * phase rows of accumulators as soon as they are computed (`taps`), then interleaved into `out`.
 * Bands of rows can run on separate threads; each recomputes the few rows its windows need from
 * outside the band. Returns 0, -1 when the chain is out of this kernel's bounds, -2 when memory
 * runs out. */
int sr_chain_rows(int nlayers, const sr_conv *layers, int s, const sr_taps *taps, const float *in, int H, int W,
                  float *out, int y0, int y1) {
    if (nlayers < 1 || nlayers > MAX_LAYERS || H < 1 || W < 1 || s < 1) return -1;
    stream t = {0};
    t.layers = layers;
    t.in = in;
    t.H = H;
    t.W = W;
    t.wv = (W + VL - 1) / VL * VL;
    t.stride = PAD + t.wv + VL * (XB_MAX - 1) + PAD; /* a block of XB vectors may run past wv */
    const int ntaps = layers[nlayers - 1].cout, phases = s * s;
    int widest = 1, ok = layers[nlayers - 1].kh == 1 && layers[nlayers - 1].kw == 1, dy0 = 0, dy1 = 0;
    t.words[0] = 1;
    for (int l = 0; l < nlayers; l++) {
        const sr_conv *c = &layers[l];
        int block;
        ok &= c->kh <= MAX_KH && c->left >= -PAD && c->left + c->kw - 1 <= PAD;
        /* bf16 rows: only where this build has vdpbf16ps, in pairs, matching between layers */
        ok &= pick_row(c->cout, c->in_bf16, &block) != NULL;
        ok &= !c->in_bf16 || (c->cin % 2 == 0 && l > 0 && layers[l - 1].out_bf16);
        ok &= c->in_bf16 || l == 0 || !layers[l - 1].out_bf16;
        ok &= !c->out_bf16 || (block % 2 == 0 && l < nlayers - 1);
        t.words[l + 1] = c->out_bf16 ? c->cout / 2 : c->cout;
        if (c->cout > widest) widest = c->cout;
    }
    for (int c = 0; c < ntaps; c++) {
        ok &= taps->phase[c] < phases && taps->dx[c] >= -PAD && taps->dx[c] <= PAD;
        if (taps->dy[c] < dy0) dy0 = taps->dy[c];
        if (taps->dy[c] > dy1) dy1 = taps->dy[c];
    }
    if (!ok) return -1;
    /* ring i holds the rows its consumer's window spans; the taps' ring one row */
    const int zfirst = y0 + dy0 > 0 ? y0 + dy0 : 0, zlast = y1 - 1 + dy1 < H - 1 ? y1 - 1 + dy1 : H - 1;
    int first = zfirst;
    for (int i = nlayers; i >= 0; i--) {
        t.cap[i] = i == nlayers ? 1 : layers[i].kh;
        t.next[i] = first < 0 ? 0 : first;
        if (i > 0) first += layers[i - 1].top;
    }
    const int rows = dy1 - dy0 + 1; /* output rows accumulating at once */
    float *acc = aligned_alloc(64, (size_t)rows * phases * t.stride * sizeof(float));
    t.zero = calloc((size_t)widest * t.stride, sizeof(float));
    ok &= acc != NULL && t.zero != NULL;
    for (int i = 0; i <= nlayers; i++) {
        t.ring[i] = calloc((size_t)t.cap[i] * t.words[i] * t.stride, sizeof(float));
        ok &= t.ring[i] != NULL;
    }
    int started = y0, emitted = y0; /* output rows [emitted, started) are accumulating */
    for (int yz = zfirst; ok && yz <= zlast + 1; yz++) {
        /* emit every output row no later tap row reaches, freeing its accumulators */
        int emit_to = yz > zlast ? started : yz - dy1;
        if (emit_to > started) emit_to = started;
        for (; emitted < emit_to; emitted++)
            for (int p = 0; p < phases; p++) {
                const float *a = acc + ((size_t)(emitted % rows) * phases + p) * t.stride;
                float *o = out + ((size_t)emitted * s + p / s) * (size_t)W * s + p % s;
                for (int x = 0; x < W; x++) o[(size_t)x * s] = a[x];
            }
        if (yz > zlast) break; /* every row was started by then: tap row zlast reaches y1 - 1 */
        /* start every output row that tap row yz is the first to reach */
        const int start_to = yz - dy0 + 1 < y1 ? yz - dy0 + 1 : y1;
        for (; started < start_to; started++)
            for (int p = 0; p < phases; p++) {
                float *a = acc + ((size_t)(started % rows) * phases + p) * t.stride;
                for (int x = 0; x < t.wv; x++) a[x] = taps->bias[p];
            }
        advance(&t, nlayers, yz);
        const float *z = row_at(&t, nlayers, yz);
        for (int c = 0; c < ntaps; c++) {
            const int yo = yz - taps->dy[c];
            if (taps->phase[c] < 0 || yo < y0 || yo >= y1) continue;
            float *a = acc + ((size_t)(yo % rows) * phases + taps->phase[c]) * t.stride;
            const float *zc = z + (size_t)c * t.stride + PAD + taps->dx[c];
            for (int x = 0; x < t.wv; x += VL) store(a + x, load(a + x) + load(zc + x));
        }
    }
    for (int i = 0; i <= nlayers; i++) free(t.ring[i]);
    free(t.zero);
    free(acc);
    return ok ? 0 : -2;
}
