// Colour at both ends of upscaling, computed as srexport does it (srexport/colour.py, data.py), in
// the same float64 operations in the same order, so 8-bit results are equal to the bit:
//   in:  8-bit RGB -> MATLAB rgb2ycbcr (BT.601 limited range) -> Y / 255 (float32) for the network;
//   out: Cb, Cr upscaled by MATLAB bicubic (Keys a = -0.5, half-sample symmetric borders, column
//        pass then row pass), back to RGB with the exact inverse, rounded half up to 8 bits.
// Video frames (yuv420p): Y / 255 in, 255 * Y rounded out, U and V upscaled by the same bicubic.
// Build with -ffp-contract=off: a fused multiply-add would change the last bit of some sums.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace srexport {

// MATLAB rgb2ycbcr: YCbCr = OFFSET + MATRIX @ RGB / 255, applied as (MATRIX / 255) @ RGB + OFFSET.
inline constexpr double kYCbCr[3][3] = {{65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0},
                                        {-37.797 / 255.0, -74.203 / 255.0, 112.0 / 255.0},
                                        {112.0 / 255.0, -93.786 / 255.0, -18.214 / 255.0}};
inline constexpr double kYCbCrOffset[3] = {16.0, 128.0, 128.0};
// numpy.linalg.inv(MATRIX / 255) and -inv @ OFFSET exactly as srexport computes them (bit for bit;
// tests/test_cpp_sample.py compares): a C++ inversion could differ in the last bit and move a
// rounding at .5.
inline constexpr double kRGB[3][3] = {{0x1.2a150a8542a15p+0, 0x1.435471aeea8e6p-22, 0x1.989537d4a4be2p+0},
                                      {0x1.2a150a8542a15p+0, -0x1.912a330362bc7p-2, -0x1.a03d61470b151p-1},
                                      {0x1.2a150a8542a16p+0, 0x1.0234addba8cccp+1, 0x1.99efa26d0ad0bp-19}};

inline std::array<double, 3> rgb_bias() {
    std::array<double, 3> b{};
    for (int k = 0; k < 3; ++k)  // -RGB @ OFFSET, summed left to right as numpy's 3-element matmul
        b[k] = -(kRGB[k][0] * kYCbCrOffset[0] + kRGB[k][1] * kYCbCrOffset[1] + kRGB[k][2] * kYCbCrOffset[2]);
    return b;
}

// Keys' cubic convolution kernel, a = -0.5 (data.keys_cubic).
inline double keys_cubic(double x) {
    const double ax = std::fabs(x), ax2 = ax * ax, ax3 = ax * ax * ax;
    if (ax <= 1) return 1.5 * ax3 - 2.5 * ax2 + 1;
    if (ax < 2) return -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2;
    return 0.0;
}

// (scale, 5) tap weights for offsets -2..2, one row per output phase, each row normalised
// (archs/bicubic.phase_weights).
inline std::vector<std::array<double, 5>> phase_weights(int scale) {
    std::vector<std::array<double, 5>> w(scale);
    for (int p = 0; p < scale; ++p) {
        const double offset = (p + 0.5) / scale - 0.5;
        double sum = 0;
        for (int t = 0; t < 5; ++t) sum += (w[p][t] = keys_cubic(offset - (t - 2)));
        for (int t = 0; t < 5; ++t) w[p][t] /= sum;
    }
    return w;
}

// MATLAB's half-sample symmetric border: ... x1 x0 | x0 x1 ... x(n-1) | x(n-1) x(n-2) ...
inline int mirror(int i, int n) {
    i %= 2 * n;
    if (i < 0) i += 2 * n;  // Python's % is never negative
    return i < n ? i : 2 * n - 1 - i;
}

// One output row i of MATLAB bicubic x scale of `plane` (h x w, row stride w) into out (scale*w).
template <typename T>
void bicubic_row(const T* plane, int h, int w, int i, const std::vector<std::array<double, 5>>& taps,
                 std::vector<double>& line, double* out) {
    const int s = static_cast<int>(taps.size()), r = i / s, p = i % s;
    const int rows[5] = {mirror(r - 2, h), mirror(r - 1, h), r, mirror(r + 1, h), mirror(r + 2, h)};
    const auto& a = taps[p];
    line.resize(w + 4);
    for (int x = 0; x < w; ++x)
        line[x + 2] = a[0] * double(plane[rows[0] * w + x]) + a[1] * double(plane[rows[1] * w + x]) +
                      a[2] * double(plane[rows[2] * w + x]) + a[3] * double(plane[rows[3] * w + x]) +
                      a[4] * double(plane[rows[4] * w + x]);
    for (int x : {-2, -1, w, w + 1}) line[x + 2] = line[mirror(x, w) + 2];
    for (int q = 0; q < s; ++q) {
        const auto& b = taps[q];
        for (int x = 0; x < w; ++x)
            out[s * x + q] = b[0] * line[x] + b[1] * line[x + 1] + b[2] * line[x + 2] + b[3] * line[x + 3] + b[4] * line[x + 4];
    }
}

