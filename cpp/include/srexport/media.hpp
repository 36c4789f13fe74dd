// Pictures and videos through FFmpeg (libavformat, libavcodec, libswscale), as `srexport upscale`
// treats them (srexport/images.py, video.py): a picture is decoded as 8-bit gray (its own Y) or
// RGB (every other format is converted by swscale); a video's frames as yuv420p, whose Y plane goes
// through the network directly. Video output keeps each frame's pts and the input's time base, and
// copies the audio packets. Outputs are written to a temporary name and renamed when complete.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include "colour.hpp"
#include "sidecar.hpp"

namespace srexport {

inline std::string av_error(int code) {
    char text[AV_ERROR_MAX_STRING_SIZE] = {0};
    av_strerror(code, text, sizeof text);
    return text;
}

struct FormatCloser { void operator()(AVFormatContext* f) const { avformat_close_input(&f); } };
struct CodecFreer { void operator()(AVCodecContext* c) const { avcodec_free_context(&c); } };
struct FrameFreer { void operator()(AVFrame* f) const { av_frame_free(&f); } };
struct PacketFreer { void operator()(AVPacket* p) const { av_packet_free(&p); } };
struct SwsFreer { void operator()(SwsContext* s) const { sws_freeContext(s); } };
using FramePtr = std::unique_ptr<AVFrame, FrameFreer>;
using PacketPtr = std::unique_ptr<AVPacket, PacketFreer>;

struct Picture {
    int width = 0, height = 0;
    bool gray = false;
    std::vector<uint8_t> pixels;  // gray: h x w; RGB: h x w x 3
};

// Opens `path` and its first video stream's decoder.
class Decoder {
public:
    explicit Decoder(const std::string& path) : path_(path) {
        AVFormatContext* f = nullptr;
        if (int e = avformat_open_input(&f, path.c_str(), nullptr, nullptr); e < 0) throw Error(path + ": cannot open (" + av_error(e) + ")");
        fmt_.reset(f);
        if (int e = avformat_find_stream_info(f, nullptr); e < 0) throw Error(path + ": cannot read streams (" + av_error(e) + ")");
        const AVCodec* codec = nullptr;
        stream_ = av_find_best_stream(f, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
        if (stream_ < 0 || !codec) throw Error(path + ": has no video stream or picture FFmpeg can decode");
        dec_.reset(avcodec_alloc_context3(codec));
        avcodec_parameters_to_context(dec_.get(), f->streams[stream_]->codecpar);
        dec_->thread_count = 0;
        if (int e = avcodec_open2(dec_.get(), codec, nullptr); e < 0) throw Error(path + ": cannot open the decoder (" + av_error(e) + ")");
    }
    AVFormatContext* format() const { return fmt_.get(); }
    AVStream* stream() const { return fmt_->streams[stream_]; }
    AVCodecContext* codec() const { return dec_.get(); }

    // Calls on_frame for every decoded video frame and on_other for every packet of another
    // stream, in file order.
    void run(const std::function<void(AVFrame*)>& on_frame, const std::function<void(AVPacket*)>& on_other = nullptr) {
        PacketPtr pkt(av_packet_alloc());
        FramePtr frame(av_frame_alloc());
        auto drain = [&] {
            int e;
            while ((e = avcodec_receive_frame(dec_.get(), frame.get())) >= 0) {
                on_frame(frame.get());
                av_frame_unref(frame.get());
            }
            if (e != AVERROR(EAGAIN) && e != AVERROR_EOF) throw Error(path_ + ": cannot decode (" + av_error(e) + ")");
        };
        while (av_read_frame(fmt_.get(), pkt.get()) >= 0) {
            if (pkt->stream_index == stream_) {
                if (int e = avcodec_send_packet(dec_.get(), pkt.get()); e < 0 && e != AVERROR(EAGAIN))
                    throw Error(path_ + ": cannot decode (" + av_error(e) + ")");
                drain();
            } else if (on_other) {
                on_other(pkt.get());
            }
            av_packet_unref(pkt.get());
        }
        avcodec_send_packet(dec_.get(), nullptr);
        drain();
    }

private:
    std::string path_;
    std::unique_ptr<AVFormatContext, FormatCloser> fmt_;
    std::unique_ptr<AVCodecContext, CodecFreer> dec_;
    int stream_ = -1;
};

// `frame` converted by swscale to `format` (a no-op copy when it already is).
inline FramePtr convert_frame(const AVFrame* frame, AVPixelFormat format) {
    FramePtr out(av_frame_alloc());
    out->format = format, out->width = frame->width, out->height = frame->height;
    if (av_frame_get_buffer(out.get(), 0) < 0) throw Error("out of memory for a frame");
    std::unique_ptr<SwsContext, SwsFreer> sws(sws_getContext(frame->width, frame->height, AVPixelFormat(frame->format), frame->width,
                                                             frame->height, format, SWS_BICUBIC, nullptr, nullptr, nullptr));
    if (!sws) throw Error("swscale cannot convert this pixel format");
    sws_scale(sws.get(), frame->data, frame->linesize, 0, frame->height, out->data, out->linesize);
    return out;
}

inline bool is_gray(AVPixelFormat f) {
    return f == AV_PIX_FMT_GRAY8 || f == AV_PIX_FMT_YA8 || f == AV_PIX_FMT_MONOBLACK || f == AV_PIX_FMT_MONOWHITE;
}

// The first frame of a picture file as 8-bit gray or RGB (alpha and 16-bit depth are dropped).
inline Picture read_picture(const std::string& path) {
    Decoder dec(path);
    Picture pic;
    dec.run([&](AVFrame* frame) {
        if (pic.width) return;
        pic.gray = is_gray(AVPixelFormat(frame->format));
        const AVPixelFormat want = pic.gray ? AV_PIX_FMT_GRAY8 : AV_PIX_FMT_RGB24;
        FramePtr f = convert_frame(frame, want);
        const int bpp = pic.gray ? 1 : 3;
        pic.width = f->width, pic.height = f->height;
        pic.pixels.resize(size_t(pic.width) * pic.height * bpp);
        for (int i = 0; i < pic.height; ++i)
            std::copy_n(f->data[0] + size_t(i) * f->linesize[0], size_t(pic.width) * bpp, &pic.pixels[size_t(i) * pic.width * bpp]);
    });
    if (!pic.width) throw Error(path + ": no picture decoded");
    return pic;
}

inline void check_writable(const std::string& path, bool force) {
    if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
        std::fclose(f);
        if (!force) throw Error(path + ": already exists (use --force to overwrite)");
    }
}

inline void finish_output(const std::string& tmp, const std::string& path) {
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw Error(path + ": cannot write");
    }
}

