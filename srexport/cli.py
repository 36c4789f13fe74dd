"""The `srexport` command: a click group whose commands are thin layers over the library."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from .errors import EXIT_INCOMPLETE, EXIT_MISSING_BACKEND, EXIT_USER_ERROR, EXIT_VERIFY_FAILED, SRExportError

EPILOG = f"""\b
Exit codes: 0 success; {EXIT_USER_ERROR} bad input or usage (unknown network, missing or corrupt
file, existing output without --force); {EXIT_VERIFY_FAILED} an artifact failed numerical verification;
{EXIT_MISSING_BACKEND} every step that could run did, but TensorRT or a CUDA GPU is missing;
{EXIT_INCOMPLETE} train stopped at --time-limit or --time-budget before its last epoch (continue it with --resume).
"""


def user_errors(fn):
    """Turn SRExportError into `error: ...` on stderr and its exit code: never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SRExportError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
    return wrapper


def emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else text)


scale_option = click.option("--scale", "-s", type=int, help="Upscaling factor: 2, 3 or 4.")
checkpoint_option = click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                                 help="A .safetensors checkpoint (default: the shipped one for NAME and scale).")
random_option = click.option("--random-weights", is_flag=True, help="Use freshly initialised weights (seed 0).")
force_option = click.option("--force", is_flag=True, help="Overwrite existing outputs.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


class Scales(click.ParamType):
    """One scale (3), or several separated by commas (2,3,4)."""

    name = "scales"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, tuple)):
            return value
        try:
            scales = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a scale or a list of scales (e.g. 3, or 2,3,4)", param, ctx)
        return scales[0] if len(scales) == 1 else scales


class Duration(click.ParamType):
    """Seconds, or a number with s, m or h: 540, 9m, 1.5h."""

    name = "duration"
    _units = {"s": 1, "m": 60, "h": 3600}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        unit = self._units.get(text[-1:], None)
        try:
            seconds = float(text[:-1] if unit else text) * (unit or 1)
        except ValueError:
            self.fail(f"{value!r} is not a duration (e.g. 540, 9m, 1.5h)", param, ctx)
        if not seconds > 0:
            self.fail(f"{value!r} is not a positive duration", param, ctx)
        return seconds


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="srexport")
def main():
    """Classic super-resolution networks from PyTorch to verified ONNX and FP16 TensorRT engines.

    \b
    Example:
      srexport list
      srexport build espcn --scale 3 --fp16
    """


@main.command("list")
@json_option
@user_errors
def list_cmd(as_json):
    """List every network: scales, parameters, multiply-adds, checkpoints, published PSNR.

    \b
    Example:
      srexport list --json
    """
    from .catalog import network_table, network_rows

    rows = network_rows()
    emit(rows, as_json, network_table(rows))


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@user_errors
def info(path, as_json):
    """Show the metadata record of a checkpoint (.safetensors) or ONNX file.

    \b
    Example:
      srexport info engines/espcn_x3.onnx
    """
    from .catalog import artifact_info, info_text

    data = artifact_info(path)
    emit(data, as_json, info_text(data))


@main.command()
@click.argument("name")
@scale_option
@checkpoint_option
@random_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX file to write (default: engines/NAME_xSCALE.onnx).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset to write.")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True,
              help="torch.export-based exporter or the legacy TorchScript one.")
@force_option
@json_option
@user_errors
def export(name, scale, checkpoint, random_weights, output, opset, exporter, force, as_json):
    """Export NAME to FP32 ONNX and verify it against PyTorch before writing it.

    The verification (ONNX Runtime vs PyTorch FP32 at three input sizes, max abs <= 1e-4) is printed
    and stored as JSON beside the ONNX file.

    \b
    Example:
      srexport export espcn --scale 3 --random-weights -o espcn_x3.onnx
    """
    from .checkpoint import resolve_network
    from .onnx_export import export_onnx

    model, record = resolve_network(name, scale, checkpoint=checkpoint, random_weights=random_weights)
    output = output or Path("engines") / f"{record.network}_x{record.scale}.onnx"
    result = export_onnx(model, record, output, opset=opset, exporter=exporter, force=force)
    emit(result.to_dict(), as_json, f"{result.verification}\nwrote {result.path} ({result.size_bytes:,} bytes) "
                                    f"in {result.seconds:.1f} s")


