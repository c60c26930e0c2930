"""The zip of the project's code that every job carries: what it holds, that it is built once
per version, and that a worker with only the zip on its path imports the project from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rendezvous import shipping
from rendezvous.settings import REPO_ROOT


def make_tree(root: Path) -> Path:
    (root / "pkg" / "sub" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "__init__.py").write_text("VALUE = 1\n")
    (root / "pkg" / "data.avsc").write_text("{}\n")
    (root / "pkg" / "sub" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "pkg" / "stale.pyc").write_bytes(b"\0")
    (root / "other").mkdir()
    (root / "other" / "__init__.py").write_text("")
    return root


def test_the_zip_holds_the_packages_files_and_no_compiled_ones(tmp_path):
    root = make_tree(tmp_path / "src")
    built = shipping.ensure_zip(tmp_path / "ship", root, packages=("pkg",))
    with zipfile.ZipFile(built) as zf:
        assert sorted(zf.namelist()) == [
            "pkg/__init__.py",
            "pkg/data.avsc",
            "pkg/sub/__init__.py",
        ]
        assert zf.read("pkg/sub/__init__.py") == b"VALUE = 1\n"


def test_one_zip_per_version_and_a_changed_file_makes_a_new_one(tmp_path):
    root = make_tree(tmp_path / "src")
    ship = tmp_path / "ship"
    first = shipping.ensure_zip(ship, root, packages=("pkg",))
    mtime = first.stat().st_mtime_ns
    assert shipping.ensure_zip(ship, root, packages=("pkg",)) == first
    assert first.stat().st_mtime_ns == mtime  # not built again
    (root / "pkg" / "sub" / "__init__.py").write_text("VALUE = 2\n")
    second = shipping.ensure_zip(ship, root, packages=("pkg",))
    assert second != first and second.name.startswith("rendezvous-")
    assert sorted(p.name for p in ship.iterdir()) == sorted([first.name, second.name])


def test_the_same_files_make_the_same_bytes(tmp_path):
    a = shipping.ensure_zip(tmp_path / "a", make_tree(tmp_path / "src"), packages=("pkg",))
    os.utime(tmp_path / "src" / "pkg" / "data.avsc", (0, 0))  # times do not count
    b = shipping.ensure_zip(tmp_path / "b", tmp_path / "src", packages=("pkg",))
    assert a.name == b.name and a.read_bytes() == b.read_bytes()


def test_old_versions_beyond_the_last_few_are_removed(tmp_path):
    root = make_tree(tmp_path / "src")
    ship = tmp_path / "ship"
    built = []
    for i in range(shipping.KEEP + 2):
        (root / "pkg" / "data.avsc").write_text(f"{i}\n")
        built.append(shipping.ensure_zip(ship, root, packages=("pkg",)))
        os.utime(built[-1], (i, i))
    assert sorted(ship.iterdir()) == sorted(built[-shipping.KEEP :])


def test_a_folder_that_is_not_a_package_is_refused(tmp_path):
    (tmp_path / "pkg").mkdir()
    with pytest.raises(FileNotFoundError, match="not a Python package"):
        shipping.project_files(tmp_path, ("pkg",))


def test_the_projects_zip_alone_gives_a_python_without_the_checkout_the_project(tmp_path):
    """Extracted as Flink does on a worker, the zip is the only place the project is found:
    the interpreter runs isolated (-I -S: no PYTHONPATH, no site folders and so no editable
    install, not the checkout's folder), with the third-party packages on its path."""
    built = shipping.ensure_zip(tmp_path / "ship", REPO_ROOT)
    extracted = tmp_path / "worker" / built.stem
    with zipfile.ZipFile(built) as zf:
        zf.extractall(extracted)
    site = [p for p in sys.path if p.endswith("site-packages")]
    code = (
        "import sys; sys.path[:0] = sys.argv[1:]\n"
        "import fastavro, jobs.common, udfs.zoo, rendezvous\n"
        "from rendezvous import serde\n"
        "print(rendezvous.__file__, len(serde.Kind))\n"
    )

    def run(*paths: Path | str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-I", "-S", "-c", code, *map(str, paths)]
        return subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)

    without = run(*site)
    assert without.returncode != 0 and "No module named 'jobs'" in without.stderr, without
    done = run(extracted, *site)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == str(extracted / "rendezvous" / "__init__.py")
