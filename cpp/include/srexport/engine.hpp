// An srexport engine run through TensorRT 10.x / 11.x (nvinfer): loaded only after its sidecar is
// checked against the linked TensorRT, this GPU and the requested scale; one input "lr" (N=1, C=1,
// H, W within the profile), set with setInputShape / setTensorAddress / enqueueV3. Only API that is
// in both 10.x and 11.x and not deprecated in either (tests/test_cpp_sample.py compiles this with
// -Werror=deprecated-declarations against the 10.16 and 11.1 headers).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include "sidecar.hpp"

namespace srexport {

class TrtLogger : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::cerr << "TensorRT: " << msg << "\n";
    }
};

// IEEE half <-> float on the host, for engines with FP16 I/O (round to nearest even).
inline uint16_t float_to_half(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u, mant = x & 0x7fffffu;
    const int32_t exp = int32_t((x >> 23) & 0xff) - 127 + 15;
    if (((x >> 23) & 0xff) == 0xff) return uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0));
    if (exp >= 31) return uint16_t(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return uint16_t(sign);
        const uint32_t m = mant | 0x800000u;
        const int shift = 14 - exp;
        uint32_t h = m >> shift;
        const uint32_t rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (h & 1))) ++h;
        return uint16_t(sign | h);
    }
    uint32_t h = (uint32_t(exp) << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;  // may carry into the exponent: correct
    return uint16_t(sign | h);
}

inline float half_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else {  // subnormal: normalise
            int e = -1;
            uint32_t m = mant;
            do { ++e; m <<= 1; } while ((m & 0x400u) == 0);
            x = sign | (uint32_t(127 - 15 - e) << 23) | ((m & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        x = sign | 0x7f800000u | (mant << 13);
    } else {
        x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}

inline void cuda_check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw Error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(err));
}

// What this process runs with, for check_sidecar.
inline RuntimeFacts runtime_facts(int device, int requested_scale) {
    const int32_t version = getInferLibVersion();  // major * 10000 + minor * 100 + patch
    int major = 0, minor = 0;
    cuda_check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "compute capability");
    cuda_check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "compute capability");
    return {version / 10000, (version / 100) % 100, std::to_string(major) + "." + std::to_string(minor), requested_scale};
}

