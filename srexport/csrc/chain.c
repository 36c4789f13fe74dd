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
 * 16-float vectors; compiled with -march=native they become AVX-512 (or two AVX2 halves, or four
 * SSE quarters).
 */
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int i16 __attribute__((vector_size(64)));

#define VL 16          /* floats per vector */
#define XB_MAX 4       /* widest run of vectors one call keeps in registers */
#define PAD 16         /* zero columns left and right of every stored row: windows reach at most PAD */
#define MAX_LAYERS 32
#define MAX_KH 16

enum { ACT_NONE, ACT_PRELU, ACT_TANH };

typedef struct {
    int cin, cout, kh, kw, top, left, act;
    const float *w;      /* [cout / B][cin][kh][kw][B], B = sr_block(cout) */
    const float *b;      /* [cout] */
    const float *slope;  /* [cout] PReLU slopes (act == ACT_PRELU) */
} sr_conv;

typedef struct {         /* the last layer's channels: each adds into one output phase at an offset */
    const int *phase;    /* ry * s + rx, or -1 for a channel that only pads the count */
    const int *dy, *dx;  /* channel c of LR row y + dy, column x + dx adds into output phase (y, x) */
    const float *bias;   /* [s * s] */
} sr_taps;

static inline v16 load(const float *p) { return *(const v16u *)p; }
static inline void store(float *p, v16 v) { *(v16u *)p = v; }
static inline v16 splat(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

static inline v16 blend(i16 mask, v16 a, v16 b) { return (v16)(((i16)a & mask) | ((i16)b & ~mask)); }

static inline v16 prelu(v16 v, float slope) { return blend(v > splat(0.0f), v, v * splat(slope)); }

/* tanh(x) = sign(x) (1 - t) / (1 + t) with t = exp(-2|x|) in [0, 1]: no cancellation for large |x|,
 * absolute error about 1e-7 everywhere. exp by n = round(z log2 e), r = z - n ln 2 (two-part ln 2),
 * e^r by its degree-7 Taylor polynomial (|r| <= 0.35: truncation 6e-9), 2^n into the exponent bits. */
static inline v16 tanh16(v16 x) {
    const i16 sign_bit = (i16)splat(-0.0f);
    v16 a = (v16)((i16)x & ~sign_bit);
    a = blend(a < splat(9.0f), a, splat(9.0f)); /* tanh(9) rounds to 1 in float */
    const v16 z = a * splat(-2.0f);
    const i16 n = __builtin_convertvector(z * splat(1.44269504f) - splat(0.5f), i16); /* z <= 0: rounds */
    const v16 nf = __builtin_convertvector(n, v16);
    const v16 r = z - nf * splat(0.693145752f) - nf * splat(1.42860677e-6f);
    v16 p = splat(1.0f / 5040);
    p = p * r + splat(1.0f / 720);
    p = p * r + splat(1.0f / 120);
    p = p * r + splat(1.0f / 24);
    p = p * r + splat(1.0f / 6);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    const v16 t = p * (v16)((n + 127) << 23);
    const v16 y = (splat(1.0f) - t) / (splat(1.0f) + t);
    return (v16)((i16)y | ((i16)x & sign_bit));
}

static inline v16 activate(const sr_conv *g, int c, v16 v) {
    if (g->act == ACT_PRELU) return prelu(v, g->slope[c]);
    if (g->act == ACT_TANH) return tanh16(v);
    return v;
}

/* COB output channels x XB vectors of pixels in registers; one input vector load feeds COB FMAs.
 * Weights are packed by block: [cout / COB][cin][kh][kw][COB], so one pointer walks them in order. */
#define TAP(COB, XB, src)                                                                                     \
    do {                                                                                               \
        v16 in[XB];                                                                                    \
        for (int u = 0; u < XB; u++) in[u] = load((src) + u * VL);                                     \
        for (int j = 0; j < COB; j++) {                                                                \
            v16 wj = splat(w[j]);                                                                      \
            for (int u = 0; u < XB; u++) acc[j][u] += wj * in[u];                                      \
        }                                                                                              \
        w += COB;                                                                                      \
    } while (0)

#define DEFINE_ROW(COB, XB)                                                                            \
    static void row_##COB##_##XB(const sr_conv *g, const float *const *rows, int stride, float *out, \
                                 int wv, int c0) {                                                     \
        const float *block = g->w + (size_t)c0 * g->cin * g->kh * g->kw;                               \
        for (int x = 0; x < wv; x += VL * XB) {                                                        \
            v16 acc[COB][XB];                                                                          \
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
            for (int j = 0; j < COB; j++) {                                                            \
                float *dst = out + (size_t)(c0 + j) * stride + PAD + x;                                \
                for (int u = 0; u < XB; u++)                                                           \
                    store(dst + u * VL, activate(g, c0 + j, acc[j][u]));                               \
            }                                                                                          \
        }                                                                                              \
    }

DEFINE_ROW(14, 2)
DEFINE_ROW(12, 2)
DEFINE_ROW(8, 3)
DEFINE_ROW(7, 4)
DEFINE_ROW(6, 4)
DEFINE_ROW(5, 4)
DEFINE_ROW(4, 4)
DEFINE_ROW(3, 4)
DEFINE_ROW(2, 4)
DEFINE_ROW(1, 4)

