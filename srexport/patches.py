"""Training patches from any folder of images, made by the same protocol as evaluation.

Every training image is reduced to its 8-bit Y channel (`data.y_channel`), modcropped, and its LR
made with `data.imresize(hr_y, 1/scale)` rounded to 8 bits: exactly `data.protocol_pair`. The LR
is made from the whole image once, then aligned patch pairs are cut from it (LR patch `p` at LR
position (i, j) <-> HR patch `p*scale` at (i*scale, j*scale)), so patch borders are real image
content, not resampling artefacts. Patches live in memory as uint8 arrays.

With `context` c > 0 each LR patch is cut with c more LR pixels of the real image on every side
(the HR window likewise), and the loss mask of a batch leaves that margin out: the network sees
the pixels around a patch as it sees them inside a whole image at evaluation, instead of its
mirrored bicubic and zero-padded borders. Where a window touches the image's own edge the mask
reaches that edge, so image borders are still trained as they are evaluated; windows are placed
so that every image edge is reached.

Augmentation is the dihedral group: each sample of a batch gets one of the 8 flips/90-degree
rotations, the same one for its LR and HR patch. Since MATLAB's bicubic is symmetric and
modcropped images map pixel centres symmetrically, a transformed pair is still exactly
(HR', imresize(HR', 1/scale)) for the transformed image.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .atomic import atomic_output
from .data import imresize, list_images, load_image, modcrop, round_uint8, y_channel
from .errors import SRExportError

CACHE_VERSION = 2


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """Transform `k` (0..7) of the dihedral group on the last two axes of `a`.

    Bit 2 of k: mirror left-right first; k & 3: then that many counter-clockwise 90-degree turns.
    k = 0 is the identity.
    """
    if k & 4:
        a = a[..., ::-1]
    return np.rot90(a, k & 3, axes=(-2, -1))


def split_holdout(paths: Sequence[str | os.PathLike], n_val: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Split `paths` into (train, val) with `n_val` images held out, chosen by `seed`.

    Both lists keep the input order; the same paths, n_val and seed always give the same split.
    """
    paths = [Path(p) for p in paths]
    if n_val < 1:
        raise SRExportError(f"hold out at least one image for validation, got n_val={n_val}")
    if n_val >= len(paths):
        raise SRExportError(
            f"cannot hold out {n_val} of {len(paths)} training images for validation and keep any "
            "for training; add images or pass a validation folder"
        )
    rng = np.random.default_rng(seed)
    held = set(rng.choice(len(paths), size=n_val, replace=False).tolist())
    train = [p for i, p in enumerate(paths) if i not in held]
    val = [p for i, p in enumerate(paths) if i in held]
    return train, val


def default_holdout(n_images: int) -> int:
    """How many images to hold out when no validation folder is given: 5%, 1 to 5 images."""
    return max(1, min(5, round(n_images * 0.05)))