def shape_option(name, help_text):
    return click.option(name, metavar="HxW", help=help_text)


@main.command()
@click.argument("name")
@scale_option
@checkpoint_option
@random_option
@click.option("--fp16/--fp32", default=False, help="Build an FP16 engine from an FP16 ONNX graph (default FP32).")
@click.option("--io", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="Input/output dtype of the FP16 graph and engine.")
@click.option("--engine", "flavour", type=click.Choice(["auto", "tensorrt", "tensorrt-rtx"]), default="auto",
              show_default=True, help="Engine flavour: TensorRT 10/11, TensorRT for RTX (builds without a GPU), or "
              "auto: TensorRT where it is installed, else TensorRT-RTX.")
@click.option("--compute-capability", "compute_capabilities", metavar="LIST",
              help="TensorRT-RTX: compute capabilities to build for, e.g. 8.6,8.9 (default: the GPU present, else "
                   "8.0,8.6,8.9,12.0).")
@shape_option("--min-shape", "Smallest LR input of the engine profile (default 32x32, or max if smaller).")
@shape_option("--opt-shape", "LR input TensorRT tunes for (default: half of max).")
@shape_option("--max-shape", "Largest LR input (default: the largest up to a 1920x1080 output that fits the memory "
                             "budget; larger frames are tiled).")
@click.option("--memory-budget", default="2GiB", show_default=True, metavar="SIZE",
              help="Activation memory the profile may need, measured by two probe builds; a larger profile is refused.")
@click.option("--hardware-compatible", is_flag=True, help="TensorRT 10/11: an engine for every GPU from Ampere on.")
@click.option("--version-compatible", is_flag=True, help="TensorRT 10/11: an engine later TensorRT versions can run.")
@click.option("--onnx-only", is_flag=True, help="Stop after the verified ONNX files (no TensorRT needed).")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("engines"),
              show_default=True, help="Folder for the ONNX files, the engine and its JSON sidecar.")
@force_option
@json_option
@user_errors
def build(name, scale, checkpoint, random_weights, fp16, io, flavour, compute_capabilities, min_shape, opt_shape,
          max_shape, memory_budget, hardware_compatible, version_compatible, onnx_only, output_dir, force, as_json):
    """Export, verify, convert to FP16, verify, build an engine and verify it.

    Without --scale, every scale that has a checkpoint is built. Where no engine flavour is
    installed (or TensorRT has no GPU), every other step still runs and the command exits with
    code 4. TensorRT-RTX builds ahead of time without a GPU: the engine is then built, its parsed
    layers checked, and it is said plainly that it was not run.

    \b
    Example:
      srexport build espcn --fp16
      srexport build espcn --scale 2 --fp16 --engine tensorrt-rtx --compute-capability 8.6,8.9
      srexport build vdsr --scale 2 --fp16 --onnx-only
      srexport build fsrcnn --scale 3 --fp16 --max-shape 720x1280 --memory-budget 4GiB
    """
    from .build import build_artifacts
    from .catalog import chosen_networks
    from .engine import parse_bytes, parse_shape
    from .errors import MissingBackend

    if io == "fp16" and not fp16:
        raise SRExportError("--io fp16 applies to FP16 engines: add --fp16")
    shapes = {k: parse_shape(v) for k, v in (("min_shape", min_shape), ("opt_shape", opt_shape),
                                             ("max_shape", max_shape)) if v}
    engine_settings = {"flavour": flavour, "compute_capabilities": compute_capabilities, "shapes": shapes,
                       "memory_budget": parse_bytes(memory_budget),
                       "settings": {"hardware_compatible": hardware_compatible,
                                    "version_compatible": version_compatible}}
    reports = []
    for model, record in chosen_networks(name, scale, checkpoint, random_weights):
        if not as_json:
            click.echo(f"{record.network} x{record.scale}:")
        report = build_artifacts(model, record, fp16=fp16, io=io, engine_settings=engine_settings,
                                 onnx_only=onnx_only, out_dir=output_dir, force=force,
                                 progress=lambda s: as_json or click.echo(
                                     f"  {s.name:<12} {s.status:<8} {s.figure} ({s.seconds:.1f} s)"))
        reports.append(report)
        if not as_json:
            click.echo(report.table())
            if report.not_run:
                click.echo(f"  the engine was built and NOT run here ({report.not_run}); run "
                           f"`srexport verify {report.stages[-1].artifact}` on a GPU that can run it")
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    missing = next((r.missing for r in reports if r.missing), "")
    if missing:
        raise MissingBackend(f"{missing}. The verified ONNX files are in {output_dir}/ "
                             f"(pass --onnx-only to stop there and exit 0)")


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@checkpoint_option
@json_option
@user_errors
def verify(artifact, checkpoint, as_json):
    """Verify an existing ONNX file or TensorRT engine against its checkpoint again.

    The checkpoint is found from the artifact's record (shipped checkpoint, or the seed of
    random weights) unless --checkpoint is given.

    \b
    Example:
      srexport verify engines/espcn_x3.fp16.onnx
    """
    from .reverify import verify_artifact

    result = verify_artifact(artifact, checkpoint)
    emit(result.to_dict(), as_json, str(result))
    if not result:
        sys.exit(EXIT_VERIFY_FAILED)


