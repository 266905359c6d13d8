"""Import torch-side libraries safely on CPU-only machines.

The torchvision wheel that matches torch 2.13.0 here cannot load its compiled ops, and its meta
registrations then fail with "operator torchvision::nms does not exist" as soon as open_clip (via
timm/torchvision) is imported. Defining the two op schemas it looks up first makes the import work;
nothing in this project calls those ops.
"""
from __future__ import annotations

import torch

_SHIM = None


def install_torchvision_shim() -> None:
    global _SHIM
    if _SHIM is not None:
        return
    try:
        import torchvision  # noqa: F401  # works where the compiled ops load
        _SHIM = False
        return
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _SHIM = library


def import_open_clip():
    install_torchvision_shim()
    import open_clip

    return open_clip
