"""Export presets: model choices kept as data (one JSON file per preset in this folder)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from export.errors import ExportError

PRESET_DIR = Path(__file__).parent


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise ExportError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    return copy.deepcopy(json.loads(path.read_text()))
