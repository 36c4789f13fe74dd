// The JSON sidecar X.engine.json that srexport writes beside every engine X.engine, and the checks
// an application makes before it runs the engine. No TensorRT or CUDA needed here.
#pragma once

#include <array>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace srexport {

// The only colour space srexport's networks use (checkpoint.COLOUR_SPACE): Y of MATLAB rgb2ycbcr / 255.
inline constexpr const char* kColourSpace = "Y of YCbCr BT.601 limited range (MATLAB rgb2ycbcr), Y/255";
inline constexpr const char* kInputName = "lr";
inline constexpr const char* kOutputName = "sr";

// A user's mistake or an engine this program must not run: one line, printed as "error: <what>".
struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct TensorSpec {
    std::string name;
    std::string dtype;  // "float32" or "float16"
};

struct Profile {
    std::string input;
    std::array<int64_t, 4> min{}, opt{}, max{};  // (N, 1, H, W)
};

struct EngineSidecar {
    int schema_version = 0;
    std::string flavour;  // "tensorrt" (TensorRT 10.x / 11.x) or "tensorrt-rtx"; missing means "tensorrt"
    std::vector<TensorSpec> inputs, outputs;
    std::string precision, layout, colour_space, network;
    int scale = 0;
    std::array<double, 2> value_range{};
    Profile profile;
    std::string tensorrt_version;
    std::optional<std::string> gpu_name, gpu_compute_capability;  // gpu may be null (tensorrt-rtx)
    std::vector<std::string> compute_capabilities;                 // tensorrt-rtx: every GPU it runs on
    std::optional<int64_t> engine_bytes;
    std::optional<int> tile_overlap;  // LR pixels, where the sidecar carries the I/O contract
};

namespace detail {

inline const nlohmann::json& field(const nlohmann::json& j, const char* key, const std::string& where) {
    auto it = j.find(key);
    if (it == j.end()) throw Error(where + ": sidecar has no \"" + key + "\"");
    return *it;
}

inline std::array<int64_t, 4> shape4(const nlohmann::json& j, const std::string& where) {
    if (!j.is_array() || j.size() != 4) throw Error(where + ": profile shapes must be [N, 1, H, W]");
    std::array<int64_t, 4> s{};
    for (size_t i = 0; i < 4; ++i) {
        if (!j[i].is_number_integer() || j[i].get<int64_t>() < 1)
            throw Error(where + ": profile shapes must be positive integers");
        s[i] = j[i].get<int64_t>();
    }
    return s;
}

inline std::vector<TensorSpec> tensors(const nlohmann::json& j, const std::string& where) {
    if (!j.is_array()) throw Error(where + ": inputs/outputs must be lists");
    std::vector<TensorSpec> out;
    for (const auto& t : j) out.push_back({t.at("name").get<std::string>(), t.at("dtype").get<std::string>()});
    return out;
}

// "10.16.0.72" -> {10, 16}; {-1, -1} where unreadable.
inline std::pair<int, int> major_minor(const std::string& version) {
    int major = -1, minor = -1;
    char dot = 0;
    std::istringstream in(version);
    if (!(in >> major >> dot >> minor) || dot != '.') return {-1, -1};
    return {major, minor};
}

}  // namespace detail

// Parse a sidecar's text; `where` names it in messages (the file's path).
inline EngineSidecar parse_sidecar(const std::string& text, const std::string& where) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": not valid JSON (" + std::string(e.what()) + ")");
    }
    if (!j.is_object()) throw Error(where + ": sidecar is not a JSON object");
    try {
        using detail::field;
        EngineSidecar s;
        s.schema_version = field(j, "schema_version", where).get<int>();
        s.flavour = j.contains("flavour") && !j["flavour"].is_null() ? j["flavour"].get<std::string>() : "tensorrt";
        s.inputs = detail::tensors(field(j, "inputs", where), where);
        s.outputs = detail::tensors(field(j, "outputs", where), where);
        s.precision = field(j, "precision", where).get<std::string>();
        s.layout = field(j, "layout", where).get<std::string>();
        s.scale = field(j, "scale", where).get<int>();
        s.colour_space = field(j, "colour_space", where).get<std::string>();
        const auto& range = field(j, "value_range", where);
        if (!range.is_array() || range.size() != 2) throw Error(where + ": value_range must be [lo, hi]");
        s.value_range = {range[0].get<double>(), range[1].get<double>()};
        const auto& profile = field(j, "profile", where);
        s.profile.input = profile.at("input").get<std::string>();
        s.profile.min = detail::shape4(profile.at("min"), where);
        s.profile.opt = detail::shape4(profile.at("opt"), where);
        s.profile.max = detail::shape4(profile.at("max"), where);
        s.tensorrt_version = field(j, "tensorrt_version", where).get<std::string>();
        if (j.contains("gpu") && j["gpu"].is_object()) {
            const auto& gpu = j["gpu"];
            if (gpu.contains("name") && gpu["name"].is_string()) s.gpu_name = gpu["name"].get<std::string>();
            if (gpu.contains("compute_capability") && gpu["compute_capability"].is_string())
                s.gpu_compute_capability = gpu["compute_capability"].get<std::string>();
        }
        if (j.contains("compute_capabilities") && j["compute_capabilities"].is_array())
            for (const auto& cc : j["compute_capabilities"]) s.compute_capabilities.push_back(cc.get<std::string>());
        if (j.contains("engine_bytes") && j["engine_bytes"].is_number_integer())
            s.engine_bytes = j["engine_bytes"].get<int64_t>();
        if (j.contains("record") && j["record"].is_object() && j["record"].contains("network"))
            s.network = j["record"]["network"].get<std::string>();
        if (j.contains("io_contract") && j["io_contract"].is_object() && j["io_contract"].contains("tile_overlap"))
            s.tile_overlap = j["io_contract"]["tile_overlap"].get<int>();
        return s;
    } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": unexpected sidecar field type (" + std::string(e.what()) + ")");
    }
}

