"""Imports of the project's modules after the folder of the job that first imported them is
gone (a TaskManager's interpreter outlives the jobs that share it)."""

from __future__ import annotations

import importlib
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from rendezvous import relocate


def shipped(root: Path, package: str) -> Path:
    """One job's extracted copy of ``package``."""
    (root / package / "sub").mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "late.py").write_text("VALUE = 'late'\n")
    (root / package / "sub" / "__init__.py").write_text("")
    (root / package / "sub" / "mod.py").write_text("VALUE = 'mod'\n")
    return root


@pytest.fixture
def package(tmp_path, monkeypatch):
    name = "shipped_" + uuid.uuid4().hex[:8]
    first, second = shipped(tmp_path / "job-a", name), shipped(tmp_path / "job-b", name)
    monkeypatch.setattr(sys, "path", [str(first), str(second), *sys.path])
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    yield name, first, second
    for module in [m for m in sys.modules if m.split(".")[0] == name]:
        del sys.modules[module]


def test_without_the_finder_a_module_of_a_deleted_folder_is_lost(package):
    name, first, _ = package
    importlib.import_module(name)
    shutil.rmtree(first)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"{name}.late")


def test_with_the_finder_it_comes_from_the_copy_still_there(package):
    name, first, second = package
    relocate.install([name])
    relocate.install([name])  # once
    assert sum(isinstance(f, relocate.RelocatingFinder) for f in sys.meta_path) >= 1
    importlib.import_module(f"{name}.sub")
    shutil.rmtree(first)
    assert importlib.import_module(f"{name}.late").VALUE == "late"
    assert importlib.import_module(f"{name}.sub.mod").VALUE == "mod"
    assert Path(sys.modules[f"{name}.sub.mod"].__file__).is_relative_to(second)
    assert sys.modules[name].__path__ == [str(second / name)]
    with pytest.raises(ModuleNotFoundError):  # a module that is nowhere stays missing
        importlib.import_module(f"{name}.nowhere")


def test_other_packages_are_left_alone(package):
    name, first, _ = package
    relocate.install(["some_other_package"])
    importlib.import_module(name)
    shutil.rmtree(first)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"{name}.late")


def test_the_project_installs_it_for_its_packages():
    import rendezvous

    assert relocate.RelocatingFinder(rendezvous.PACKAGES) in sys.meta_path
