// The parts of the sample that need no TensorRT, as a program the Python tests drive
// (tests/test_cpp_sample.py) to compare with srexport's own results on the same inputs:
//   parts_check sidecar ENGINE --trt MAJOR.MINOR --cc X.Y [--scale S]   "ok" or the refusal (exit 2)
//   parts_check constants                                               matrices and bicubic taps, %a
//   parts_check colour RGB.u8 H W SCALE YSR.f32 OUTDIR                  y.f32 cb.f64 cr.f64 rgb.u8
//   parts_check yuv Y.u8 U.u8 V.u8 H W SCALE YSR.f32 OUT.u8             luma input y.f32 + the yuv420p frame
//   parts_check tiles H W TILE_H TILE_W OVERLAP                         one tile per line
//   parts_check auto-tile H W MAX_H MAX_W OVERLAP                       "TH TW", "none" or the refusal
//   parts_check upscale IN OUT --scale S --net nearest|box [--tile N --overlap N] [--codec C] [--force]
// The `upscale` networks stand in for an engine: "nearest" repeats each pixel (exact in any language),
// "box" is a 3x3 mean then "nearest" (receptive radius 1, so tiles must overlap to agree).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include <srexport/colour.hpp>
#include <srexport/sidecar.hpp>
#include <srexport/tiling.hpp>
#ifdef SREXPORT_WITH_FFMPEG
#include <srexport/media.hpp>
#endif

#include "../src/options.hpp"

namespace {

template <typename T>
std::vector<T> read_raw(const std::string& path, size_t n) {
    std::ifstream in(path, std::ios::binary);
    std::vector<T> v(n);
    if (!in.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * sizeof(T)))) throw srexport::Error(path + ": too short");
    return v;
}

template <typename T>
void write_raw(const std::string& path, const std::vector<T>& v) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
    if (!out) throw srexport::Error(path + ": cannot write");
}

int number(const std::string& s) { return std::stoi(s); }

std::vector<float> nearest(const std::vector<float>& x, int h, int w, int s) {
    std::vector<float> y(size_t(s) * h * s * w);
    for (int i = 0; i < s * h; ++i)
        for (int j = 0; j < s * w; ++j) y[size_t(i) * s * w + j] = x[size_t(i / s) * w + j / s];
    return y;
}

std::vector<float> box(const std::vector<float>& x, int h, int w, int s) {
    std::vector<float> m(x.size());
    for (int i = 0; i < h; ++i)
        for (int j = 0; j < w; ++j) {
            float sum = 0;  // zero padding, as a convolution's
            for (int di = -1; di <= 1; ++di)
                for (int dj = -1; dj <= 1; ++dj)
                    if (i + di >= 0 && i + di < h && j + dj >= 0 && j + dj < w) sum += x[size_t(i + di) * w + j + dj];
            m[size_t(i) * w + j] = sum / 9.0f;
        }
    return nearest(m, h, w, s);
}

