"""benchmarks/train_step.py runs and writes its table (tiny settings; the real figures come from full runs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "train_step.py"


def test_train_step_benchmark_writes_a_row_per_network(tmp_path):
    out = tmp_path / "TRAINING.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--networks", "espcn", "fsrcnn_s", "--rounds", "1",
                           "--seconds", "0.05", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith(("| espcn ", "| fsrcnn_s "))]
    assert len(rows) == 2
    for row in rows:  # network | batch | window | fp32 ms | bf16 ms | speed-up | fp32 patches/s | bf16 patches/s
        cells = [c.strip() for c in row.strip("|").split("|")]
        fp32_ms, bf16_ms = float(cells[3]), float(cells[4])
        assert cells[1] == "16" and fp32_ms > 0 and bf16_ms > 0
        assert re.fullmatch(r"\d+\.\d\dx", cells[5])
        assert abs(float(cells[5][:-1]) - fp32_ms / bf16_ms) < 0.02 + 0.01 * fp32_ms / bf16_ms
