"""Imports that survive the folder they came from going away.

In thread mode every job on a TaskManager shares one interpreter, and each job's shipped code
(the project's zip, a service's ``code``) is extracted into a folder of that job's, which Flink
deletes when the job ends or restarts. The project's packages stay imported from the first
job's folder, so once it is gone a submodule not imported yet (``jobs.score`` for a scoring
job submitted later) is looked for in a folder that no longer exists. The finder installed
here takes over then: it looks for the module in the same package under the other entries of
``sys.path`` (the folders of the jobs still running, which ship the same code) and points the
package there.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence


class RelocatingFinder(importlib.abc.MetaPathFinder):
    """Finds ``pkg.mod`` when every folder of ``pkg.__path__`` is gone, in a live copy of
    ``pkg`` on ``sys.path``; called only after the regular finders found nothing."""

    def __init__(self, packages: Sequence[str]) -> None:
        self.packages = frozenset(packages)

    def find_spec(self, fullname, path=None, target=None):
        parent_name, _, _ = fullname.rpartition(".")
        if not parent_name or fullname.split(".", 1)[0] not in self.packages:
            return None
        parent = sys.modules.get(parent_name)
        here = list(getattr(parent, "__path__", None) or ())
        if parent is None or any(os.path.isdir(p) for p in here):
            return None  # the package's folder is there: the module is really missing
        live = _live_copy(parent_name)
        if live is None:
            return None
        _repoint(parent_name, live)
        return importlib.machinery.PathFinder.find_spec(fullname, [live])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RelocatingFinder) and other.packages == self.packages

    def __hash__(self) -> int:
        return hash(self.packages)


def _live_copy(package: str) -> str | None:
    rel = package.replace(".", os.sep)
    for entry in sys.path:
        candidate = os.path.join(entry or os.curdir, rel)
        if os.path.isfile(os.path.join(candidate, "__init__.py")):
            return candidate
    return None


def _repoint(package: str, folder: str) -> None:
    """``package`` and its enclosing packages now live under ``folder``'s root."""
    parts = package.split(".")
    root = folder
    for _ in parts:
        root = os.path.dirname(root)
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        module = sys.modules.get(name)
        if module is None or not hasattr(module, "__path__"):
            continue
        where = os.path.join(root, *parts[:i])
        if any(os.path.isdir(p) for p in module.__path__):
            continue
        module.__path__[:] = [where]
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.submodule_search_locations is not None:
            spec.submodule_search_locations[:] = [where]


def install(packages: Sequence[str]) -> None:
    """Add the finder for ``packages`` at the end of ``sys.meta_path`` (once)."""
    finder = RelocatingFinder(packages)
    if finder not in sys.meta_path:
        sys.meta_path.append(finder)