@main.command()
@click.argument("name", required=False)
@click.option("--scale", "-s", type=Scales(),
              help="Upscaling factor: 2, 3 or 4; several (2,3,4) train one model for all of them "
                   "(networks whose weights do not depend on the scale: SRCNN, VDSR, DRCN).")
@click.option("--data", type=click.Path(path_type=Path), multiple=True,
              help="Folder of training images (e.g. T91); repeat it to train on several (--data T91 --data BSD200).")
@click.option("--val", type=click.Path(path_type=Path),
              help="Folder of validation images (default: images held out of --data).")
@click.option("--epochs", type=int, help="Epochs (default: the recipe's; with --resume, extends the run).")
@click.option("--batch-size", type=int, help="Batch size (default: the recipe's).")
@click.option("--steps-per-epoch", type=int,
              help="Batches per epoch (default: one pass over the patches; --time-budget fits it to a wall time).")
@click.option("--lr", type=float, help="Base learning rate (default: the recipe's).")
@click.option("--step-epochs", type=int,
              help="Epochs between the step schedule's learning-rate drops (default: the recipe's).")
@click.option("--context", type=int,
              help="LR pixels of real image around each training patch, seen by the network and left out of "
                   "the loss (default: the recipe's).")
@click.option("--device", default="cpu", show_default=True,
              help="cpu, cuda or cuda:N (with several processes: cpu or cuda, a GPU each).")
@click.option("--nproc", type=int,
              help="Train data-parallel in this many processes on this machine (gloo on cpu, NCCL on cuda); "
                   "--batch-size stays the global batch. torchrun --nproc-per-node N -m srexport.cli train ... too.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]),
              help="bf16: bfloat16 autocast for the training passes, for GPUs and for CPUs with bfloat16 "
                   "instructions (benchmarks/TRAINING.md); weights stay float32 (default fp32; a resumed run keeps "
                   "its own).")
@click.option("--resume", type=click.Path(path_type=Path), help="Resume file (or a checkpoint of the run).")
@click.option("--time-limit", type=Duration(),
              help="Stop at the last epoch boundary within this wall time (540, 9m, 1.5h); continue with --resume.")
@click.option("--time-budget", type=Duration(),
              help="Fit the steps per epoch, measured on this device, so that all the epochs (and their learning-"
                   "rate schedule) end within this wall time; a new run only, instead of --steps-per-epoch.")
@click.option("--init-from", type=click.Path(dir_okay=False, path_type=Path),
              help="Start from this checkpoint's weights (same network; any scale) instead of the recipe's init.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write (default: NAME_xSCALE.safetensors); {scale} in its file name is replaced "
                   "by the scale, which a run over several scales needs.")
