// srexport_upscale: upscale a picture (PNG out) or a video through an srexport TensorRT engine.
//
//   srexport_upscale --engine espcn_x2.fp16.engine [--scale 2] [--tile auto|N] [--overlap N]
//                    [--codec libx264] [--crf 18] [--preset veryfast] [--force] INPUT OUTPUT
//
// The engine's sidecar is checked first (TensorRT version, GPU, scale, I/O contract); a frame larger
// than the engine's profile is tiled with srexport's overlap rule. Exit codes as srexport's: 0 done,
// 2 a user's mistake or an engine this program must not run, reported as one "error: ..." line.
#include <iostream>
#include <string>

#include <srexport/engine.hpp>
#include <srexport/media.hpp>
#include <srexport/tiling.hpp>

#include "options.hpp"

namespace {

bool is_picture(const std::string& path) {
    const size_t dot = path.find_last_of('.');
    std::string s = dot == std::string::npos ? "" : path.substr(dot);
    for (auto& c : s) c = char(std::tolower(c));
    return s == ".png";
}

int run(int argc, char** argv) {
    const Args args(argc, argv, {"--engine", "--scale", "--tile", "--overlap", "--codec", "--crf", "--preset", "--device"},
                    {"--force", "--help"});
    if (args.flags.count("--help") || args.positional.size() != 2 || !args.has("--engine")) {
        std::cerr << "usage: srexport_upscale --engine X.engine [--scale S] [--tile auto|N] [--overlap N] [--codec C] "
                     "[--crf N] [--preset P] [--device N] [--force] INPUT OUTPUT(.png|.mp4|.mkv|...)\n";
        return args.flags.count("--help") ? 0 : 2;
    }
    srexport::Engine engine(args.get("--engine"), args.integer("--scale", 0), args.integer("--device", 0));
    const int scale = engine.scale();
    const std::string tile = args.get("--tile", "auto");
    const int fixed_tile = tile == "auto" ? 0 : args.integer("--tile", 0);
    if (tile != "auto" && fixed_tile < 0) throw srexport::Error("--tile: must be auto, 0 or a positive integer");
    const bool overlap_given = args.has("--overlap");
    const int overlap = args.integer("--overlap", engine.sidecar().tile_overlap.value_or(-1));
    if (overlap_given && overlap < 0) throw srexport::Error("--overlap: must be >= 0");

    const srexport::YUpscaler upscale = [&](const std::vector<float>& y, int h, int w) {
        int th = fixed_tile, tw = fixed_tile;
        if (fixed_tile == 0) {
            if (auto t = srexport::auto_tile(h, w, engine.max_h(), engine.max_w(), std::max(overlap, 0))) std::tie(th, tw) = *t;
        }
        if (th > 0 && (th < h || tw < w) && overlap < 0)
            throw srexport::Error(args.get("--engine") + ": a " + std::to_string(w) + "x" + std::to_string(h) +
                                  " frame needs tiles and the sidecar gives no tile_overlap: pass --overlap N (the "
                                  "network's receptive radius; `srexport info X.engine` shows it)");
        return srexport::upscale_tiled([&](const std::vector<float>& x, int ch, int cw) { return engine.run(x, ch, cw); },
                                       y, h, w, scale, th, tw, overlap);
    };
    const std::string in = args.positional[0], out = args.positional[1];
    const bool force = args.flags.count("--force") > 0;
    if (is_picture(out)) {
        srexport::write_png(srexport::upscale_picture(srexport::read_picture(in), upscale, scale), out, force);
        std::cerr << out << ": written\n";
    } else {
        srexport::VideoOptions vo{args.get("--codec", "libx264"), args.integer("--crf", 18), args.get("--preset", "veryfast")};
        const int64_t frames = srexport::upscale_video(in, out, upscale, scale, vo, force, [](int64_t n) {
            if (n % 25 == 0) std::cerr << "\r" << n << " frames" << std::flush;
        });
        std::cerr << "\r" << out << ": " << frames << " frames written\n";
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
    }
}
