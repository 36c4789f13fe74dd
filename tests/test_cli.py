import json

import pytest
from _images import write_images
from click.testing import CliRunner

from srexport.cli import Duration, main
from srexport.errors import EXIT_INCOMPLETE, EXIT_MISSING_BACKEND, EXIT_USER_ERROR


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return invoke


def test_every_command_help_has_an_example(run):
    result = run("--help")
    assert result.exit_code == 0 and "Exit codes" in result.output
    for command in main.commands:
        out = run(command, "--help")
        assert out.exit_code == 0 and "Example:" in out.output, command


def test_list_json(run):
    rows = json.loads(run("list", "--json").output)
    names = [r["network"] for r in rows]
    assert names == ["srcnn", "srcnn_955", "fsrcnn", "fsrcnn_s", "espcn", "vdsr", "drcn", "red"]
    vdsr = rows[names.index("vdsr")]
    assert vdsr["gmacs_1280x720"]["2"] == pytest.approx(612.6, abs=0.1)  # published 612.6 G
    assert vdsr["published_set5_psnr"]["3"] == 33.66
    table = run("list").output
    assert "srcnn_955" in table and "52.7" in table  # SRCNN 9-5-5: published 52.7 G


def test_export_info_verify_round_trip(run, tmp_path):
    out = run("export", "fsrcnn", "--scale", 2, "--random-weights", "-o", "f.onnx", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["verification"]["passed"] and data["verification"]["cases"][0]["max_abs"] <= 1e-4
    assert (tmp_path / "f.verify.json").is_file()
    info = json.loads(run("info", "f.onnx", "--json").output)
    assert info["network"] == "fsrcnn" and info["scale"] == 2 and info["kind"] == "onnx"
    again = run("verify", "f.onnx")
    assert again.exit_code == 0 and "PASS" in again.output


def test_user_mistakes_are_one_line_errors(run, tmp_path):
    cases = [
        (("export", "nope", "--scale", 2, "--random-weights"), "unknown network 'nope'"),
        (("export", "espcn", "--scale", 5, "--random-weights"), "scale must be one of"),
        (("export", "espcn", "--scale", 2, "--checkpoint", "missing.safetensors"), "missing.safetensors: no such file"),
        (("info", "missing.onnx"), "missing.onnx: no such file"),
        (("info", "setup.txt"), "no such file"),
        (("verify", "missing.engine"), "missing.engine: no such file"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == EXIT_USER_ERROR, args
        assert message in result.output and "Traceback" not in result.output
        assert result.output.strip().count("\n") == 0, result.output
    (tmp_path / "taken.onnx").write_bytes(b"keep")
    result = run("export", "espcn", "--scale", 2, "--random-weights", "-o", "taken.onnx")
    assert result.exit_code == EXIT_USER_ERROR and "already exists" in result.output
    assert (tmp_path / "taken.onnx").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]  # nothing half-written


def test_build_onnx_only_and_without_tensorrt(run, tmp_path):
    out = run("build", "espcn", "--scale", 3, "--random-weights", "--fp16", "--onnx-only")
    assert out.exit_code == 0, out.output
    assert "onnx-fp16" in out.output and "PSNR" in out.output
    try:
        import tensorrt  # noqa: F401
        return
    except ImportError:
        pass
    out = run("build", "espcn", "--scale", 3, "--random-weights", "--fp16", "--engine", "tensorrt")
    assert out.exit_code == EXIT_MISSING_BACKEND
    assert "TensorRT is not installed" in out.output and "pip install 'srexport[tensorrt]'" in out.output
    assert (tmp_path / "engines" / "espcn_x3.fp16.onnx").is_file()


def test_build_bad_shape_is_a_user_error(run):
    out = run("build", "espcn", "--scale", 2, "--random-weights", "--max-shape", "big")
    assert out.exit_code == EXIT_USER_ERROR and "bad shape 'big'" in out.output


@pytest.mark.parametrize("text, seconds", [("540", 540), ("540s", 540), ("9m", 540), ("1.5h", 5400), (" 2M ", 120)])
def test_duration_reads_seconds_minutes_and_hours(text, seconds):
    assert Duration().convert(text, None, None) == seconds


def test_train_eval_record_info(run, tmp_path):
    data = write_images(tmp_path / "data")
    out = run("train", "fsrcnn_s", "--scale", 2, "--data", data, "--epochs", 2, "--batch-size", 4,
              "-o", "m.safetensors")
    assert out.exit_code == 0, out.output
    assert "best val PSNR" in out.output
    assert (tmp_path / "m.safetensors").is_file() and (tmp_path / "m.curve.png").is_file()
    report = run("eval", "m.safetensors", "--data", data, "--json", "--record")
    assert report.exit_code == 0, report.output
    measured = json.loads(report.output)
    assert measured["scale"] == 2 and len(measured["images"]) == 4
    info = json.loads(run("info", "m.safetensors", "--json").output)
    assert info["metrics"]["data"]["psnr"] == pytest.approx(measured["psnr"], abs=1e-3)
    assert info["training"]  # provenance recorded by train
    text = run("info", "m.safetensors").output  # for people: history summarised, each set on a line
    assert "history: 2 epochs, validation PSNR" in text and '"val_psnr"' not in text
    assert f"data: PSNR {measured['psnr']:.2f} dB" in text
    bad = run("train", "fsrcnn_s", "--scale", 2, "--data", tmp_path / "nowhere", "-o", "n.safetensors")
    assert bad.exit_code == EXIT_USER_ERROR and "nowhere" in bad.output
    resumed = run("train", "--resume", "m.safetensors", "--epochs", 3, "--precision", "bf16")
    assert resumed.exit_code == EXIT_USER_ERROR
    assert "cannot change the precision when resuming (fp32 -> bf16)" in resumed.output
    limited = run("train", "--resume", "m.safetensors", "--epochs", 4, "--time-limit", "0.001s")
    assert limited.exit_code == EXIT_INCOMPLETE, limited.output
    assert "stopped at the time limit after epoch 3 of 4; continue with: srexport train --resume" in limited.output
    finished = run("train", "--resume", "m.safetensors", "--time-limit", "1h")
    assert finished.exit_code == 0 and "time limit" not in finished.output
    both = run("train", "srcnn", "--scale", "2,3", "--data", data, "--epochs", 1, "--batch-size", 4,
               "--steps-per-epoch", 2, "-o", "s_x{scale}.safetensors")
    assert both.exit_code == 0, both.output
    assert (tmp_path / "s_x2.safetensors").is_file() and (tmp_path / "s_x3.safetensors").is_file()
    assert "history: 1 epochs, validation PSNR (mean over the scales)" in run("info", "s_x3.safetensors").output
    two = run("train", "srcnn", "--scale", "two", "--data", data)
    assert two.exit_code == 2 and "'two' is not a scale or a list of scales (e.g. 3, or 2,3,4)" in two.output
    fitted = run("train", "fsrcnn_s", "--scale", 2, "--data", data, "--epochs", 1, "--batch-size", 4,
                 "--time-budget", "5s", "-o", "f.safetensors")
    assert fitted.exit_code == 0, fitted.output
    training = json.loads(run("info", "f.safetensors", "--json").output)["training"]
    assert training["time_budget"]["seconds"] == 5.0 and training["steps_per_epoch"] >= 1
    clash = run("train", "fsrcnn_s", "--scale", 2, "--data", data, "--time-budget", "9m", "--steps-per-epoch", 3,
                "-o", "g.safetensors")
    assert clash.exit_code == EXIT_USER_ERROR
    assert clash.output.strip() == "error: a time budget sets the steps per epoch; give one or the other"
    soon = run("train", "--resume", "m.safetensors", "--time-limit", "soon")
    assert soon.exit_code == 2 and "'soon' is not a duration (e.g. 540, 9m, 1.5h)" in soon.output
    bf16 = run("train", "fsrcnn_s", "--scale", 2, "--data", data, "--epochs", 1, "--batch-size", 4,
               "--steps-per-epoch", 3, "--precision", "bf16", "--context", 1, "-o", "b.safetensors")
    assert bf16.exit_code == 0, bf16.output
    training = json.loads(run("info", "b.safetensors", "--json").output)["training"]
    assert training["precision"] == "bf16" and training["steps_per_epoch"] == 3
    assert training["data"]["context"] == 1 and training["data"]["lr_patch"] == 16  # 36-pixel images, 18-pixel windows
    tuned = run("train", "fsrcnn_s", "--scale", 3, "--data", data, "--epochs", 1, "--batch-size", 4,
                "--steps-per-epoch", 2, "--step-epochs", 1, "--init-from", "m.safetensors", "-o", "t.safetensors")
    assert tuned.exit_code == 0, tuned.output
    training = json.loads(run("info", "t.safetensors", "--json").output)["training"]
    assert training["init_from"]["path"] == str(tmp_path / "m.safetensors") and training["init_from"]["scale"] == 2
    assert training["recipe"]["step_epochs"] == 1
    missing = run("train", "fsrcnn_s", "--scale", 3, "--data", data, "--init-from", "none.safetensors",
                  "-o", "u.safetensors")
    assert missing.exit_code == EXIT_USER_ERROR and "none.safetensors" in missing.output
