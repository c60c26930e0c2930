"""The project's own code, zipped once per version and shipped with every job.

A TaskManager needs the third-party packages (pyflink, fastavro, onnxruntime, mlflow,
scikit-learn, ...) in its Python, but not this project: every job carries a zip of the
packages its entry points import (``rendezvous``, ``jobs``, ``udfs`` and ``schemas``, with
their data files) through ``flink run -pyfs``. Flink extracts a shipped zip on the worker and
puts its root on the job's Python path, so files inside it (the Avro schemas) are read from
disk as in a checkout.

The zip is built from the files it holds and named by their digest
(``rendezvous-<digest>.zip`` under the state folder's ``ship/``), so it is built once per
version of the code and a change to any file makes a new one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from rendezvous import PACKAGES  # the top-level packages the job entry points import

_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
# Fixed member times: the same files always make the same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
# Older zips kept beside the newest (a job that is running has its own copy on the cluster).
KEEP = 5


def project_files(root: Path, packages: Iterable[str] = PACKAGES) -> list[Path]:
    """Every file of the packages under ``root``, relative to it, sorted; compiled files and
    ``__pycache__`` folders left out."""
    out = []
    for package in packages:
        base = root / package
        if not (base / "__init__.py").is_file():
            raise FileNotFoundError(f"{base} is not a Python package (no __init__.py)")
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
            for name in filenames:
                if not name.endswith(_SKIPPED_SUFFIXES):
                    out.append((Path(dirpath) / name).relative_to(root))
    return sorted(out, key=lambda p: p.as_posix())


def digest(root: Path, files: Iterable[Path]) -> str:
    """A digest of the files' paths and contents (16 hex digits)."""
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.as_posix().encode() + b"\0")
        h.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return h.hexdigest()[:16]


def zip_name(version: str) -> str:
    return f"rendezvous-{version}.zip"


def ensure_zip(cache_dir: Path, root: Path, packages: Iterable[str] = PACKAGES) -> Path:
    """The zip of the packages' current files in ``cache_dir``, built when no zip of this
    version is there yet (written aside and renamed, so concurrent submissions never see half
    a file); older versions beyond the last :data:`KEEP` are removed."""
    files = project_files(root, packages)
    target = cache_dir / zip_name(digest(root, files))
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".building-", suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for rel in files:
                info = zipfile.ZipInfo(rel.as_posix(), date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, (root / rel).read_bytes())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _prune(cache_dir, keep=target)
    return target


def _prune(cache_dir: Path, keep: Path) -> None:
    older = sorted(
        (p for p in cache_dir.glob(zip_name("*")) if p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for stale in older[KEEP - 1 :]:
        stale.unlink(missing_ok=True)
