"""tools/quality_table.py: the README's quality table is the one the shipped records give, and the plot is drawn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("quality_table", ROOT / "tools" / "quality_table.py")
quality_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality_table)


def test_the_readme_table_is_the_one_the_shipped_records_give():
    readme = (ROOT / "README.md").read_text().splitlines()
    table = quality_table.table()
    start = readme.index(table[0])
    assert readme[start:start + len(table)] == table, "rerun python tools/quality_table.py and paste its table"
    assert len(table) == 2 + len(quality_table.shipped())


def test_each_checkpoint_is_held_to_its_paper_or_to_fsrcnn():
    assert quality_table.bar("vdsr", 2, "Set5") == 37.53
    assert quality_table.bar("espcn", 3, "Set14") == quality_table.bar("fsrcnn", 3, "Set14") == 29.43
    assert quality_table.bar("fsrcnn_s", 3, "Set5") is None


def test_the_plot_is_written_as_a_png(tmp_path):
    out = quality_table.plot(tmp_path / "quality.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1000, 640)
    assert list(tmp_path.iterdir()) == [out]  # written atomically: no temporary file left
