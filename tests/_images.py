"""Image-like test data the tests generate: smooth colour regions at several scales plus noise."""

from pathlib import Path

import numpy as np
from PIL import Image


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3))
    for cells in (4, 9, 23):
        coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
        img += np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float64)
    return np.clip(img / 3 + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def write_images(folder: Path, n: int = 4, size: tuple[int, int] = (40, 36), seed: int = 0) -> Path:
    """`n` PNG images of `size` (width, height) in `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(texture(rng, size[1], size[0])).save(folder / f"img{i}.png")
    return folder