// A PNG file of `pic`: one packet of FFmpeg's png encoder is the whole file.
inline void write_png(const Picture& pic, const std::string& path, bool force) {
    check_writable(path, force);
    const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
    if (!codec) throw Error("FFmpeg has no PNG encoder");
    std::unique_ptr<AVCodecContext, CodecFreer> enc(avcodec_alloc_context3(codec));
    enc->width = pic.width, enc->height = pic.height, enc->time_base = {1, 25};
    enc->pix_fmt = pic.gray ? AV_PIX_FMT_GRAY8 : AV_PIX_FMT_RGB24;
    if (int e = avcodec_open2(enc.get(), codec, nullptr); e < 0) throw Error("cannot open the PNG encoder (" + av_error(e) + ")");
    FramePtr f(av_frame_alloc());
    f->format = enc->pix_fmt, f->width = pic.width, f->height = pic.height;
    if (av_frame_get_buffer(f.get(), 0) < 0) throw Error("out of memory for a frame");
    const int bpp = pic.gray ? 1 : 3;
    for (int i = 0; i < pic.height; ++i)
        std::copy_n(&pic.pixels[size_t(i) * pic.width * bpp], size_t(pic.width) * bpp, f->data[0] + size_t(i) * f->linesize[0]);
    PacketPtr pkt(av_packet_alloc());
    if (avcodec_send_frame(enc.get(), f.get()) < 0 || avcodec_receive_packet(enc.get(), pkt.get()) < 0)
        throw Error(path + ": PNG encoding failed");
    const std::string tmp = path + ".tmp-srexport";
    std::FILE* out = std::fopen(tmp.c_str(), "wb");
    if (!out) throw Error(path + ": cannot write");
    const bool ok = std::fwrite(pkt->data, 1, size_t(pkt->size), out) == size_t(pkt->size);
    if (std::fclose(out) != 0 || !ok) { std::remove(tmp.c_str()); throw Error(path + ": cannot write"); }
    finish_output(tmp, path);
}

