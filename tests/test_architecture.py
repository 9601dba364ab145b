"""The layers README draws hold in the code: an import contract, light modules that stay light."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import incasem

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(incasem.__file__).parent


def _contract_layers() -> list[list[str]]:
    """The layers of pyproject.toml's import contract, top first, each a list of sibling modules."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return [[part.strip().removeprefix("incasem.") for part in layer.split("|")] for layer in contract["layers"]]


def test_no_import_runs_back_up_the_layers():
    result = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_package_and_top_module_has_a_layer():
    modules = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules |= {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    layered = {name for layer in _contract_layers() for name in layer}
    assert modules == layered


def test_readme_draws_the_layers_of_the_contract():
    text = (ROOT / "README.md").read_text()
    drawn = re.search(r"Layers, top to bottom[^\n]*\n\n```text\n(.*?)```", text, re.S)
    assert drawn, "README's architecture section has no layer drawing"
    rows = [line.split("#")[0].strip() for line in drawn.group(1).splitlines() if line.split("#")[0].strip()]
    assert [[name.strip() for name in row.split("|")] for row in rows] == _contract_layers()


@pytest.mark.parametrize("module", ["incasem.view.neuroglancer", "incasem.view.preview", "incasem.io.layout", "incasem.io.defaults"])
def test_the_viewer_and_the_vocabulary_import_without_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('incasem'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_public_api_is_declared_importable_and_in_the_readme():
    import importlib

    text = (ROOT / "README.md").read_text()
    table = text[text.index("| step | functions | options |") :]
    table = table[: table.index("\n\n")]
    named = set(re.findall(r"`([A-Za-z_]+)`", table))
    assert set(incasem.PUBLIC_API) <= named
    for name, module in incasem.PUBLIC_API.items():
        assert name in incasem.__all__
        assert getattr(incasem, name) is getattr(importlib.import_module(module), name)
        assert f"`{module.removeprefix('incasem.')}`" in table or f"`{module}`" in table or f"`.{module.rsplit('.', 1)[-1]}`" in table
    with pytest.raises(AttributeError):
        incasem.no_such_function  # noqa: B018


def test_importing_incasem_loads_no_torch():
    code = "import sys, incasem; incasem.RunOptions; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