class Engine {
public:
    Engine(const std::string& path, int requested_scale, int device = 0) : path_(path) {
        sidecar_ = read_sidecar(path);
        cuda_check(cudaSetDevice(device), "select the GPU");
        const std::string problem = check_sidecar(sidecar_, runtime_facts(device, requested_scale), path);
        if (!problem.empty()) throw Error(problem);
        std::ifstream in(path, std::ios::binary | std::ios::ate);
        if (!in) throw Error(path + ": no such file");
        std::vector<char> plan(size_t(in.tellg()));
        in.seekg(0);
        in.read(plan.data(), std::streamsize(plan.size()));
        if (sidecar_.engine_bytes && int64_t(plan.size()) != *sidecar_.engine_bytes)
            throw Error(path + ": " + std::to_string(plan.size()) + " bytes, its sidecar describes " +
                        std::to_string(*sidecar_.engine_bytes) + ": not the engine the sidecar was written for");
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) throw Error("TensorRT: cannot create a runtime");
        engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
        if (!engine_) throw Error(path + ": TensorRT cannot deserialize this engine (see its messages above)");
        check_io();
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw Error(path + ": TensorRT cannot create an execution context");
        const nvinfer1::Dims lo = engine_->getProfileShape(kInputName, 0, nvinfer1::OptProfileSelector::kMIN);
        const nvinfer1::Dims hi = engine_->getProfileShape(kInputName, 0, nvinfer1::OptProfileSelector::kMAX);
        min_h_ = int(lo.d[2]), min_w_ = int(lo.d[3]), max_h_ = int(hi.d[2]), max_w_ = int(hi.d[3]);
        if (hi.d[2] != sidecar_.profile.max[2] || hi.d[3] != sidecar_.profile.max[3] || lo.d[2] != sidecar_.profile.min[2] ||
            lo.d[3] != sidecar_.profile.min[3])
            throw Error(path + ": the engine's profile differs from its sidecar's");
        cuda_check(cudaStreamCreate(&stream_), "create a stream");
    }
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;
    ~Engine() {
        cudaFree(d_in_);
        cudaFree(d_out_);
        if (stream_) cudaStreamDestroy(stream_);
    }

    const EngineSidecar& sidecar() const { return sidecar_; }
    int scale() const { return sidecar_.scale; }
    int max_h() const { return max_h_; }
    int max_w() const { return max_w_; }

    // One (h x w) plane of Y / 255 -> (scale*h x scale*w); h, w within the profile.
    std::vector<float> run(const std::vector<float>& lr, int h, int w) {
        if (h < min_h_ || w < min_w_ || h > max_h_ || w > max_w_)
            throw Error(path_ + ": input " + std::to_string(w) + "x" + std::to_string(h) + " is outside the profile " +
                        std::to_string(min_w_) + "x" + std::to_string(min_h_) + ".." + std::to_string(max_w_) + "x" +
                        std::to_string(max_h_) + " (tile it)");
        if (!context_->setInputShape(kInputName, nvinfer1::Dims4{1, 1, h, w}))
            throw Error(path_ + ": TensorRT refused the input shape 1x1x" + std::to_string(h) + "x" + std::to_string(w));
        const nvinfer1::Dims out = context_->getTensorShape(kOutputName);
        const int oh = int(out.d[2]), ow = int(out.d[3]);
        if (out.nbDims != 4 || oh != scale() * h || ow != scale() * w) throw Error(path_ + ": unexpected output shape");
        const size_t n_in = size_t(h) * w, n_out = size_t(oh) * ow;
        reserve(n_in * in_bytes_, n_out * out_bytes_);
        std::vector<uint16_t> half;
        if (in_bytes_ == 2) {
            half.resize(n_in);
            for (size_t i = 0; i < n_in; ++i) half[i] = float_to_half(lr[i]);
            cuda_check(cudaMemcpyAsync(d_in_, half.data(), n_in * 2, cudaMemcpyHostToDevice, stream_), "copy in");
        } else {
            cuda_check(cudaMemcpyAsync(d_in_, lr.data(), n_in * 4, cudaMemcpyHostToDevice, stream_), "copy in");
        }
        if (!context_->setTensorAddress(kInputName, d_in_) || !context_->setTensorAddress(kOutputName, d_out_))
            throw Error(path_ + ": TensorRT refused the tensor addresses");
        if (!context_->enqueueV3(stream_)) throw Error(path_ + ": TensorRT failed to run the engine");
        std::vector<float> result(n_out);
        if (out_bytes_ == 2) {
            half.resize(n_out);
            cuda_check(cudaMemcpyAsync(half.data(), d_out_, n_out * 2, cudaMemcpyDeviceToHost, stream_), "copy out");
            cuda_check(cudaStreamSynchronize(stream_), "run");
            for (size_t i = 0; i < n_out; ++i) result[i] = half_to_float(half[i]);
        } else {
            cuda_check(cudaMemcpyAsync(result.data(), d_out_, n_out * 4, cudaMemcpyDeviceToHost, stream_), "copy out");
            cuda_check(cudaStreamSynchronize(stream_), "run");
        }
        return result;
    }

private:
    void check_io() {
        if (engine_->getNbIOTensors() != 2) throw Error(path_ + ": expected one input and one output tensor");
        auto bytes = [&](const char* name, nvinfer1::TensorIOMode mode, const std::string& dtype) {
            if (engine_->getTensorIOMode(name) != mode) throw Error(path_ + ": engine has no tensor \"" + std::string(name) + "\" of the expected direction");
            const nvinfer1::DataType t = engine_->getTensorDataType(name);
            const bool half = t == nvinfer1::DataType::kHALF;
            if (!half && t != nvinfer1::DataType::kFLOAT) throw Error(path_ + ": tensor \"" + std::string(name) + "\" is neither float32 nor float16");
            if ((half ? "float16" : "float32") != dtype) throw Error(path_ + ": tensor \"" + std::string(name) + "\" dtype differs from the sidecar's " + dtype);
            return half ? size_t(2) : size_t(4);
        };
        in_bytes_ = bytes(kInputName, nvinfer1::TensorIOMode::kINPUT, sidecar_.inputs[0].dtype);
        out_bytes_ = bytes(kOutputName, nvinfer1::TensorIOMode::kOUTPUT, sidecar_.outputs[0].dtype);
    }

    void reserve(size_t in, size_t out) {
        if (in > cap_in_) { cudaFree(d_in_); d_in_ = nullptr; cuda_check(cudaMalloc(&d_in_, in), "allocate"); cap_in_ = in; }
        if (out > cap_out_) { cudaFree(d_out_); d_out_ = nullptr; cuda_check(cudaMalloc(&d_out_, out), "allocate"); cap_out_ = out; }
    }

    std::string path_;
    EngineSidecar sidecar_;
    TrtLogger logger_;  // declared first: outlives runtime, engine and context
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    cudaStream_t stream_ = nullptr;
    void* d_in_ = nullptr;
    void* d_out_ = nullptr;
    size_t cap_in_ = 0, cap_out_ = 0, in_bytes_ = 4, out_bytes_ = 4;
    int min_h_ = 1, min_w_ = 1, max_h_ = 0, max_w_ = 0;
};

}  // namespace srexport