// A network on Y planes: (h x w) Y / 255 -> (scale*h x scale*w), tiled or not by the caller.
using YUpscaler = std::function<std::vector<float>(const std::vector<float>&, int h, int w)>;

// A picture upscaled as images.upscale_rgb8 (RGB) or upscale_array (gray) do it.
inline Picture upscale_picture(const Picture& in, const YUpscaler& run, int scale) {
    Picture out{scale * in.width, scale * in.height, in.gray, {}};
    if (in.gray) {
        std::vector<float> y(in.pixels.size());
        for (size_t i = 0; i < y.size(); ++i) y[i] = float(in.pixels[i]) / 255.0f;  // float32, as numpy
        const std::vector<float> sr = run(y, in.height, in.width);
        out.pixels.resize(sr.size());
        for (size_t i = 0; i < sr.size(); ++i) out.pixels[i] = round8(double(sr[i]) * 255.0 * (255.0 / 255.0));
    } else {
        const YCbCrPlanes planes = rgb8_to_ycbcr(in.pixels.data(), in.height, in.width);
        const std::vector<float> sr = run(planes.y, in.height, in.width);
        out.pixels = ycbcr_to_rgb8(sr.data(), planes, scale);
    }
    return out;
}

struct VideoOptions {
    std::string codec = "libx264";
    int crf = 18;
    std::string preset = "veryfast";
};

