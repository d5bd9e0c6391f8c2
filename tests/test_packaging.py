"""Packaging: one `frugal` namespace in site-packages, every package folder listed, the wheel carries
what the code reads, and a non-editable install imports from outside the checkout."""

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("jaxlib_ext", "transforms", "models", "accel", "scripts")


def package_folders() -> set[str]:
    found = set()
    for layer in LAYERS:
        for init in (REPO / layer).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO)
            found.add("frugal." + ".".join(relative.parts))
    return found


def test_pyproject_lists_every_package_folder_under_the_namespace():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == package_folders()
    assert config["package-dir"] == {f"frugal.{layer}": layer for layer in LAYERS}
    assert not (REPO / "frugal").exists()  # `frugal` is a namespace package: no folder of its own


def test_every_folder_under_the_layers_is_a_package():
    """A folder of .py files without __init__.py would be left out of the wheel."""
    for layer in LAYERS:
        for path in (REPO / layer).rglob("*.py"):
            assert (path.parent / "__init__.py").exists(), f"{path.parent} holds modules but no __init__.py"


def test_version_from_metadata():
    from importlib.metadata import version

    import frugal.scripts.cli as cli

    assert cli.__version__ == version("frugal-jax")


@pytest.mark.slow
def test_wheel_installs_one_namespace_and_imports_from_outside(tmp_path):
    """Build the wheel (pip, build isolation), check its file list, install it into a bare folder and
    import from a directory outside the checkout: frugal.* works, `models`/`scripts` do not exist."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(wheels)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("frugal_jax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"frugal"}
    assert "frugal/jaxlib_ext/csr_matmul.cc" in names  # compiled on first use
    assert not any(re.match(r"frugal/(tests|reports)/", n) for n in names)
    for layer in LAYERS:
        assert f"frugal/{layer}/__init__.py" in names
    assert "frugal/scripts/systems/accel/command.py" in names
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(code):
        return subprocess.run(
            [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
            capture_output=True,
            text=True,
            cwd=outside,
            env=env,
        )

    ok = run(
        "import frugal.transforms.attention, frugal.models.bert, frugal.accel, frugal.jaxlib_ext.csr_matmul, "
        "frugal.scripts.harness; import frugal.scripts.cli as c; print(c.__file__)"
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip().startswith(str(site))  # the installed copy, not the checkout
    for name in ("models", "scripts", "transforms", "accel", "jaxlib_ext"):
        assert run(f"import {name}").returncode != 0, f"`import {name}` should fail outside the checkout"
