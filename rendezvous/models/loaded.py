"""One loaded model: the functions that score with it, its version, and its files on disk."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class _Loaded:
    """One loaded model: what scores, which version, and the folder to remove afterwards."""

    version: str
    kind: str  # "sklearn" | "pyfunc" | "python"
    predict: Callable[[Mapping[str, Any]], Any]
    folder: str | None = None
    # Many rows in one call (a vectorised predict); None: one ``predict`` call per row.
    predict_many: Callable[[list[Mapping[str, Any]]], list[Any]] | None = None

    def discard(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