// Every frame of `in` upscaled into `out` (container from the suffix), audio copied; returns frames.
inline int64_t upscale_video(const std::string& in, const std::string& out, const YUpscaler& run, int scale,
                             const VideoOptions& options, bool force, const std::function<void(int64_t)>& progress = nullptr) {
    check_writable(out, force);
    Decoder dec(in);
    const int w = dec.codec()->width, h = dec.codec()->height;
    if (w <= 0 || h <= 0) throw Error(in + ": video stream has no frame size");
    const int ow = scale * w - (scale * w) % 2, oh = scale * h - (scale * h) % 2;  // 4:2:0 needs even sizes
    const size_t dot = out.find_last_of('.');
    const std::string suffix = dot == std::string::npos ? "" : out.substr(dot);
    const std::string tmp = out.substr(0, dot == std::string::npos ? out.size() : dot) + ".tmp-srexport" + suffix;
    AVFormatContext* o = nullptr;  // container guessed from the suffix, which the temporary name keeps
    if (avformat_alloc_output_context2(&o, nullptr, nullptr, tmp.c_str()) < 0 || !o)
        throw Error(out + ": unknown video container " + (suffix.empty() ? "(no suffix)" : suffix));
    std::unique_ptr<AVFormatContext, void (*)(AVFormatContext*)> octx(o, [](AVFormatContext* f) {
        if (f->pb) avio_closep(&f->pb);
        avformat_free_context(f);
    });
    const AVCodec* codec = avcodec_find_encoder_by_name(options.codec.c_str());
    if (!codec) throw Error("--codec: FFmpeg has no encoder " + options.codec);
    std::unique_ptr<AVCodecContext, CodecFreer> enc(avcodec_alloc_context3(codec));
    AVStream* vin = dec.stream();
    AVRational rate = vin->avg_frame_rate.num ? vin->avg_frame_rate : av_guess_frame_rate(dec.format(), vin, nullptr);
    enc->width = ow, enc->height = oh, enc->pix_fmt = AV_PIX_FMT_YUV420P, enc->time_base = vin->time_base;
    enc->framerate = rate;
    enc->color_range = dec.codec()->color_range, enc->color_primaries = dec.codec()->color_primaries;
    enc->color_trc = dec.codec()->color_trc, enc->colorspace = dec.codec()->colorspace;
    if (o->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    AVDictionary* opts = nullptr;
    if (options.codec == "libx264" || options.codec == "libx265") {
        av_dict_set(&opts, "crf", std::to_string(options.crf).c_str(), 0);
        av_dict_set(&opts, "preset", options.preset.c_str(), 0);
    }
    const int opened = avcodec_open2(enc.get(), codec, &opts);
    av_dict_free(&opts);
    if (opened < 0) throw Error("--codec: cannot open " + options.codec + " (" + av_error(opened) + ")");
    AVStream* vout = avformat_new_stream(o, nullptr);
    avcodec_parameters_from_context(vout->codecpar, enc.get());
    vout->time_base = vin->time_base;
    std::vector<int> audio_map(dec.format()->nb_streams, -1);
    for (unsigned i = 0; i < dec.format()->nb_streams; ++i) {
        AVStream* s = dec.format()->streams[i];
        if (s->codecpar->codec_type != AVMEDIA_TYPE_AUDIO) continue;
        AVStream* a = avformat_new_stream(o, nullptr);
        avcodec_parameters_copy(a->codecpar, s->codecpar);
        a->codecpar->codec_tag = 0;
        a->time_base = s->time_base;
        audio_map[i] = a->index;
    }
    if (!(o->oformat->flags & AVFMT_NOFILE) && avio_open(&o->pb, tmp.c_str(), AVIO_FLAG_WRITE) < 0) throw Error(out + ": cannot write");
    if (int e = avformat_write_header(o, nullptr); e < 0) throw Error(out + ": cannot write the header (" + av_error(e) + ")");
    PacketPtr pkt(av_packet_alloc());
    auto write_encoded = [&] {
        int e;
        while ((e = avcodec_receive_packet(enc.get(), pkt.get())) >= 0) {
            av_packet_rescale_ts(pkt.get(), enc->time_base, vout->time_base);
            pkt->stream_index = vout->index;
            if (av_interleaved_write_frame(o, pkt.get()) < 0) throw Error(out + ": cannot write a packet");
        }
        if (e != AVERROR(EAGAIN) && e != AVERROR_EOF) throw Error(out + ": encoding failed (" + av_error(e) + ")");
    };
    int64_t frames = 0;
    try {
        dec.run(
            [&](AVFrame* frame) {
                FramePtr yuv = convert_frame(frame, AV_PIX_FMT_YUV420P);
                const std::vector<float> x = luma8_to_input(yuv->data[0], h, w, yuv->linesize[0]);
                const std::vector<float> sr = run(x, h, w);
                const int cw = (w + 1) / 2, ch = (h + 1) / 2;
                std::vector<uint8_t> u(size_t(ch) * cw), v(size_t(ch) * cw);
                for (int i = 0; i < ch; ++i) {
                    std::copy_n(yuv->data[1] + size_t(i) * yuv->linesize[1], cw, &u[size_t(i) * cw]);
                    std::copy_n(yuv->data[2] + size_t(i) * yuv->linesize[2], cw, &v[size_t(i) * cw]);
                }
                const Yuv420Frame up = yuv420_frame(sr.data(), scale * w, u.data(), v.data(), ch, cw, scale, ow, oh);
                FramePtr f(av_frame_alloc());
                f->format = AV_PIX_FMT_YUV420P, f->width = ow, f->height = oh;
                if (av_frame_get_buffer(f.get(), 0) < 0) throw Error("out of memory for a frame");
                for (int i = 0; i < oh; ++i) std::copy_n(&up.y[size_t(i) * ow], ow, f->data[0] + size_t(i) * f->linesize[0]);
                for (int i = 0; i < oh / 2; ++i) {
                    std::copy_n(&up.u[size_t(i) * (ow / 2)], ow / 2, f->data[1] + size_t(i) * f->linesize[1]);
                    std::copy_n(&up.v[size_t(i) * (ow / 2)], ow / 2, f->data[2] + size_t(i) * f->linesize[2]);
                }
                f->pts = frame->best_effort_timestamp;
                if (avcodec_send_frame(enc.get(), f.get()) < 0) throw Error(out + ": encoding failed");
                write_encoded();
                if (progress) progress(++frames); else ++frames;
            },
            [&](AVPacket* p) {
                const int target = audio_map[p->stream_index];
                if (target < 0) return;
                av_packet_rescale_ts(p, dec.format()->streams[p->stream_index]->time_base, o->streams[target]->time_base);
                p->stream_index = target;
                p->pos = -1;
                if (av_interleaved_write_frame(o, p) < 0) throw Error(out + ": cannot write an audio packet");
            });
        avcodec_send_frame(enc.get(), nullptr);
        write_encoded();
        if (av_write_trailer(o) < 0) throw Error(out + ": cannot finish the file");
        avio_closep(&o->pb);
    } catch (...) {
        avio_closep(&o->pb);
        std::remove(tmp.c_str());
        throw;
    }
    finish_output(tmp, out);
    return frames;
}

}  // namespace srexport