@force_option
@user_errors
def train(name, scale, data, val, epochs, batch_size, steps_per_epoch, lr, step_epochs, context, device, nproc,
          precision, resume, time_limit, time_budget, init_from, output, force):
    """Train NAME at --scale on a folder of images with the network's paper recipe.

    After every epoch the best checkpoint (by validation PSNR) and a resume file are written
    atomically; a killed run continues with --resume, and --time-limit stops one cleanly at an epoch
    boundary (exit code 5 until the run is complete, so a script can loop on it). For a run that
    must be whole in one time-limited slot, --time-budget fits the epochs to the slot instead. A
    training-curve PNG is written beside the checkpoint.

    \b
    Example:
      srexport train espcn --scale 3 --data ../shared/datasets/T91 -o espcn_x3.safetensors
      srexport train --resume espcn_x3.safetensors
      srexport train srcnn_955 -s 4 --data T91 --init-from srcnn_955_x3.safetensors --epochs 40 --step-epochs 28
      srexport train srcnn_955 -s 4 --data T91 --init-from srcnn_955_x4.safetensors --context 4 --lr 3e-4 \\
          --epochs 18 --step-epochs 12 --steps-per-epoch 1000 -o srcnn_955_x4_context.safetensors
      srexport train vdsr -s 2 --data T91 --device cuda --precision bf16 --steps-per-epoch 667 -o vdsr_x2.safetensors
      srexport train --resume vdsr_x2.safetensors --epochs 120 --time-limit 9m
      srexport train vdsr -s 2,3,4 --data T91 --device cuda --precision bf16 -o 'vdsr_x{scale}.safetensors'
      srexport train drcn -s 3 --data T91 --device cuda --precision bf16 --time-budget 8m -o drcn_x3.safetensors
      srexport train vdsr -s 2,3,4 --data T91 --data BSD200 --device cuda --nproc 2 --precision bf16 \\
          --time-limit 9m -o 'vdsr_x{scale}.safetensors'
    """
    import os

    from .train import train as train_network

    kwargs = dict(out_path=output, val_dir=val, epochs=epochs, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                  lr=lr, device=device, resume=resume, force=force, precision=precision, init_from=init_from,
                  step_epochs=step_epochs, context=context, time_limit=time_limit, time_budget=time_budget)
    if nproc is not None and nproc != 1:
        from .distributed import launch

        sys.exit(launch(nproc, dict(network=name, scale=scale, data_dir=data or None, **kwargs)))
    result = train_network(name, scale, data or None, **kwargs)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary
        click.echo(result.summary())
    if not result.complete:
        sys.exit(EXIT_INCOMPLETE)


@main.command("eval")
@click.argument("model")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Folder of HR test images (e.g. Set5).")
@scale_option
@click.option("--save-images", type=click.Path(file_okay=False, path_type=Path),
              help="Write the SR images and bicubic | model | HR comparison crops here.")
@click.option("--record", "record_metrics", is_flag=True,
              help="Store the measured PSNR/SSIM in the checkpoint's metadata record.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: run the network as `upscale --precision bf16` does (CPUs with bf16 dot products).")
@force_option
@json_option
@user_errors
def eval_cmd(model, data, scale, save_images, record_metrics, precision, force, as_json):
    """Evaluate a network by the published protocol (MATLAB bicubic LR, Y PSNR/SSIM, border = scale).

    MODEL is a network name (its shipped checkpoint) or a .safetensors checkpoint. Prints per-image
    and mean PSNR/SSIM beside the bicubic baseline and the published figure.

    \b
    Example:
      srexport eval espcn --scale 3 --data ../shared/datasets/Set5
      srexport eval my_vdsr_x2.safetensors --data Set14 --json
      srexport eval espcn --scale 2 --data Set14 --precision bf16
    """
    from .checkpoint import load_checkpoint, record_metrics as store, resolve_network, shipped_checkpoint
    from .evaluate import evaluate

    if record_metrics and precision != "fp32":
        raise SRExportError("--record: a checkpoint records its FP32 figures; drop --record or --precision")
    if model.endswith(".safetensors") or Path(model).is_file():
        path = Path(model)
        net, record = load_checkpoint(path, scale=scale)
    else:
        net, record = resolve_network(model, scale)
        path = shipped_checkpoint(record.network, record.scale)
    report = evaluate(net, data, record.scale, network=record.network, save_images=save_images, force=force,
                      precision=precision)
    emit(report.to_dict(), as_json, report.table())
    if record_metrics:
        paper = (report.published or {}).get("psnr")
        store(path, report.dataset, {
            "psnr": round(report.psnr, 4), "ssim": round(report.ssim, 5), "bicubic_psnr": round(report.bicubic_psnr, 4),
            "published_psnr": paper, "gap_to_published_db": None if paper is None else round(report.psnr - paper, 3),
            "protocol": "srexport eval: MATLAB bicubic LR, Y PSNR/SSIM, border = scale"})


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output folder (or the output file, for a single input).")
@click.option("--model", "network", help="Network name (its shipped checkpoint).")
@scale_option
@checkpoint_option
@click.option("--onnx", type=click.Path(dir_okay=False, path_type=Path), help="An srexport ONNX file.")
@click.option("--engine", type=click.Path(dir_okay=False, path_type=Path), help="An srexport TensorRT engine.")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnxruntime", "tensorrt", "native", "openvino"]),
              default="auto", show_default=True,
              help="auto: TensorRT on an NVIDIA GPU, else the fused CPU kernel (native; FSRCNN, ESPCN), "
              "else ONNX Runtime, else PyTorch.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="bf16: CPUs with bf16 dot products (AVX512_BF16, AMX): the fused kernel in bf16, else OpenVINO, "
              "each checked >= 50 dB from FP32 first. fp16: TensorRT, or ONNX Runtime's FP16 graph.")
