"""Published PSNR / SSIM figures (REFERENCE.md section 3) as data.

All figures are Y-channel PSNR (dB) / SSIM with a `scale`-pixel border, by the bicubic protocol,
except ESPCN's, whose paper made its LR images with a Gaussian blur and subsampling.

`published(network, scale, dataset)` answers with the figure that a network trained by srexport
should be compared with, or None when no paper gives one for that network, scale and set.
"""

from __future__ import annotations

DATASETS = ("Set5", "Set14")

# (scale, dataset) -> (PSNR, SSIM)
_BICUBIC = {
    (2, "Set5"): (33.66, 0.9299), (2, "Set14"): (30.24, 0.8688),
    (3, "Set5"): (30.39, 0.8682), (3, "Set14"): (27.55, 0.7742),
    (4, "Set5"): (28.42, 0.8104), (4, "Set14"): (26.00, 0.7027),
}

# Table rows by method: (scale, dataset) -> (PSNR, SSIM or None)
_SRCNN_955 = {
    (2, "Set5"): (36.66, 0.9542), (2, "Set14"): (32.42, 0.9063),
    (3, "Set5"): (32.75, 0.9090), (3, "Set14"): (29.28, 0.8209),
    (4, "Set5"): (30.48, 0.8628), (4, "Set14"): (27.49, 0.7503),
}
_SRCNN_915_T91 = {(3, "Set5"): (32.39, None)}
_FSRCNN = {
    (2, "Set5"): (37.00, 0.9558), (2, "Set14"): (32.63, 0.9088),
    (3, "Set5"): (33.16, 0.9140), (3, "Set14"): (29.43, 0.8242),
    (4, "Set5"): (30.71, 0.8657), (4, "Set14"): (27.59, 0.7535),
}
_FSRCNN_T91 = {(2, "Set5"): 36.94, (3, "Set5"): 33.06, (4, "Set5"): 30.55}
_ESPCN_GAUSSIAN = {
    (3, "Set5"): (33.13, None), (3, "Set14"): (29.49, None),
    (4, "Set5"): (30.90, None), (4, "Set14"): (27.73, None),
}
_VDSR = {
    (2, "Set5"): (37.53, 0.9587), (2, "Set14"): (33.03, 0.9124),
    (3, "Set5"): (33.66, 0.9213), (3, "Set14"): (29.77, 0.8314),
    (4, "Set5"): (31.35, 0.8838), (4, "Set14"): (28.01, 0.7674),
}
_DRCN = {
    (2, "Set5"): (37.63, 0.9588), (2, "Set14"): (33.04, 0.9118),
    (3, "Set5"): (33.82, 0.9226), (3, "Set14"): (29.76, 0.8311),
    (4, "Set5"): (31.53, 0.8854), (4, "Set14"): (28.02, 0.7670),
}

# network -> (table, source words, note)
_TABLES = {
    "srcnn": (
        _SRCNN_915_T91,
        "SRCNN 9-1-5 trained on the 91 images (Dong et al., ECCV 2014)",
        "the paper's 91-image 9-1-5 figure; the table's SRCNN rows are the 9-5-5 ImageNet model (srcnn_955)",
    ),
    "srcnn_955": (
        _SRCNN_955,
        "SRCNN 9-5-5 trained on ImageNet (Dong et al., TPAMI 2016)",
        "trained on ImageNet, not on the 91 images",
    ),
    "fsrcnn": (
        _FSRCNN,
        "FSRCNN (56,12,4) trained on 91 images + General-100 (Dong et al., ECCV 2016)",
        "t91_psnr is the paper's 91-image-only figure (Set5 only)",
    ),
    "espcn": (
        _ESPCN_GAUSSIAN,
        "ESPCN trained on ImageNet with Gaussian-blurred LR (Shi et al., CVPR 2016)",
        "not the bicubic protocol: the paper made LR with a Gaussian blur and subsampling, "
        "so a bicubic-trained model is not directly comparable",
    ),
    "vdsr": (
        _VDSR,
        "VDSR trained on 291 images, one model for x2/x3/x4 (Kim et al., CVPR 2016)",
        "291-image multi-scale model",
    ),
    "drcn": (
        _DRCN,
        "DRCN trained on 91 images (Kim et al., CVPR 2016)",
        "91-image model, 16 recursions",
    ),
}
_UNPUBLISHED = {
    "fsrcnn_s": "no published Set5/Set14 table figure for FSRCNN-s in REFERENCE.md",
    "red": "srexport's RED is an LR-input variant; the paper's RED30 figures do not apply",
}


def canonical_dataset(dataset: str) -> str | None:
    """'set5' / 'Set5' / 'SET5' -> 'Set5'; None for a set without published figures."""
    for name in DATASETS:
        if str(dataset).lower() == name.lower():
            return name
    return None


def published(network: str, scale: int, dataset: str) -> dict | None:
    """The published figure for `network` at `scale` on `dataset`, or None.

    Returns {"network", "scale", "dataset", "psnr", "ssim" (None when not given), "protocol"
    ("bicubic" or "gaussian"), "source", "note"} and, for fsrcnn, "t91_psnr" (None where the
    paper gives none).
    """
    name = canonical_dataset(dataset)
    if name is None or network not in _TABLES:
        return None
    table, source, note = _TABLES[network]
    row = table.get((int(scale), name))
    if row is None:
        return None
    result = {
        "network": network,
        "scale": int(scale),
        "dataset": name,
        "psnr": row[0],
        "ssim": row[1],
        "protocol": "gaussian" if network == "espcn" else "bicubic",
        "source": source,
        "note": note,
    }
    if network == "espcn" and (int(scale), name) == (3, "Set5"):
        result["note"] += "; also quoted as 33.00"
    if network == "fsrcnn":
        result["t91_psnr"] = _FSRCNN_T91.get((int(scale), name))
    return result


def unpublished_reason(network: str) -> str | None:
    """Why a network has no published figure at all (fsrcnn_s, red); None otherwise."""
    return _UNPUBLISHED.get(network)


def bicubic(scale: int, dataset: str) -> dict | None:
    """The published bicubic row: {"psnr", "ssim", "scale", "dataset"}, or None."""
    name = canonical_dataset(dataset)
    row = _BICUBIC.get((int(scale), name)) if name else None
    if row is None:
        return None
    return {"scale": int(scale), "dataset": name, "psnr": row[0], "ssim": row[1]}