@dataclass
class PatchSet:
    """Aligned uint8 patch pairs: `lr` (N, w, w) and `hr` (N, w*scale, w*scale), w = p + 2 * context,
    with `edges` (N, 4) saying which of a window's sides (top, bottom, left, right) are image edges."""

    lr: np.ndarray
    hr: np.ndarray
    scale: int
    augment: bool = True
    origins: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int32))  # image, factor, row, col (LR)
    sources: list[str] = field(default_factory=list)  # image names, indexed by origins[:, 0]
    factors: tuple[float, ...] = (1.0,)  # HR pre-scaling factors, indexed by origins[:, 1]
    context: int = 0  # LR pixels of real image around each patch, seen by the network, out of the loss
    edges: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), bool))

    # ------------------------------------------------------------------ building

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, scale: int, hr_patch: int, stride: int, *,
                    augment: bool = True, cache_dir: str | os.PathLike | None = None,
                    resize_factors: Sequence[float] = (1.0,), context: int = 0) -> PatchSet:
        """Patches from every image directly inside `folder` (see `from_paths`)."""
        return cls.from_paths(list_images(folder), scale, hr_patch, stride, augment=augment,
                              cache_dir=cache_dir, resize_factors=resize_factors, context=context)

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike], scale: int, hr_patch: int, stride: int, *,
                   augment: bool = True, cache_dir: str | os.PathLike | None = None,
                   resize_factors: Sequence[float] = (1.0,), context: int = 0) -> PatchSet:
        """Cut aligned patch pairs from `paths`.

        LR patch size is `hr_patch // scale` and the HR patch is that times `scale` (33 at x2 gives
        16 / 32). `stride` is in HR pixels and is rounded to a whole number of LR pixels.
        `resize_factors` (e.g. FSRCNN's 1.0, 0.9, ..., 0.6) add copies of every image bicubic-
        downscaled by each factor (8-bit) before modcrop and LR generation. `context` (LR pixels)
        widens every window by that margin of real image on each side (see the module docstring).
        `cache_dir` keeps the arrays as an .npz keyed by the files, sizes, mtimes and settings.
        """
        paths = [Path(p) for p in paths]
        if not paths:
            raise SRExportError("no training images given")
        scale, hr_patch, stride = int(scale), int(hr_patch), int(stride)
        lp = hr_patch // scale
        if lp < 1:
            raise SRExportError(f"HR patch {hr_patch} is smaller than the scale {scale}")
        if stride < 1:
            raise SRExportError(f"patch stride must be at least 1, got {stride}")
        ls = max(1, round(stride / scale))
        context = int(context)
        if context < 0:
            raise SRExportError(f"patch context must be 0 or more LR pixels, got {context}")
        factors = tuple(float(f) for f in resize_factors)
        if not factors or any(not 0 < f <= 1 for f in factors):
            raise SRExportError(f"resize factors must lie in (0, 1], got {resize_factors}")

        cache_file = None
        if cache_dir is not None:
            key = _cache_key(paths, scale, lp, ls, factors, context)
            cache_file = Path(cache_dir) / f"patches-{key}.npz"
            if cache_file.is_file():
                try:
                    with np.load(cache_file, allow_pickle=False) as z:
                        return cls(z["lr"], z["hr"], scale, augment, z["origins"],
                                   [p.name for p in paths], factors, context, z["edges"])
                except (OSError, ValueError, KeyError):
                    pass  # unreadable cache: rebuild it

        lrs, hrs, origins, edges = [], [], [], []
        largest = (0, 0)
        for i, path in enumerate(paths):
            y = y_channel(load_image(path))
            largest = max(largest, y.shape, key=min)
            for fi, f in enumerate(factors):
                yf = y if f == 1.0 else round_uint8(imresize(y, f))
                lr_p, hr_p, pos, edge = _cut(yf, scale, lp, ls, context)
                if len(pos):
                    lrs.append(lr_p)
                    hrs.append(hr_p)
                    origins.append(np.column_stack([np.full(len(pos), i), np.full(len(pos), fi), pos]))
                    edges.append(edge)
        if not lrs:
            hw = (lp + 2 * context) * scale
            folders = sorted({str(p.parent) for p in paths})
            where = folders[0] if len(folders) == 1 else f"{len(paths)} training images"
            raise SRExportError(
                f"{where}: no training image is at least {hw}x{hw} pixels, the HR window at x{scale}"
                f"{f' with context {context}' if context else ''} (the largest is {largest[1]}x{largest[0]})")
        lr = np.concatenate(lrs)
        hr = np.concatenate(hrs)
        org = np.concatenate(origins).astype(np.int32)
        edge = np.concatenate(edges)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(cache_file, force=True) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, lr=lr, hr=hr, origins=org, edges=edge)
        return cls(lr, hr, scale, augment, org, [p.name for p in paths], factors, context, edge)

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.lr)

    @property
    def lr_patch(self) -> int:
        """LR size of the patch in the loss (the window less its context)."""
        return self.lr.shape[-1] - 2 * self.context

    @property
    def hr_patch(self) -> int:
        return self.lr_patch * self.scale

    @property
    def images_used(self) -> int:
        """How many source images gave at least one window (smaller ones give none)."""
        return len(np.unique(self.origins[:, 0]))

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches in one pass over the patches (the last one may be short)."""
        return math.ceil(len(self) / batch_size)

    def loss_mask(self, indices: np.ndarray) -> np.ndarray:
        """uint8 (B, w*s, w*s): 1 where the loss counts, for `indices` untransformed. The context
        margin is left out on every side of a window that is not an image edge."""
        e = self.edges[np.asarray(indices)]
        w, m = self.hr.shape[-1], self.context * self.scale
        rows = np.ones((len(e), w), np.uint8)
        cols = np.ones((len(e), w), np.uint8)
        for side, lines, part in ((0, rows, np.s_[:m]), (1, rows, np.s_[w - m:]),
                                  (2, cols, np.s_[:m]), (3, cols, np.s_[w - m:])):
            lines[~e[:, side], part] = 0
        return rows[:, :, None] * cols[:, None, :]

    def batch(self, indices: np.ndarray, transforms: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """uint8 (B, 1, w, w) LR, (B, 1, w*s, w*s) HR and the loss mask of the same shape (None
        without context) for `indices`, each sample transformed by its dihedral transform (0..7;
        None = identity). Vectorised: one gather per transform."""
        indices = np.asarray(indices)
        b = len(indices)
        lr = np.empty((b, 1) + self.lr.shape[1:], np.uint8)
        hr = np.empty((b, 1) + self.hr.shape[1:], np.uint8)
        masks = self.loss_mask(indices) if self.context else None
        mask = None if masks is None else np.empty_like(hr)
        if transforms is None:
            lr[:, 0] = self.lr[indices]
            hr[:, 0] = self.hr[indices]
            if mask is not None:
                mask[:, 0] = masks
            return lr, hr, mask
        transforms = np.asarray(transforms)
        order = np.argsort(transforms, kind="stable")
        sorted_t = transforms[order]
        bounds = np.searchsorted(sorted_t, np.arange(9))
        for k in range(8):
            sel = order[bounds[k]:bounds[k + 1]]
            if len(sel):
                idx = indices[sel]
                lr[sel, 0] = dihedral(self.lr[idx], k)
                hr[sel, 0] = dihedral(self.hr[idx], k)
                if mask is not None:
                    mask[sel, 0] = dihedral(masks[sel], k)
        return lr, hr, mask

    def epoch_plan(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A permutation of the patches and one dihedral transform per position, drawn up front
        from `rng` so that a run cut short (steps_per_epoch) consumes the same random numbers."""
        perm = rng.permutation(len(self))
        transforms = rng.integers(0, 8, size=len(self)) if self.augment else np.zeros(len(self), np.int64)
        return perm, transforms

    def batches(self, batch_size: int, rng: np.random.Generator, *,
                steps: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """One epoch: shuffled uint8 (LR, HR, loss mask) batches, as `batch` gives them.

        A full pass over the patches by default (the last batch may be short); with `steps`, exactly
        that many batches, wrapping around into a fresh permutation when the patches run out.
        """
        for indices, transforms in self._plan(batch_size, rng, steps):
            yield self.batch(indices, transforms)

    def shards(self, batch_size: int, rng: np.random.Generator, rank: int, world: int, *,
               steps: int | None = None) -> Iterator[tuple[tuple, float]]:
        """Process `rank`'s part of each of `batches`' batches when `world` processes train together,
        with the share of the batch's loss that part carries: (batch, share) per step.

        Every process draws the same plan from the same `rng` state, as one process would, and takes
        its consecutive slice of each batch (sizes differ by at most one); the share is its samples'
        fraction of the batch, or, with context, its loss-mask pixels' fraction. Losses weighted by
        their shares and summed over the processes are the batch's loss (steps.train_step), so the
        processes train as one process on the whole batch, and a run may be resumed with another
        number of processes. A process left without a sample (a last batch smaller than `world`)
        gets a stand-in sample with share 0."""
        if not 0 <= rank < world:
            raise SRExportError(f"process rank {rank} is not in 0..{world - 1}")
        for indices, transforms in self._plan(batch_size, rng, steps):
            mine = np.array_split(np.arange(len(indices)), world)[rank]
            if not len(mine):
                yield self.batch(indices[:1], None if transforms is None else transforms[:1]), 0.0
                continue
            batch = self.batch(indices[mine], None if transforms is None else transforms[mine])
            if self.context:  # a transform moves mask pixels but keeps their count
                counts = self.loss_mask(indices).reshape(len(indices), -1).sum(axis=1, dtype=np.int64)
                share = float(counts[mine].sum()) / float(counts.sum())
            else:
                share = len(mine) / len(indices)
            yield batch, share

    def _plan(self, batch_size: int, rng: np.random.Generator, steps: int | None
              ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """The (indices, transforms) of each batch of an epoch (see `batches`)."""
        if batch_size < 1:
            raise SRExportError(f"batch size must be at least 1, got {batch_size}")
        total = self.steps_per_epoch(batch_size) if steps is None else int(steps)
        perm, transforms = self.epoch_plan(batch_size, rng)
        pos = 0
        for _ in range(total):
            if pos >= len(perm):
                perm, transforms = self.epoch_plan(batch_size, rng)
                pos = 0
            end = min(pos + batch_size, len(perm))
            yield perm[pos:end], (transforms[pos:end] if self.augment else None)
            pos = end


def _starts(n: int, w: int, step: int, to_edge: bool) -> np.ndarray:
    """Window starts along an axis of n LR pixels; with `to_edge` the last window ends at the edge."""
    starts = list(range(0, n - w + 1, step))
    if to_edge and starts[-1] != n - w:
        starts.append(n - w)
    return np.array(starts)


def _cut(hr_y: np.ndarray, scale: int, lp: int, ls: int, context: int = 0
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Aligned uint8 windows (w = lp + 2 * context) from one Y image: (n, w, w), (n, w*s, w*s),
    LR positions (n, 2) and which sides are image edges (n, 4: top, bottom, left, right)."""
    hr = modcrop(hr_y, scale)
    w = lp + 2 * context
    if hr.shape[0] < w * scale or hr.shape[1] < w * scale:
        return (np.zeros((0, w, w), np.uint8), np.zeros((0, w * scale, w * scale), np.uint8),
                np.zeros((0, 2), int), np.zeros((0, 4), bool))
    lr = round_uint8(imresize(hr, 1 / scale)).astype(np.uint8)
    hr = hr.astype(np.uint8)
    rows = _starts(lr.shape[0], w, ls, context > 0)
    cols = _starts(lr.shape[1], w, ls, context > 0)
    lr_w = sliding_window_view(lr, (w, w))[np.ix_(rows, cols)]
    hr_w = sliding_window_view(hr, (w * scale, w * scale))[np.ix_(rows * scale, cols * scale)]
    r, c = np.meshgrid(rows, cols, indexing="ij")
    pos = np.stack([r, c], -1).reshape(-1, 2)
    edges = np.stack([r == 0, r == lr.shape[0] - w, c == 0, c == lr.shape[1] - w], -1).reshape(-1, 4)
    return (np.ascontiguousarray(lr_w.reshape(-1, w, w)),
            np.ascontiguousarray(hr_w.reshape(-1, w * scale, w * scale)), pos, edges)


def _cache_key(paths: list[Path], scale: int, lp: int, ls: int, factors: tuple[float, ...], context: int) -> str:
    files = []
    for p in paths:
        st = p.stat()
        files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps([CACHE_VERSION, files, scale, lp, ls, factors, context]).encode()
    return hashlib.sha256(blob).hexdigest()[:20]