typedef void (*row_fn)(const sr_conv *, const float *const *, int, float *, int, int);

/* The largest channel block that divides cout (so no remainder code is needed). */
static row_fn pick_row(int cout, int *block) {
    /* 16 x 1 would load one input vector per 16 FMAs (plus 16 broadcasts); 8 x 3 loads 3 per 24 */
    static const int blocks[] = {14, 12, 8, 7, 6, 5, 4, 3, 2, 1};
    static const row_fn fns[] = {row_14_2, row_12_2, row_8_3, row_7_4, row_6_4,
                                 row_5_4,  row_4_4,  row_3_4, row_2_4, row_1_4};
    for (int i = 0;; i++)
        if (cout % blocks[i] == 0) {
            *block = blocks[i];
            return fns[i];
        }
}

/* The block size weights of a layer with cout outputs are packed by (see DEFINE_ROW). */
int sr_block(int cout) {
    int block;
    pick_row(cout, &block);
    return block;
}

typedef struct {
    int nlayers, H, W, wv, stride;
    const sr_conv *layers;
    const float *in;
    float *zero;                     /* a row of zeros (every channel) for rows outside the image */
    float *ring[MAX_LAYERS + 1];     /* ring[0]: input rows; ring[l + 1]: rows of layer l */
    int cap[MAX_LAYERS + 1], next[MAX_LAYERS + 1], channels[MAX_LAYERS + 1];
} stream;

static const float *row_at(stream *t, int i, int y) { /* row y of ring i */
    if (y < 0 || y >= t->H) return t->zero;
    return t->ring[i] + (size_t)(y % t->cap[i]) * t->channels[i] * t->stride;
}

/* Compute ring i (0: copy of the input) up to row `need`, asking ring i - 1 first. */
static void advance(stream *t, int i, int need) {
    if (need > t->H - 1) need = t->H - 1;
    while (t->next[i] <= need) {
        const int y = t->next[i]++;
        float *dst = t->ring[i] + (size_t)(y % t->cap[i]) * t->channels[i] * t->stride;
        if (i == 0) {
            memcpy(dst + PAD, t->in + (size_t)y * t->W, t->W * sizeof(float));
            continue; /* the padding columns stay zero from calloc */
        }
        const sr_conv *c = &t->layers[i - 1];
        advance(t, i - 1, y + c->top + c->kh - 1);
        const float *rows[MAX_KH];
        for (int ky = 0; ky < c->kh; ky++) rows[ky] = row_at(t, i - 1, y + c->top + ky);
        int block;
        row_fn fn = pick_row(c->cout, &block);
        for (int c0 = 0; c0 < c->cout; c0 += block) fn(c, rows, t->stride, dst, t->wv, c0);
        /* the columns past the image (computed from padding, up to a block's width) are the next
         * layer's zero padding */
        for (int ch = 0; ch < c->cout; ch++)
            memset(dst + (size_t)ch * t->stride + PAD + t->W, 0, (t->stride - PAD - t->W) * sizeof(float));
    }
}

/* Rows [y0, y1) of the H x W input through the chain into out ((H*s) x (W*s)). The last layer is
 * a 1x1 convolution whose channels are (phase, offset) taps of the output: a strided
 * ConvTranspose as a GEMM-shaped convolution without zero taps, whose rows are added into s*s
 * phase rows of accumulators as soon as they are computed (`taps`), then interleaved into `out`.
 * Bands of rows can run on separate threads; each recomputes the few rows its windows need from
 * outside the band. Returns 0, or -1 when memory runs out or the chain is out of bounds. */
int sr_chain_rows(int nlayers, const sr_conv *layers, int s, const sr_taps *taps, const float *in, int H, int W,
                  float *out, int y0, int y1) {
    if (nlayers < 1 || nlayers > MAX_LAYERS || H < 1 || W < 1 || s < 1) return -1;
    stream t = {0};
    t.nlayers = nlayers;
    t.layers = layers;
    t.in = in;
    t.H = H;
    t.W = W;
    t.wv = (W + VL - 1) / VL * VL;
    t.stride = PAD + t.wv + VL * (XB_MAX - 1) + PAD; /* a block of XB vectors may run past wv */
    const int ntaps = layers[nlayers - 1].cout, phases = s * s;
    int widest = 1, ok = layers[nlayers - 1].kh == 1 && layers[nlayers - 1].kw == 1, dy0 = 0, dy1 = 0;
    t.channels[0] = 1;
    for (int l = 0; l < nlayers; l++) {
        const sr_conv *c = &layers[l];
        ok &= c->kh <= MAX_KH && c->left >= -PAD && c->left + c->kw - 1 <= PAD;
        t.channels[l + 1] = c->cout;
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
        t.ring[i] = calloc((size_t)t.cap[i] * t.channels[i] * t.stride, sizeof(float));
        ok &= t.ring[i] != NULL;
    }
    int started = y0, emitted = y0; /* output rows [emitted, started) are accumulating */
    for (int yz = zfirst; ok && yz <= zlast + 1; yz++) {
        /* emit every output row no later tap row reaches, freeing its accumulators */
        const int emit_to = yz > zlast || yz - dy1 > started ? started : yz - dy1;
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
    return ok ? 0 : -1;
}
