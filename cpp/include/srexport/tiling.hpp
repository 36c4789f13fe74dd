// Tiles whose result equals the untiled one, by srexport's rule (srexport/tiling.py): the frame is
// split into ceil(n / tile) nearly equal parts per axis; each tile is run with `overlap` LR pixels
// of context on every side (clipped at the frame border, where the network sees the frame's own
// border) and only its centre is kept. `overlap` must be at least the network's receptive radius
// (`srexport info X.engine --json` gives it as io_contract.tile_overlap). No blending.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sidecar.hpp"

namespace srexport {

// [begin, end) parts of [0, n): tiling._bounds (Python's round() is half to even, as nearbyint).
inline std::vector<std::pair<int, int>> tile_bounds(int n, int tile) {
    const int parts = std::max(1, int(std::ceil(double(n) / tile)));
    std::vector<int> edges(parts + 1);
    for (int i = 0; i <= parts; ++i) edges[i] = int(std::nearbyint(double(int64_t(i) * n) / parts));
    std::vector<std::pair<int, int>> out;
    for (int i = 0; i < parts; ++i)
        if (edges[i + 1] > edges[i]) out.emplace_back(edges[i], edges[i + 1]);
    return out;
}

// The tile (height, width) for a frame larger than an engine's largest input (max_h x max_w):
// the grid whose crops (tile + overlap each side, clipped) fit, with the least work (tiling.auto_tile
// with the profile as the only limit). nullopt when the whole frame fits.
inline std::optional<std::pair<int, int>> auto_tile(int h, int w, int max_h, int max_w, int overlap) {
    auto fits = [&](int ch, int cw) { return ch <= max_h && cw <= max_w; };
    if (fits(h, w)) return std::nullopt;
    std::optional<std::pair<int64_t, std::pair<int, int>>> best;
    for (int ny = 1; ny <= std::min(h, 256); ++ny) {
        const int th = int(std::ceil(double(h) / ny));
        const int ch = ny == 1 ? h : std::min(h, th + 2 * overlap);
        for (int nx = 1; nx <= std::min(w, 256); ++nx) {
            const int tw = int(std::ceil(double(w) / nx));
            const int cw = nx == 1 ? w : std::min(w, tw + 2 * overlap);
            if (fits(ch, cw)) {
                const int64_t work = int64_t(ny) * nx * ch * cw;
                if (!best || work < best->first) best = {work, {th, tw}};
                break;
            }
        }
    }
    if (!best || std::min(best->second.first, best->second.second) < 4)
        throw Error("cannot tile a " + std::to_string(w) + "x" + std::to_string(h) + " input for engine inputs up to " +
                    std::to_string(max_w) + "x" + std::to_string(max_h) + " with an overlap of " + std::to_string(overlap));
    return best->second;
}

struct Tile {
    int y0, y1, x0, x1;      // the part of the output kept, in LR pixels
    int cy0, cy1, cx0, cx1;  // the crop that goes through the network
};

inline std::vector<Tile> tile_plan(int h, int w, int tile_h, int tile_w, int overlap) {
    std::vector<Tile> tiles;
    for (auto [y0, y1] : tile_bounds(h, tile_h))
        for (auto [x0, x1] : tile_bounds(w, tile_w))
            tiles.push_back({y0, y1, x0, x1, std::max(0, y0 - overlap), std::min(h, y1 + overlap),
                             std::max(0, x0 - overlap), std::min(w, x1 + overlap)});
    return tiles;
}

// A network on one plane: (h x w) float in, (scale*h x scale*w) float out.
using PlaneRunner = std::function<std::vector<float>(const std::vector<float>&, int h, int w)>;

// `run` over the plane tile by tile (tile_h, tile_w in LR pixels; 0 for no tiling).
inline std::vector<float> upscale_tiled(const PlaneRunner& run, const std::vector<float>& lr, int h, int w, int scale,
                                        int tile_h, int tile_w, int overlap) {
    if (tile_h <= 0 || tile_w <= 0 || (tile_h >= h && tile_w >= w)) return run(lr, h, w);
    const int ow = scale * w;
    std::vector<float> out(size_t(scale) * h * ow), crop;
    for (const Tile& t : tile_plan(h, w, tile_h, tile_w, overlap)) {
        const int ch = t.cy1 - t.cy0, cw = t.cx1 - t.cx0;
        crop.resize(size_t(ch) * cw);
        for (int i = 0; i < ch; ++i)
            std::copy_n(&lr[size_t(t.cy0 + i) * w + t.cx0], cw, &crop[size_t(i) * cw]);
        const std::vector<float> y = run(crop, ch, cw);
        if (y.size() != size_t(scale) * ch * scale * cw) throw Error("the network returned a wrongly sized tile");
        for (int i = scale * t.y0; i < scale * t.y1; ++i)
            std::copy_n(&y[size_t(i - scale * t.cy0) * scale * cw + scale * (t.x0 - t.cx0)], scale * (t.x1 - t.x0),
                        &out[size_t(i) * ow + scale * t.x0]);
    }
    return out;
}

}  // namespace srexport
