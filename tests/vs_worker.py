"""Run by tests/test_vapoursynth.py inside the Python 3.12 VapourSynth environment (no torch):
`python vs_worker.py JOBS.json`. Each job builds a clip from frames saved as .npy (yuv420p arrays
(n, h*3/2, w) or RGB (n, h, w, 3)), upscales it with srexport.vapoursynth.upscale and saves the
output frames in the same layout, or the error message where upscale refuses."""

import json
import sys

import numpy as np
import vapoursynth as vs

from srexport.errors import SRExportError
from srexport.vapoursynth import upscale

core = vs.core


def clip_from(frames: np.ndarray, kind: str):
    n = frames.shape[0]
    if kind == "rgb":
        h, w = frames.shape[1:3]
        fmt = vs.RGB24
    else:
        h, w = frames.shape[1] * 2 // 3, frames.shape[2]
        fmt = vs.YUV420P8
    blank = core.std.BlankClip(format=fmt, width=w, height=h, length=n)

    def put(n, f):
        f = f.copy()
        a = frames[n]
        if kind == "rgb":
            for p in range(3):
                np.asarray(f[p])[:] = a[..., p]
        else:
            np.asarray(f[0])[:] = a[:h]
            np.asarray(f[1])[:] = a[h:h + h // 4].reshape(h // 2, w // 2)
            np.asarray(f[2])[:] = a[h + h // 4:].reshape(h // 2, w // 2)
        return f
    return core.std.ModifyFrame(blank, blank, put)


def frames_of(clip, kind: str) -> np.ndarray:
    out = []
    for i in range(clip.num_frames):
        f = clip.get_frame(i)
        planes = [np.asarray(f[p]) for p in range(3)]
        out.append(np.stack(planes, -1) if kind == "rgb" else
                   np.concatenate([p.reshape(-1) for p in planes]).reshape(-1, clip.width))
    return np.stack(out)


def main(jobs_file: str) -> None:
    results = []
    for job in json.load(open(jobs_file)):
        clip = clip_from(np.load(job["frames"]), job["kind"])
        try:
            sr = upscale(clip, job["network"], job["scale"], backend=job["backend"], **job.get("options", {}))
            np.save(job["out"], frames_of(sr, job["kind"]))
            results.append({"out": job["out"], "format": sr.format.name, "size": [sr.width, sr.height]})
        except SRExportError as e:
            results.append({"out": job["out"], "error": str(e)})
    json.dump(results, open(jobs_file + ".results", "w"))


if __name__ == "__main__":
    main(sys.argv[1])
