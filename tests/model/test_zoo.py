"""Published-model registry: fetch from a local stand-in of the S3 bucket, cache, import, resolve, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from incasem.cli import main
from incasem.errors import CheckpointError, ConfigError, DownloadError, ModelNotFoundError
from incasem.model.checkpoint import load_checkpoint, read_card, save_checkpoint
from incasem.model.shipped import shipped_models
from incasem.model.unet import UNet, standard_config
from incasem.model.zoo import (
    CACHE_ENV,
    CHECKPOINT_PREFIX,
    PUBLISHED_MODELS,
    fetch_published_model,
    import_model,
    list_models,
    models_dir,
    resolve_model,
)
from tests.fake_bucket import Bucket, serve, unreachable_url

PAGE_SIZE = 2  # keys per listing page: the listing below spans four pages
LISTED_ONLY = [  # keys the bucket lists but the server does not serve; 1675 lands on page 2
    "model_checkpoint_1523_mito_CF.pt",
    "model_checkpoint_1600_er_CF.pt",
    "model_checkpoint_1841_er_CF.pt",
    "model_checkpoint_1986_ccp_HPF.pt",
    "model_checkpoint_1986_ccp_HPF_old.pt",
    "model_checkpoint_18470_other.pt",
]


@pytest.fixture(scope="module")
def published_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1847)
    return UNet(standard_config()).state_dict()


@pytest.fixture(scope="module")
def published_file(tmp_path_factory, published_state) -> Path:
    """A checkpoint as the original incasem wrote it: state dicts, no metadata (~23 MB)."""
    model = UNet(standard_config())
    model.load_state_dict(published_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-5, weight_decay=3e-5)
    path = tmp_path_factory.mktemp("published") / "model_checkpoint_1847_mito_CF.pt"
    torch.save({"model_state_dict": published_state, "optimizer_state_dict": optimizer.state_dict()}, path)
    return path


@pytest.fixture
def bucket(tmp_path, published_file) -> Iterator[tuple[Bucket, str]]:
    """A local HTTP server laid out like the bucket; yields it and its base URL."""
    folder = tmp_path / "bucket" / CHECKPOINT_PREFIX
    folder.mkdir(parents=True)
    shutil.copy(published_file, folder / "model_checkpoint_1847_mito_CF.pt")
    shutil.copy(published_file, folder / "model_checkpoint_1675_mito_HPF.pt")
    (folder.parent / "README.txt").write_text("not a checkpoint")
    state = Bucket(tmp_path / "bucket", page_size=PAGE_SIZE, listed_only=tuple(CHECKPOINT_PREFIX + n for n in LISTED_ONLY))
    with serve(state) as base_url:
        yield state, base_url


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def unreachable() -> str:
    return unreachable_url()


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_weights(model: UNet, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


# ---------------------------------------------------------------------- fetch


def test_fetch_converts_verifies_and_caches(bucket, cache, published_state, published_file) -> None:
    server, base_url = bucket
    path = fetch_published_model("1847", cache, base_url, progress=False)

    assert path == cache / "published" / "1847_mito_CF.pt"
    assert files_in(cache) == ["index.json", "published/1847_mito_CF.pt"]
    model, card = load_checkpoint(path)
    assert card.voxel_size_nm == (5, 5, 5)
    assert card.organelle == "mito" and card.class_names == ("background", "mito")
    assert card.preparation == "chemical fixation" and card.source == "incasem-published:1847"
    assert card.architecture == standard_config()
    assert card.training["raw_dataset"] == "volumes/raw_equalized_0.02"
    assert_weights(model, published_state)
    record = json.loads((cache / "index.json").read_text())["published"]["1847"]
    assert record["sha256"] == sha256(path)
    assert record["original_sha256"] == sha256(published_file)
    assert record["original"] == "model_checkpoint_1847_mito_CF.pt"
    assert server.downloads() == 1 and not any("list-type" in r for r in server.requests)

    assert fetch_published_model("1847", cache, base_url, progress=False) == path
    assert server.downloads() == 1  # cached: nothing downloaded again
    assert resolve_model("1847", cache) == path
    assert resolve_model(str(path), cache) == path
    assert resolve_model(path) == path


def test_fetch_finds_unnamed_model_by_paging_through_the_listing(bucket, cache, published_state) -> None:
    server, base_url = bucket
    path = fetch_published_model("1675", cache, base_url, progress=False)

    assert path == cache / "published" / "1675_mito_HPF.pt"
    model, card = load_checkpoint(path)
    assert card.voxel_size_nm == (4, 4, 4) and card.organelle == "mito"
    assert card.preparation == "high-pressure freezing"
    assert_weights(model, published_state)
    listings = [r for r in server.requests if "list-type=2" in r]
    assert len(listings) == 4  # 8 keys under the prefix, 2 per page
    assert all("prefix=models%2Fpretrained_checkpoints%2F" in r for r in listings)
    assert "continuation-token=c3RhcnQ9Mg%3D%3D" in listings[1]  # the token's '=' is quoted
    entry = next(e for e in list_models(cache) if e.model_id == "1675")
    assert entry.file_name == "model_checkpoint_1675_mito_HPF.pt" and entry.path == path


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("1837", r"model_checkpoint_1837_golgi_CF.pt does not exist \(HTTP 404\)"),
        ("1669", r"expected one file model_checkpoint_1669_\* in .*, found none"),
        ("1986", r"found several \(model_checkpoint_1986_ccp_HPF.pt, model_checkpoint_1986_ccp_HPF_old.pt\)"),
    ],
    ids=["404", "not-listed", "ambiguous"],
)
def test_fetch_of_a_missing_file(bucket, cache, model_id, message) -> None:
    _, base_url = bucket
    with pytest.raises(DownloadError, match=message) as info:
        fetch_published_model(model_id, cache, base_url, progress=False)
    assert "\n" not in str(info.value) and "incasem models import" in str(info.value)
    assert files_in(cache) == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [("truncated", "not a valid published incasem checkpoint"), ("short", "truncated|broke off")],
)
def test_damaged_download_leaves_nothing(bucket, cache, damage, message) -> None:
    server, base_url = bucket
    server.damage[CHECKPOINT_PREFIX + "model_checkpoint_1847_mito_CF.pt"] = damage
    with pytest.raises(DownloadError, match=message) as info:
        fetch_published_model("1847", cache, base_url, progress=False)
    assert "\n" not in str(info.value)
    assert f"{base_url}/{CHECKPOINT_PREFIX}model_checkpoint_1847_mito_CF.pt" in str(info.value)
    assert files_in(cache) == []
    with pytest.raises(ModelNotFoundError, match="run `incasem models fetch 1847` first"):
        resolve_model("1847", cache)


def test_damaged_cache_is_fetched_again(bucket, cache, published_state) -> None:
    server, base_url = bucket
    path = fetch_published_model("1847", cache, base_url, progress=False)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)

    assert fetch_published_model("1847", cache, base_url, progress=False) == path
    assert server.downloads() == 2
    assert_weights(load_checkpoint(path)[0], published_state)


def test_unreachable_server(cache, unreachable) -> None:
    with pytest.raises(DownloadError, match=f"cannot reach {unreachable}/") as info:
        fetch_published_model("1847", cache, unreachable, progress=False)
    message = str(info.value)
    assert "\n" not in message and "check the connection" in message and "incasem models import" in message
    with pytest.raises(DownloadError, match=r"cannot reach .*list-type=2"):  # 1675 needs the listing
        fetch_published_model("1675", cache, unreachable, progress=False)
    with pytest.raises(DownloadError, match="http:// or https://"):
        fetch_published_model("1847", cache, "file:///etc", progress=False)
    assert files_in(cache) == []


def test_unknown_names(cache, tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"unknown published model id '1234'.*1847, 1837, 1841, 1675"):
        fetch_published_model("1234", cache)
    with pytest.raises(ModelNotFoundError, match="neither a checkpoint file, a shipped model"):
        resolve_model("mito-best", cache)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.pt"), cache)
    with pytest.raises(ModelNotFoundError, match="is not a file"):
        resolve_model(tmp_path, cache)
    with pytest.raises(ModelNotFoundError, match="1841 \\(er, CF\\) is not in"):
        resolve_model("1841", cache)


# ---------------------------------------------------------------------- import, list, models folder


def test_import_of_a_published_file_counts_as_fetched(cache, published_file, published_state, unreachable) -> None:
    path = import_model(published_file, cache_dir=cache)  # id read from the file name
    assert path == cache / "published" / "1847_mito_CF.pt"
    model, card = load_checkpoint(path)
    assert card == PUBLISHED_MODELS["1847"].card()
    assert_weights(model, published_state)
    record = json.loads((cache / "index.json").read_text())["published"]["1847"]
    assert record["original_sha256"] == sha256(published_file) and record["sha256"] == sha256(path)

    assert fetch_published_model("1847", cache, unreachable, progress=False) == path  # no network needed
    assert resolve_model("1847", cache) == path

    renamed = published_file.parent / "downloaded.pt"
    shutil.copy(published_file, renamed)
    hpf = import_model(renamed, "1675", cache_dir=cache)
    assert load_checkpoint(hpf)[1].voxel_size_nm == (4, 4, 4)


def test_import_of_an_arbitrary_original_checkpoint(cache, published_file, published_state) -> None:
    src = published_file.parent / "golgi_run_17.pt"
    shutil.copy(published_file, src)
    path = import_model(src, organelle="golgi", voxel_size_nm=(8, 4, 4), preparation="HPF", cache_dir=cache)

    assert path == cache / "imported" / "golgi_run_17.pt"
    model, card = load_checkpoint(path)
    assert card.voxel_size_nm == (8, 4, 4) and card.class_names == ("background", "golgi")
    assert card.preparation == "HPF" and card.source == "imported:golgi_run_17.pt"
    assert_weights(model, published_state)
    entry = list_models(cache)[-1]
    assert (entry.model_id, entry.organelle, entry.preparation, entry.voxel_size_nm, entry.file_name, entry.path) == (
        "golgi_run_17",
        "golgi",
        "HPF",
        (8, 4, 4),
        "golgi_run_17.pt",
        path,
    )
    assert resolve_model("golgi_run_17", cache) == path


def test_import_refuses_unclear_or_bad_input(cache, published_file, tmp_path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        import_model(published_file, "1847", organelle="mito", cache_dir=cache)
    plain = tmp_path / "weights.pt"
    shutil.copy(published_file, plain)
    with pytest.raises(ConfigError, match="give its published id"):
        import_model(plain, cache_dir=cache)
    with pytest.raises(ConfigError, match="needs both organelle and voxel_size_nm"):
        import_model(plain, organelle="mito", cache_dir=cache)
    with pytest.raises(ConfigError, match="voxel_size_nm"):
        import_model(plain, organelle="mito", voxel_size_nm=(0, 5, 5), cache_dir=cache)
    with pytest.raises(ModelNotFoundError, match="unknown published model id '999'"):
        import_model(plain, "999", cache_dir=cache)
    ours = tmp_path / "ours.pt"
    save_checkpoint(ours, UNet(standard_config()), PUBLISHED_MODELS["1847"].card())
    with pytest.raises(CheckpointError, match="already an incasem checkpoint"):
        import_model(ours, "1847", cache_dir=cache)
    with pytest.raises(CheckpointError, match="does not exist"):
        import_model(tmp_path / "nope.pt", "1847", cache_dir=cache)
    assert files_in(cache) == []


def test_list_models_before_fetching(cache) -> None:
    everything = list_models(cache)
    shipped = [e for e in everything if e.kind == "shipped"]
    assert everything[: len(shipped)] == shipped and all(e.path.is_file() and "held out" in e.summary for e in shipped)
    for entry in shipped:  # thresholds set at shipping are part of what the model does: they are shown
        card = read_card(entry.path)
        threshold = (card.training or {}).get("decision_threshold")
        assert threshold is None or f"foreground threshold {threshold['threshold']:g}" in entry.summary
        assert card.seed_threshold is None or f"reach probability {card.seed_threshold:g}" in entry.summary
        # how it was chosen: trained on, selected on, held out (in this order), the held-out scores shown
        training = card.training or {}
        said = [
            entry.summary.index(f"{part} {training[key]}") for part, key in (("trained on", "data"), ("selected on", "selected_on"), ("held out", "held_out"))
        ]
        assert said == sorted(said)
        held_out = card.validation_scores["held_out"]["plain"]
        assert f"F1 {held_out['f1']:.3f} IoU {held_out['iou']:.3f} (all voxels)" in entry.summary
    entries = everything[len(shipped) :]
    assert [e.model_id for e in entries] == ["1847", "1837", "1841", "1675", "1669", "1986", "2000"]
    assert all(e.path is None for e in entries)
    by_id = {e.model_id: e for e in entries}
    assert by_id["1841"].file_name == "model_checkpoint_1841_er_CF.pt"
    assert by_id["1669"].file_name == "model_checkpoint_1669_*"
    assert (by_id["2000"].organelle, by_id["2000"].preparation, by_id["2000"].voxel_size_nm) == ("np", "HPF", (5, 5, 5))
    assert (by_id["1669"].organelle, by_id["1669"].voxel_size_nm) == ("er", (4, 4, 4))


def test_models_dir_precedence(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models_dir() == tmp_path / "xdg" / "incasem" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models_dir() == tmp_path / "home" / ".cache" / "incasem" / "models"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert models_dir() == tmp_path / "env"
    assert models_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_corrupt_index_is_reported(cache) -> None:
    cache.mkdir()
    (cache / "index.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"index\.json is not valid JSON: delete it"):
        list_models(cache)


# ---------------------------------------------------------------------- CLI


def test_cli_fetch_list_and_import(bucket, cache, published_file, capsys, monkeypatch) -> None:
    _server, base_url = bucket
    assert main(["models", "fetch", "1847", "1675", "--base-url", base_url, "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"1847: {cache / 'published' / '1847_mito_CF.pt'}", f"1675: {cache / 'published' / '1675_mito_HPF.pt'}"]

    src = published_file.parent / "er_run.pt"
    shutil.copy(published_file, src)
    assert main(["models", "import", str(src), "--organelle", "er", "--voxel-size", "5", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "imported" / "er_run.pt")

    monkeypatch.setenv(CACHE_ENV, str(cache))  # the environment variable instead of --cache-dir
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    if lines[0].startswith("shipped with incasem"):
        shipped_lines = lines[1 : lines.index(f"models folder: {cache}")]
        assert [line.split()[0] for line in shipped_lines] == sorted(shipped_models())  # by name, the full model first
        assert all("held out" in line for line in shipped_lines)
        lines = lines[len(shipped_lines) + 1 :]
    assert lines[0] == f"models folder: {cache}"
    assert lines[1].split() == ["id", "organelle", "prep", "voxel", "nm", "file", "cached"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["1847"] == ["1847", "mito", "CF", "5,5,5", "model_checkpoint_1847_mito_CF.pt", str(cache / "published" / "1847_mito_CF.pt")]
    assert rows["1675"][4] == "model_checkpoint_1675_mito_HPF.pt"
    assert rows["1669"][-2:] == ["not", "fetched"]
    assert rows["er_run"] == ["er_run", "er", "-", "5,5,5", "er_run.pt", str(cache / "imported" / "er_run.pt")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "fetch", "42"], "unknown published model id '42'"),
        (["models", "fetch", "1847", "--base-url", "UNREACHABLE"], "cannot reach"),
        (["models", "import", "missing.pt", "--id", "1847"], "does not exist"),
        (["models", "import", "PUBLISHED", "--id", "1847", "--organelle", "mito"], "not both"),
    ],
    ids=["unknown-id", "unreachable", "missing-file", "mixed-options"],
)
def test_cli_errors_are_one_line(args, message, cache, published_file, unreachable, capsys, monkeypatch) -> None:
    monkeypatch.chdir(cache.parent)
    args = [{"UNREACHABLE": unreachable, "PUBLISHED": str(published_file)}.get(a, a) for a in args]
    assert main([*args, "--cache-dir", str(cache)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("incasem: error: ") and message in err
    assert not cache.exists() or files_in(cache) == []


def test_cli_bad_voxel_size(cache, published_file, capsys) -> None:
    code = main(["models", "import", str(published_file), "--organelle", "mito", "--voxel-size", "5,5", "--cache-dir", str(cache)])
    assert code == 2 and "--voxel-size needs three numbers" in capsys.readouterr().err
    assert not cache.exists()


def test_console_script_lists_models(cache) -> None:
    script = Path(sys.executable).parent / "incasem"
    if not script.exists():
        pytest.skip(f"console script {script} is not installed (pip install -e .)")
    result = subprocess.run([str(script), "models", "list", "--cache-dir", str(cache)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1847  mito" in result.stdout and "not fetched" in result.stdout


# ---------------------------------------------------------------------- the user's files are never touched


def test_import_refuses_to_overwrite_the_users_source_in_the_models_folder(cache, published_file) -> None:
    src = cache / "imported" / "golgi_run.pt"  # the user keeps the original in the models folder
    src.parent.mkdir(parents=True)
    shutil.copy(published_file, src)
    before = src.read_bytes()
    with pytest.raises(ConfigError, match="was not written by incasem") as info:
        import_model(src, organelle="golgi", voxel_size_nm=(5, 5, 5), cache_dir=cache)
    assert str(src) in str(info.value) and "\n" not in str(info.value)
    assert src.read_bytes() == before
    assert files_in(cache) == ["imported/golgi_run.pt"]


def test_models_folder_files_incasem_did_not_write_are_kept(bucket, cache, published_file, published_state) -> None:
    server, base_url = bucket
    users = cache / "published" / "1847_mito_CF.pt"  # e.g. --cache-dir is a folder of the user
    users.parent.mkdir(parents=True)
    users.write_bytes(b"the user's own file")
    with pytest.raises(ConfigError, match="was not written by incasem"):
        import_model(published_file, "1847", cache_dir=cache)
    with pytest.raises(ConfigError, match="move that file away or use another cache_dir"):
        fetch_published_model("1847", cache, base_url, progress=False)
    assert server.downloads() == 0
    assert users.read_bytes() == b"the user's own file" and files_in(cache) == ["published/1847_mito_CF.pt"]

    users.unlink()
    path = import_model(published_file, "1847", cache_dir=cache)
    assert import_model(published_file, "1847", cache_dir=cache) == path  # its own file: replaced
    (cache / "index.json").unlink()  # index lost: an incasem checkpoint is still its own
    assert fetch_published_model("1847", cache, base_url, progress=False) == path
    assert_weights(load_checkpoint(path)[0], published_state)


def test_import_with_fractional_voxel_size(cache, published_file) -> None:
    src = published_file.parent / "serial_sections.pt"
    shutil.copy(published_file, src)
    path = import_model(src, organelle="mito", voxel_size_nm=(50, 4.6, 4.6), cache_dir=cache)
    assert load_checkpoint(path)[1].voxel_size_nm == (50, 4.6, 4.6)
    entry = next(e for e in list_models(cache) if e.model_id == "serial_sections")
    assert entry.voxel_size_nm == (50, 4.6, 4.6) and isinstance(entry.voxel_size_nm[0], int)


def test_models_folder_files_get_umask_permissions(cache, published_file) -> None:
    old = os.umask(0o022)
    try:
        path = import_model(published_file, cache_dir=cache)
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
    assert ((cache / "index.json").stat().st_mode & 0o777) == 0o644