inline std::string sidecar_path(const std::string& engine_path) { return engine_path + ".json"; }

inline EngineSidecar read_sidecar(const std::string& engine_path) {
    const std::string path = sidecar_path(engine_path);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": no such file (every srexport engine has a JSON sidecar beside it)");
    std::stringstream text;
    text << in.rdbuf();
    return parse_sidecar(text.str(), path);
}

// What this program runs with: the linked TensorRT's version, the GPU's compute capability, and
// the scale the user asks for (0: any).
struct RuntimeFacts {
    int tensorrt_major = 0, tensorrt_minor = 0;
    std::string compute_capability;  // "8.9"
    int requested_scale = 0;
};

// The first reason not to run the engine, or an empty string. The order is the one a user can act
// on: wrong kind of engine first, then wrong build for this machine, then wrong request.
inline std::string check_sidecar(const EngineSidecar& s, const RuntimeFacts& rt, const std::string& where) {
    const std::string linked = "TensorRT " + std::to_string(rt.tensorrt_major) + "." + std::to_string(rt.tensorrt_minor);
    if (s.flavour == "tensorrt-rtx")
        return where + ": engine was built for TensorRT for RTX (flavour \"tensorrt-rtx\"); this program links " +
               linked + " (nvinfer), which cannot load it: build a \"tensorrt\" engine or use TensorRT for RTX";
    if (s.flavour != "tensorrt") return where + ": unknown engine flavour \"" + s.flavour + "\"";
    if (s.schema_version < 1) return where + ": schema_version " + std::to_string(s.schema_version) + " is not a srexport sidecar";
    if (s.inputs.size() != 1 || s.outputs.size() != 1 || s.inputs[0].name != kInputName || s.outputs[0].name != kOutputName)
        return where + ": expected one input \"lr\" and one output \"sr\"";
    for (const auto* t : {&s.inputs[0], &s.outputs[0]})
        if (t->dtype != "float32" && t->dtype != "float16")
            return where + ": tensor \"" + t->name + "\" has dtype " + t->dtype + " (expected float32 or float16)";
    if (s.layout != "NCHW") return where + ": layout " + s.layout + " (expected NCHW)";
    if (s.colour_space != kColourSpace) return where + ": colour space \"" + s.colour_space + "\" is not the one this program converts to (" + kColourSpace + ")";
    if (s.value_range[0] != 0.0 || s.value_range[1] != 1.0) return where + ": value range is not [0, 1]";
    if (s.scale < 1) return where + ": scale " + std::to_string(s.scale) + " is not a positive integer";
    if (s.profile.input != kInputName || s.profile.min[1] != 1 || s.profile.max[1] != 1)
        return where + ": the profile is not for a one-channel \"lr\" input";
    for (int i = 0; i < 4; ++i)
        if (s.profile.min[i] > s.profile.opt[i] || s.profile.opt[i] > s.profile.max[i])
            return where + ": profile does not satisfy min <= opt <= max";
    auto [major, minor] = detail::major_minor(s.tensorrt_version);
    if (major < 0) return where + ": unreadable tensorrt_version \"" + s.tensorrt_version + "\"";
    if (major != rt.tensorrt_major || minor != rt.tensorrt_minor)
        return where + ": engine was built with TensorRT " + s.tensorrt_version + ", this program links " + linked +
               " (engines run only on the TensorRT version they were built with): rebuild it with srexport build";
    if (!s.gpu_compute_capability)
        return where + ": sidecar names no GPU (gpu.compute_capability); a TensorRT engine runs only on the GPU family it was built for";
    if (*s.gpu_compute_capability != rt.compute_capability)
        return where + ": engine was built for compute capability " + *s.gpu_compute_capability + " (" +
               s.gpu_name.value_or("?") + "), this GPU is " + rt.compute_capability + ": rebuild it on this GPU";
    if (rt.requested_scale != 0 && rt.requested_scale != s.scale)
        return where + ": engine upscales x" + std::to_string(s.scale) + ", not the x" + std::to_string(rt.requested_scale) + " asked for";
    return {};
}

}  // namespace srexport