int run(int argc, char** argv) {
    if (argc < 2) throw srexport::Error("usage: parts_check sidecar|constants|colour|yuv|tiles|auto-tile|upscale ...");
    const std::string cmd = argv[1];
    const Args args(argc, argv, {"--trt", "--cc", "--scale", "--net", "--tile", "--overlap", "--codec"}, {"--force"}, 2);
    const auto& p = args.positional;
    if (cmd == "sidecar") {
        const std::string trt = args.get("--trt");
        const size_t dot = trt.find('.');
        if (p.size() != 1 || dot == std::string::npos || !args.has("--cc")) throw srexport::Error("usage: parts_check sidecar ENGINE --trt M.m --cc X.Y [--scale S]");
        const srexport::RuntimeFacts rt{number(trt.substr(0, dot)), number(trt.substr(dot + 1)), args.get("--cc"), args.integer("--scale", 0)};
        const std::string problem = srexport::check_sidecar(srexport::read_sidecar(p[0]), rt, p[0]);
        if (!problem.empty()) throw srexport::Error(problem);
        std::cout << "ok\n";
    } else if (cmd == "constants") {
        for (auto& row : srexport::kRGB) std::printf("rgb %a %a %a\n", row[0], row[1], row[2]);
        const auto b = srexport::rgb_bias();
        std::printf("bias %a %a %a\n", b[0], b[1], b[2]);
        for (int s = 2; s <= 4; ++s)
            for (const auto& t : srexport::phase_weights(s)) std::printf("taps %d %a %a %a %a %a\n", s, t[0], t[1], t[2], t[3], t[4]);
    } else if (cmd == "colour" && p.size() == 6) {
        const int h = number(p[1]), w = number(p[2]), s = number(p[3]);
        const auto rgb = read_raw<uint8_t>(p[0], size_t(h) * w * 3);
        const auto planes = srexport::rgb8_to_ycbcr(rgb.data(), h, w);
        const auto ysr = read_raw<float>(p[4], size_t(s) * h * s * w);
        write_raw(p[5] + "/y.f32", planes.y);
        write_raw(p[5] + "/cb.f64", planes.cb);
        write_raw(p[5] + "/cr.f64", planes.cr);
        write_raw(p[5] + "/rgb.u8", srexport::ycbcr_to_rgb8(ysr.data(), planes, s));
    } else if (cmd == "yuv" && p.size() == 8) {
        const int h = number(p[3]), w = number(p[4]), s = number(p[5]), ch = (h + 1) / 2, cw = (w + 1) / 2;
        const int ow = s * w - (s * w) % 2, oh = s * h - (s * h) % 2;
        const auto y = read_raw<uint8_t>(p[0], size_t(h) * w);
        const auto u = read_raw<uint8_t>(p[1], size_t(ch) * cw), v = read_raw<uint8_t>(p[2], size_t(ch) * cw);
        const auto ysr = read_raw<float>(p[6], size_t(s) * h * s * w);
        write_raw(p[7] + ".y.f32", srexport::luma8_to_input(y.data(), h, w, w));
        const auto f = srexport::yuv420_frame(ysr.data(), s * w, u.data(), v.data(), ch, cw, s, ow, oh);
        std::vector<uint8_t> all(f.y);
        all.insert(all.end(), f.u.begin(), f.u.end());
        all.insert(all.end(), f.v.begin(), f.v.end());
        write_raw(p[7], all);
    } else if (cmd == "tiles" && p.size() == 5) {
        for (const auto& t : srexport::tile_plan(number(p[0]), number(p[1]), number(p[2]), number(p[3]), number(p[4])))
            std::cout << t.y0 << " " << t.y1 << " " << t.x0 << " " << t.x1 << " " << t.cy0 << " " << t.cy1 << " " << t.cx0 << " " << t.cx1 << "\n";
    } else if (cmd == "auto-tile" && p.size() == 5) {
        const auto t = srexport::auto_tile(number(p[0]), number(p[1]), number(p[2]), number(p[3]), number(p[4]));
        if (t) std::cout << t->first << " " << t->second << "\n"; else std::cout << "none\n";
    } else if (cmd == "upscale" && p.size() == 2) {
#ifdef SREXPORT_WITH_FFMPEG
        const int s = args.integer("--scale", 0), tile = args.integer("--tile", 0), overlap = args.integer("--overlap", 0);
        const std::string net = args.get("--net", "nearest");
        if (s < 1 || (net != "nearest" && net != "box")) throw srexport::Error("usage: parts_check upscale IN OUT --scale S --net nearest|box");
        const srexport::YUpscaler up = [&](const std::vector<float>& y, int h, int w) {
            const srexport::PlaneRunner r = [&](const std::vector<float>& x, int ch, int cw) {
                return net == "box" ? box(x, ch, cw, s) : nearest(x, ch, cw, s);
            };
            return srexport::upscale_tiled(r, y, h, w, s, tile, tile, overlap);
        };
        const bool force = args.flags.count("--force") > 0;
        const std::string out = p[1];
        if (out.size() > 4 && out.substr(out.size() - 4) == ".png")
            srexport::write_png(srexport::upscale_picture(srexport::read_picture(p[0]), up, s), out, force);
        else
            std::cout << srexport::upscale_video(p[0], out, up, s, {args.get("--codec", "libx264"), 18, "veryfast"}, force) << " frames\n";
#else
        throw srexport::Error("built without FFmpeg");
#endif
    } else {
        throw srexport::Error(cmd + ": unknown command or wrong number of arguments");
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const srexport::Error& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 2;
    }
}
