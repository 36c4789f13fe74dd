"""The networks. Importing a module registers its builders; the order here is the listing order."""

from . import srcnn, fsrcnn, espcn, vdsr, drcn, red  # noqa: F401  (registration by import)
from ._registry import SCALES, NetworkSpec, build, check_scale, get_spec, list_networks
from .bicubic import MatlabBicubicUpsample

__all__ = ["SCALES", "NetworkSpec", "build", "check_scale", "get_spec", "list_networks", "MatlabBicubicUpsample"]