@click.option("--tile", help="Tile size in LR pixels, or 'auto' (tiles overlap by the receptive field: no seams).")
@click.option("--codec", help="Video encoder (default libx264; libx265, libvpx-vp9, libsvtav1, ...).")
@click.option("--crf", type=int, help="Video quality (default 18).")
@click.option("--preset", help="Encoder preset (default veryfast; medium makes smaller files, slower).")
@force_option
@user_errors
def upscale(inputs, output, network, scale, checkpoint, onnx, engine, backend, precision, tile, codec, crf, preset,
            force):
    """Upscale images (PNG, JPEG, BMP, TIFF, WebP), folders, globs and videos.

    Colour images go through the network on Y (MATLAB BT.601) with Cb/Cr by bicubic; alpha and
    16-bit PNGs are kept. Videos keep frame rate, timestamps and audio. A bad file is reported on
    one line and skipped; the exit code is then 2.

    \b
    Example:
      srexport upscale photo.png frames/ -o out/ --model espcn --scale 2
      srexport upscale clip.mp4 -o clip_x2.mp4 --model espcn --scale 2 --crf 20
      srexport upscale clip.mp4 -o clip_x2.mp4 --model espcn --scale 2 --precision bf16
    """
    from .images import upscale_many
    from .runtime import open_runner_for
    from .tiling import parse_tile

    # No spinning worker threads: colour conversion, decoding and encoding need the cores between runs.
    runner = open_runner_for(network, scale, checkpoint=checkpoint, onnx=onnx, engine=engine, backend=backend,
                             precision=precision, spin=False)
    failures = upscale_many(runner, inputs, output, force=force, tile=parse_tile(tile), codec=codec, crf=crf,
                            preset=preset)
    if failures:
        raise SRExportError(f"{len(failures)} of the inputs failed (see above)")


@main.command()
@click.argument("name")
@scale_option
@checkpoint_option
@click.option("--output-size", default="1920x1080", show_default=True, metavar="WxH", help="Output frame size.")
@click.option("--backend", "backends", multiple=True,
              help="Limit to these backends or rows (repeatable): auto, torch, onnxruntime, tensorrt, native, "
              "openvino, bf16, ...")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]),
              help="Only the rows of this precision (bf16 includes OpenVINO's default precision, the peer).")
@click.option("--repeats", type=int, default=5, show_default=True, help="Timed runs per backend (median).")
@json_option
@user_errors
def bench(name, scale, checkpoint, output_size, backends, precision, repeats, as_json):
    """Time NAME on every available backend side by side, with a GEMM probe of this machine's peak.

    \b
    Example:
      srexport bench espcn --scale 2
      srexport bench vdsr --scale 2 --output-size 1280x720 --json
      srexport bench espcn --scale 2 --precision bf16
    """
    from .bench import bench as run_bench

    report = run_bench(name, scale or 2, output_size=output_size, backends=list(backends) or None,
                       checkpoint=checkpoint, repeats=repeats, precision=precision,
                       progress=None if as_json else click.echo)
    emit(report.to_dict(), as_json, report.table())


if __name__ == "__main__":
    main()
