"""The README's guide: every command in it runs, in order, on the bundled example.

The guide's ``bash`` blocks run one after the other in one folder, each as a bash
script (``set -euo pipefail``), where ``my_stack/`` and ``my_labels/`` hold the bundled
example's TIFFs, a local server laid out like the original's public bucket stands in for
it (``$INCASEM_BASE_URL``: the published checkpoint 1847 and an example cell), and a
hand-downloaded checkpoint lies ready to import. Only what makes the run long or
endless is changed (:data:`SUBSTITUTIONS`); the test fails if the README no longer holds
a substituted text, so the table cannot go stale. ``python`` blocks (the SLURM recipe
needs a SLURM cluster) must parse.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer

from incasem.blockwise import RunOptions
from incasem.cli import app
from incasem.demo import EXAMPLE
from incasem.model.shipped import shipped_models
from incasem.model.unet import UNet, standard_config
from incasem.model.zoo import CHECKPOINT_PREFIX
from incasem.preprocess.convert import ConvertOptions, tiff_to_zarr
from incasem.preprocess.equalize import equalize_volume
from tests.fake_bucket import Bucket, serve

README = Path(__file__).resolve().parents[1] / "README.md"

#: Text of the guide -> what the test runs instead: fewer iterations, servers stopped.
SUBSTITUTIONS = {
    "training.iterations=3000": "training.iterations=2",
    "intervals.validate_every=250": "intervals.validate_every=1",
    "iterations: 30000": "iterations: 2",
    "--labels volumes/labels/mito_sections --predict": "--labels volumes/labels/mito_sections --predict training.iterations=2 intervals.validate_every=1",
    "incasem view cell.zarr ": "{ timeout --preserve-status -s INT 20 incasem view cell.zarr || test $? = 130; } ",
}


def guide() -> str:
    text = README.read_text()
    start = text.index("## Guide: from your TIFFs to 3D masks")
    return text[start : text.index("\n## ", start + 1)]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", guide(), re.S)


@pytest.fixture
def workspace(tmp_path):
    """The user's folder: TIFFs, a hand-downloaded checkpoint; and the bucket the guide downloads from."""
    shutil.copytree(EXAMPLE / "image", tmp_path / "my_stack")
    shutil.copytree(EXAMPLE / "labels" / "mito", tmp_path / "my_labels")
    torch.manual_seed(1847)
    original = tmp_path / "model_checkpoint_1847_mito_CF.pt"
    torch.save({"model_state_dict": UNet(standard_config()).state_dict()}, original)
    bucket = tmp_path / "bucket"
    (bucket / CHECKPOINT_PREFIX).mkdir(parents=True)
    shutil.copy(original, bucket / CHECKPOINT_PREFIX / original.name)
    cell = bucket / "datasets" / "cell_6" / "cell_6.zarr"
    quiet = RunOptions(progress=False)
    tiff_to_zarr(EXAMPLE / "image", cell, options=ConvertOptions(voxel_size=(5, 5, 5)), run=quiet)
    equalize_volume(cell, run=quiet)
    return tmp_path, Bucket(bucket)


def _run(block: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        ["bash", "-c", f"set -euo pipefail\n{block}"], cwd=folder, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=900)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # background jobs a block left (none should)
    return subprocess.CompletedProcess(block, process.returncode, output)


def test_every_substituted_text_is_in_the_guide():
    text = "\n".join(blocks("bash"))
    for original in SUBSTITUTIONS:
        assert original in text, f"the guide no longer says {original!r}: update SUBSTITUTIONS"


def reference_commands() -> list[str]:
    """The ``incasem`` command lines of the README's bash blocks outside the guide (its reference sections)."""
    text = README.read_text().replace(guide(), "")
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            if line.startswith("incasem "):
                lines.append(line)
    return lines


def test_reference_commands_parse():
    """Commands the README only shows (placeholders such as CELL.zarr) still name existing commands and
    options with values of the right type: the CLI parses each one (nothing runs)."""
    root = typer.main.get_command(app)
    lines = reference_commands()
    assert len(lines) >= 15, "the reference sections show commands"
    for line in lines:
        args = shlex.split(line.replace("[", "").replace("]", ""))[1:]  # [--option value]: optional
        command, context = root, root.context_class(root, info_name="incasem")
        while hasattr(command, "resolve_command"):  # a command group: descend to the command
            name, command, args = command.resolve_command(context, args)
            context = command.context_class(command, info_name=name, parent=context)
        try:
            command.make_context(name, list(args), parent=context.parent)
        except Exception as error:
            pytest.fail(f"README: `{line}` does not parse: {error}")


def test_python_blocks_parse():
    assert blocks("python"), "the SLURM recipe is in the guide"
    for block in blocks("python"):
        ast.parse(block)


@pytest.mark.skipif(not shipped_models(), reason="no shipped model in this checkout")
def test_every_guide_command_runs_on_the_bundled_example(workspace):
    folder, bucket = workspace
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "INCASEM_CACHE_DIR": str(folder / "models"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("INCASEM_RUNS_DIR", None)
    with serve(bucket) as url:
        env["INCASEM_BASE_URL"] = url
        for number, block in enumerate(blocks("bash"), start=1):
            for original, replacement in SUBSTITUTIONS.items():
                block = block.replace(original, replacement)
            result = _run(block, folder, env)
            assert result.returncode == 0, f"guide block {number} failed:\n{block}\n--- output ---\n{result.stdout[-4000:]}"
    assert (folder / "cell.png").stat().st_size > 10_000
    assert (folder / "runs" / "1" / "run-1.pt").is_file()  # fine-tuned on every tenth section, its thresholds chosen
    assert (folder / "cell.zarr" / "volumes" / "labelled" / "mito_sections").is_dir()
    assert (folder / "cell.zarr" / "volumes" / "predictions" / "run-1" / "0001" / "segmentation").is_dir()
    assert (folder / "runs" / "2" / "curves.png").is_file()
    assert len(list((folder / "mito_tiff").glob("*.tif"))) == 48
    assert (folder / "data" / "cell_6" / "cell_6.zarr" / "volumes" / "raw_equalized_0.02").is_dir()
