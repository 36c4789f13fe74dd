"""Explicit network registry: each network module registers its builders with `@register`.

A builder is a lowercase function `name(scale, **hparams) -> nn.Module`. Registration happens
by plain imports in `srexport/archs/__init__.py`; nothing scans folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import SRExportError

SCALES = (2, 3, 4)


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    builder: Callable[..., nn.Module]
    paper: str
    upsampling: str  # how the network reaches the output size, in words (goes into records)
    # True when the scale only sets the fixed bicubic upsampler inside the network, so one set of
    # weights serves every scale (VDSR's paper trains one model for x2, x3 and x4)
    scale_free_weights: bool = False


_REGISTRY: dict[str, NetworkSpec] = {}


def register(name: str, *, paper: str, upsampling: str, scale_free_weights: bool = False):
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"network {name!r} registered twice")
        _REGISTRY[name] = NetworkSpec(name, builder, paper, upsampling, scale_free_weights)
        return builder

    return decorator


def list_networks() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> NetworkSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SRExportError(
            f"unknown network {name!r}; known networks: {', '.join(_REGISTRY)}"
        ) from None


def check_scale(scale: int) -> int:
    if scale not in SCALES:
        raise SRExportError(f"scale must be one of {', '.join(map(str, SCALES))}, got {scale}")
    return int(scale)


def build(name: str, scale: int, **hparams) -> nn.Module:
    """Build network `name` at `scale`; `hparams` override the builder's defaults."""
    spec = get_spec(name)
    check_scale(scale)
    try:
        model = spec.builder(scale, **hparams)
    except TypeError as e:  # an unknown or mistyped hyperparameter
        raise SRExportError(f"{name}: bad hyperparameters {hparams}: {e}") from None
    model.network_name = name
    return model