// MATLAB imresize(plane, scale, 'bicubic') of an (h x w) plane: (scale*h x scale*w), unrounded.
template <typename T>
std::vector<double> bicubic_upscale(const T* plane, int h, int w, int scale) {
    const auto taps = phase_weights(scale);
    std::vector<double> out(size_t(scale) * h * scale * w), line;
    for (int i = 0; i < scale * h; ++i) bicubic_row(plane, h, w, i, taps, line, &out[size_t(i) * scale * w]);
    return out;
}

// Round half up and saturate to 8 bits.
inline uint8_t round8(double v) { return uint8_t(std::min(std::max(std::floor(v + 0.5), 0.0), 255.0)); }

struct YCbCrPlanes {
    int height = 0, width = 0;
    std::vector<float> y;         // Y / 255: the network's input, (h x w)
    std::vector<double> cb, cr;   // in [0, 255], unrounded
};

// 8-bit interleaved RGB (h x w x 3) -> Y / 255 (float32) and Cb, Cr (colour.rgb8_to_ycbcr).
inline YCbCrPlanes rgb8_to_ycbcr(const uint8_t* rgb, int h, int w) {
    YCbCrPlanes p{h, w, std::vector<float>(size_t(h) * w), std::vector<double>(size_t(h) * w), std::vector<double>(size_t(h) * w)};
    const auto& m = kYCbCr;
    const auto& o = kYCbCrOffset;
    for (size_t i = 0; i < size_t(h) * w; ++i) {
        const double r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
        p.y[i] = float((m[0][0] * r + m[0][1] * g + m[0][2] * b + o[0]) / 255.0);
        p.cb[i] = m[1][0] * r + m[1][1] * g + m[1][2] * b + o[1];
        p.cr[i] = m[2][0] * r + m[2][1] * g + m[2][2] * b + o[2];
    }
    return p;
}

// Network output Y (scale*h x scale*w, in [0, 1]) and the input's Cb, Cr (h x w) -> 8-bit RGB
// (scale*h x scale*w x 3), Cb and Cr upscaled by MATLAB bicubic (colour.ycbcr_to_rgb8).
inline std::vector<uint8_t> ycbcr_to_rgb8(const float* y_sr, const YCbCrPlanes& in, int scale) {
    const int h = in.height, w = in.width, ow = scale * w;
    const auto taps = phase_weights(scale);
    const auto bias = rgb_bias();
    std::vector<uint8_t> out(size_t(scale) * h * ow * 3);
    std::vector<double> line, cb(ow), cr(ow);
    for (int i = 0; i < scale * h; ++i) {
        bicubic_row(in.cb.data(), h, w, i, taps, line, cb.data());
        bicubic_row(in.cr.data(), h, w, i, taps, line, cr.data());
        for (int k = 0; k < 3; ++k) {
            const double my = kRGB[k][0], mb = kRGB[k][1], mr = kRGB[k][2], add = bias[k] + 0.5;
            for (int j = 0; j < ow; ++j) {
                const double v = std::floor(my * (255.0 * double(y_sr[size_t(i) * ow + j])) + mb * cb[j] + mr * cr[j] + add);
                out[(size_t(i) * ow + j) * 3 + k] = uint8_t(std::min(std::max(v, 0.0), 255.0));
            }
        }
    }
    return out;
}

// A video frame's 8-bit Y plane (h x w) -> the network's input Y / 255, as float32 arithmetic
// (video.py: y.astype(float32) * float32(1 / 255)).
inline std::vector<float> luma8_to_input(const uint8_t* y, int h, int w, int stride) {
    std::vector<float> out(size_t(h) * w);
    const float k = float(1.0 / 255.0);
    for (int i = 0; i < h; ++i)
        for (int j = 0; j < w; ++j) out[size_t(i) * w + j] = float(y[size_t(i) * stride + j]) * k;
    return out;
}

struct Yuv420Frame {
    int width = 0, height = 0;  // even
    std::vector<uint8_t> y, u, v;  // (h x w), (h/2 x w/2) twice
};

// After the network: Y (sh x sw, >= oh x ow) rounded to 8 bits, the input's U and V (ch x cw)
// upscaled by MATLAB bicubic and rounded, cropped to (ow x oh), both even (colour.yuv420_frame).
inline Yuv420Frame yuv420_frame(const float* y_sr, int sw, const uint8_t* u, const uint8_t* v, int ch, int cw,
                                int scale, int ow, int oh) {
    Yuv420Frame f{ow, oh, std::vector<uint8_t>(size_t(ow) * oh), std::vector<uint8_t>(size_t(ow / 2) * (oh / 2)),
                  std::vector<uint8_t>(size_t(ow / 2) * (oh / 2))};
    for (int i = 0; i < oh; ++i)
        for (int j = 0; j < ow; ++j) f.y[size_t(i) * ow + j] = round8(255.0 * double(y_sr[size_t(i) * sw + j]));
    const auto taps = phase_weights(scale);
    std::vector<double> line, row(size_t(scale) * cw);
    for (int c = 0; c < 2; ++c) {
        const uint8_t* plane = c == 0 ? u : v;
        auto& dst = c == 0 ? f.u : f.v;
        for (int r = 0; r < oh / 2; ++r) {
            bicubic_row(plane, ch, cw, r, taps, line, row.data());
            for (int j = 0; j < ow / 2; ++j) dst[size_t(r) * (ow / 2) + j] = round8(row[j]);
        }
    }
    return f;
}

}  // namespace srexport
