"""OME-NGFF image metadata for incasem's datasets, published where OME-Zarr readers look.

OME-NGFF puts ``multiscales`` on a *group*: a list of images, each with its ``axes``
and ``datasets``, whose ``path`` is relative to that group. incasem's arrays stay
where the original's layout has them (``volumes/raw``, ``volumes/labels/mito``,
``volumes/predictions/<model>/<id>/segmentation``, ...), so the group that can
describe an array is its parent. :func:`publish_ngff` keeps, on the parent group of
each dataset, one single-level image entry per dataset of that group::

    volumes/.zattrs  {"multiscales": [
        {"version": "0.4", "name": "volumes/raw", "axes": [z, y, x in nanometer],
         "datasets": [{"path": "raw", "coordinateTransformations": [
             {"type": "scale", "scale": [50, 4.6, 4.6]},
             {"type": "translation", "translation": [0, 460, 32.2]}]}]},
        {"version": "0.4", "name": "volumes/raw_equalized_0.02", ...}]}

A dataset with a multiscale pyramid (:mod:`incasem.preprocess.pyramid`: arrays
``raw_s1``, ``raw_s2``, ... next to ``raw``, each recording ``{"job": "pyramid",
"source": "volumes/raw", ...}``) is one image whose ``datasets`` list the base and
then its finished levels, each with its own scale and translation::

    {"name": "volumes/raw", "datasets": [
        {"path": "raw", ...scale [50, 4.6, 4.6]...},
        {"path": "raw_s1", ...scale [50, 9.2, 9.2]...}, ...]}

A level is never an image of its own; a level still being written is not listed
(readers would show its unwritten blocks), nor are the ones after it.

(zarr v3 containers get the OME-NGFF 0.5 form: the same list under
``attributes["ome"] = {"version": "0.5", "multiscales": [...]}``; 0.5 also wants
each array created with ``dimension_names=("z", "y", "x")``.)

``scale`` is the voxel size and ``translation`` the offset, as funlib.persistence and
the original read them: the corner of the first voxel. neuroglancer and napari put
the *centre* of the first voxel at ``translation``, so they draw a dataset half a
voxel from where incasem's own viewer does (the same for all datasets of one voxel
size). :func:`publish_container_ngff` publishes a whole container, e.g. one of the
original's published cells, which have ``resolution``/``offset`` only.

Readers (ome-zarr-py and napari-ome-zarr, neuroglancer, funlib.persistence) open a
group's *first* entry; the spec lets a user pick the others by ``name``. So the
entries keep their order (a replaced dataset keeps its place, new ones are appended,
``raw*`` first), and a group's first dataset is the one a viewer shows: ``volumes`` →
raw, ``volumes/labels`` → the first label, ``.../<id>`` → that prediction's
segmentation. A ``labels`` group below an image group is, in OME-NGFF, the group of
that image's label images: it gets ``"labels": []`` (it lists no OME label-image
groups, since incasem's labels are arrays) so that strict validators accept it.

Concurrency: the entry list is rebuilt from the group's arrays (their ``resolution``
and ``offset``) under an exclusive ``flock`` on the group's folder, then checked
after writing and rebuilt again if another writer changed the group meanwhile. Jobs
writing different groups (two predictions live in different ``<id>`` groups) never
touch the same metadata; jobs writing arrays into one group (``incasem mask`` and
``incasem equalize`` both into ``volumes``) take turns on the lock. Where a file
system refuses ``flock`` (NFS on a folder, object stores) the check-and-rebuild only
narrows the race: an entry lost there comes back with the next publish in that group
or :func:`publish_container_ngff`, since entries are derived from the arrays.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import zarr
from zarr.errors import ZarrUserWarning
from zarr.storage import LocalStore

from incasem.errors import IncasemError
from incasem.geometry import NmTriple, as_nm_triple
from incasem.io.metadata import (
    COMPLETE,
    JOB_KEY,
    STATUS_KEY,
    DatasetRef,
    ngff_multiscale,
    nm_per_unit,
    read_geometry,
)

try:  # POSIX only; elsewhere publishing relies on the check-and-rebuild alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOGGER = logging.getLogger(__name__)

#: OME-NGFF version written on zarr v2 groups (inside each ``multiscales`` entry).
NGFF_V2_VERSION = "0.4"
#: OME-NGFF version written on zarr v3 groups (``attributes["ome"]["version"]``).
NGFF_V3_VERSION = "0.5"
#: Name of the OME-NGFF group that holds an image's label images.
LABELS_GROUP = "labels"

#: ``job`` recorded (under ``incasem_job``) on the pyramid levels of a dataset.
PYRAMID_JOB = "pyramid"
#: Pyramid level ``k`` of dataset ``name`` is the array ``<name>_s<k>`` next to it.
LEVEL_SUFFIX = "_s"

_ATTEMPTS = 5

Geometry = tuple[NmTriple, NmTriple]


def publish_ngff(group: zarr.Group, dataset: str, voxel_size: NmTriple | None = None, offset_nm: NmTriple | None = None) -> None:
    """Publish dataset ``dataset`` of ``group`` as an OME-NGFF image on its parent group.

    Call it after creating a dataset or changing its geometry (``create_volume``,
    ``set_geometry``). ``dataset`` is the array's path below ``group`` (e.g. the
    container's root group and ``volumes/labels/mito``); ``voxel_size``/``offset_nm``
    (nm, z, y, x) default to the array's ``resolution``/``offset``, which stay the
    truth: given values must agree with them (they serve an array without them). The
    parent's entry list is rebuilt from its arrays: the entry of ``dataset`` is added
    or replaced in place, entries of arrays that are gone are dropped, entries of
    other tools are kept. Idempotent; writes nothing when nothing changes.

    Raises
    ------
    ValueError
        If ``dataset`` is not a 3D array of ``group``, or the given geometry contradicts
        the array's ``resolution``/``offset``.
    """
    parts = [part for part in dataset.split("/") if part not in ("", ".")]
    parent = group.get("/".join(parts[:-1])) if len(parts) > 1 else group
    array = parent.get(parts[-1]) if parts and isinstance(parent, zarr.Group) else None
    if not isinstance(parent, zarr.Group) or not isinstance(array, zarr.Array) or array.ndim != 3:
        raise ValueError(f"'{dataset}' is not a 3D dataset of {_label(group)}")
    child, override = parts[-1], {}
    stored = _array_geometry(parent, child, array)
    if voxel_size is not None or offset_nm is not None:
        base = stored or ((1, 1, 1), (0, 0, 0))
        given = (
            as_nm_triple(base[0] if voxel_size is None else voxel_size, "voxel size", positive=True),
            as_nm_triple(base[1] if offset_nm is None else offset_nm, "offset"),
        )
        if stored is not None and not all(map(math.isclose, [*stored[0], *stored[1]], [*given[0], *given[1]])):
            raise ValueError(
                f"'{dataset}' of {_label(group)} records voxel size {list(stored[0])} nm and offset "
                f"{list(stored[1])} nm, not {list(given[0])} and {list(given[1])}: set its attributes first"
            )
        override[child] = stored or given
    _sync_group(parent, override)
    labels = parent.get(LABELS_GROUP)
    if isinstance(labels, zarr.Group):
        _sync_group(labels, {})


def publish_container_ngff(group: zarr.Group) -> list[str]:
    """Publish every dataset below ``group`` (e.g. a container of the original incasem).

    Returns the paths (below ``group``) of the groups that now carry ``multiscales``.
    Also repairs entries of datasets that were deleted or changed by other means.
    """
    published = []
    groups = [("", group)] + [(name, node) for name, node in group.members(max_depth=None) if isinstance(node, zarr.Group)]
    for name, node in sorted(groups, key=lambda item: item[0]):
        _sync_group(node, {})
        if ngff_entries(_reopen(node, "r").attrs.asdict()):
            published.append(name)
    return published


def level_name(dataset: str, level: int) -> str:
    """The name of pyramid level ``level`` (1, 2, ...) of ``dataset``: ``volumes/raw`` -> ``volumes/raw_s1``."""
    return f"{dataset}{LEVEL_SUFFIX}{level}"


def pyramid_source(array_attrs: Mapping[str, Any]) -> str | None:
    """The dataset (path in the container) whose pyramid level an array with these attributes is; ``None``: no level."""
    job = array_attrs.get(JOB_KEY)
    source = job.get("source") if isinstance(job, Mapping) and job.get("job") == PYRAMID_JOB else None
    return source if isinstance(source, str) else None


def pyramid_level_paths(group: zarr.Group, dataset: str) -> list[str]:
    """The finished pyramid levels of ``dataset`` (a path below ``group``), coarser ones later.

    Those listed in the dataset's OME-NGFF entry: the arrays ``<dataset>_s1``,
    ``<dataset>_s2``, ... that a pyramid job of ``dataset`` wrote and finished, up to
    the first one that is missing or unfinished. ``[]`` if it has none.
    """
    parts = [part for part in dataset.split("/") if part not in ("", ".")]
    parent = group.get("/".join(parts[:-1])) if len(parts) > 1 else group
    if not parts or not isinstance(parent, zarr.Group):
        return []
    arrays = _arrays(parent)
    prefix = f"{parent.path}/" if parent.path else ""
    return [prefix + level for level in _pyramids(arrays, _described(parent, arrays, {}), prefix).get(parts[-1], [])]


def ngff_entries(group_attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``multiscales`` entries of a group's attributes (OME-NGFF 0.4 or 0.5 form; ``[]``: none)."""
    ome = group_attrs.get("ome")
    entries = ome.get("multiscales") if isinstance(ome, Mapping) else group_attrs.get("multiscales")
    return list(entries) if isinstance(entries, list) else []


def _axes_nm(axes: Any) -> float | None:
    """Nanometres per unit of an entry's last three (spatial) axes; ``None`` if they differ or a unit is unknown."""
    if not isinstance(axes, list) or len(axes) < 3:
        return 1.0
    units = {axis.get("unit") if isinstance(axis, Mapping) else None for axis in axes[-3:]}
    return nm_per_unit(units.pop()) if len(units) == 1 else None


def ngff_geometry(group_attrs: Mapping[str, Any], path: str) -> Geometry | None:
    """Voxel size and offset (nm) that a group's OME-NGFF entries give the array at ``path``.

    The first entry listing ``path`` counts; its dataset's ``scale``/``translation``
    are combined with the entry-wide ones, in the unit of its axes (micrometres, say) made nm.
    ``None`` if no entry lists ``path``, or its axes' units differ or are unknown.
    """
    for entry in ngff_entries(group_attrs):
        if not isinstance(entry, Mapping):
            continue
        for item in entry.get("datasets") or []:
            if isinstance(item, Mapping) and item.get("path") == path:
                scale, translation = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
                transforms = [*(item.get("coordinateTransformations") or []), *(entry.get("coordinateTransformations") or [])]
                for transform in (t for t in transforms if isinstance(t, Mapping)):
                    if transform.get("type") == "scale":
                        values = list(transform["scale"])[-3:]
                        scale = [s * v for s, v in zip(scale, values)]
                        translation = [t * v for t, v in zip(translation, values)]
                    elif transform.get("type") == "translation":
                        translation = [t + v for t, v in zip(translation, list(transform["translation"])[-3:])]
                factor = _axes_nm(entry.get("axes"))
                if factor is None:
                    return None
                return as_nm_triple([v * factor for v in scale], "scale", positive=True), as_nm_triple([v * factor for v in translation], "translation")
    return None


def _label(group: zarr.Group) -> str:
    store = group.store
    root = str(store.root) if isinstance(store, LocalStore) else str(store)
    return f"{root}/{group.path}".rstrip("/")


def _reopen(group: zarr.Group, mode: str) -> zarr.Group:
    """A fresh handle on ``group`` (its attributes as stored now, not as first read)."""
    return zarr.open_group(store=group.store, path=group.path, mode=mode)  # type: ignore[arg-type]


def _array_geometry(group: zarr.Group, child: str, array: zarr.Array) -> Geometry | None:
    """Geometry of a child array from its own attributes; ``None`` if it has none or an invalid one."""
    attrs = array.attrs.asdict()
    if "resolution" not in attrs and "multiscales" not in attrs:
        return None
    try:
        return read_geometry(attrs, DatasetRef(Path(_label(group)), child))
    except IncasemError:
        return None


def _order(name: str) -> tuple[bool, str]:
    """Order of new entries: raw data first (the image a viewer shows), then by name."""
    return (not name.startswith("raw"), name)


def _arrays(group: zarr.Group) -> dict[str, zarr.Array]:
    """The arrays right below ``group``, by name."""
    with warnings.catch_warnings():  # another writer's half-written metadata file (*.partial) is no member
        warnings.simplefilter("ignore", ZarrUserWarning)
        return {name: node for name, node in group.members(max_depth=0) if isinstance(node, zarr.Array)}


def _described(group: zarr.Group, arrays: Mapping[str, zarr.Array], override: Mapping[str, Geometry]) -> dict[str, Geometry]:
    """The 3D arrays of ``group`` with a geometry (``override`` first, else their attributes)."""
    ours: dict[str, Geometry] = {}
    for name, array in arrays.items():
        geometry = override.get(name) or (_array_geometry(group, name, array) if array.ndim == 3 else None)
        if geometry is not None and array.ndim == 3:
            ours[name] = geometry
    return ours


def _level_base(array: zarr.Array, prefix: str, described: Mapping[str, Geometry]) -> str | None:
    """The dataset of this group (child name) that ``array`` is a pyramid level of; ``None`` if it is none."""
    source = pyramid_source(array.attrs.asdict())
    if source is None or not source.startswith(prefix):
        return None
    base = source[len(prefix) :]
    return base if base in described else None


def _pyramids(arrays: Mapping[str, zarr.Array], ours: Mapping[str, Geometry], prefix: str) -> dict[str, list[str]]:
    """Each dataset's finished pyramid levels ``<name>_s1, <name>_s2, ...`` (up to the first one missing)."""
    levels: dict[str, list[str]] = {}
    for base in ours:
        found = levels.setdefault(base, [])
        while (name := level_name(base, len(found) + 1)) in ours and _level_base(arrays[name], prefix, ours) == base:
            if arrays[name].attrs.get(STATUS_KEY, COMPLETE) != COMPLETE:
                break
            found.append(name)
    return levels


def _rebuilt(group: zarr.Group, attrs: dict[str, Any], override: Mapping[str, Geometry]) -> dict[str, Any]:
    """``attrs`` of ``group`` with its ``multiscales`` rebuilt from the group's arrays."""
    zarr_format = group.metadata.zarr_format
    arrays = _arrays(group)
    ours = _described(group, arrays, override)
    prefix = f"{group.path}/" if group.path else ""
    level_arrays = {name for name in ours if _level_base(arrays[name], prefix, ours) is not None}
    images = {name: geometry for name, geometry in ours.items() if name not in level_arrays}
    pyramids = _pyramids(arrays, ours, prefix)
    version = NGFF_V2_VERSION if zarr_format == 2 else None

    def entry(name: str) -> dict[str, Any]:
        image = ngff_multiscale(prefix + name, name, *ours[name], version=version)
        for level in pyramids[name]:
            image["datasets"] += ngff_multiscale(prefix + level, level, *ours[level], version=version)["datasets"]
        return image

    entries, placed = [], set()
    for old in ngff_entries(attrs):
        paths = [item.get("path") for item in old.get("datasets") or [] if isinstance(item, Mapping)] if isinstance(old, Mapping) else []
        if paths and paths[0] in images:
            if paths[0] not in placed:  # one entry per dataset (with its levels): later duplicates go
                entries.append(entry(paths[0]))
                placed.add(paths[0])
        elif paths and paths[0] in level_arrays:
            pass  # a pyramid level is listed in its dataset's entry, never on its own
        elif paths and all(isinstance(path, str) and isinstance(group.get(path), zarr.Array) for path in paths):
            entries.append(old)  # another tool's image (a pyramid, say): kept as it is
        # an entry whose arrays are gone would break readers: dropped
    entries += [entry(name) for name in sorted(set(images) - placed, key=_order)]

    new = dict(attrs)
    is_labels_group = group.basename == LABELS_GROUP
    if zarr_format == 2:
        new.pop("multiscales", None)
        if entries:
            new["multiscales"] = entries
        if is_labels_group and not isinstance(new.get("labels"), list):
            new["labels"] = []
    else:
        ome = dict(new.get("ome") or {}) if isinstance(new.get("ome"), Mapping) else {}
        ome.pop("multiscales", None)
        if entries:
            ome["multiscales"] = entries
        if is_labels_group and not isinstance(ome.get("labels"), list):
            ome["labels"] = []
        if ome:
            ome["version"] = ome.get("version", NGFF_V3_VERSION)
            new["ome"] = ome
        else:
            new.pop("ome", None)
    return new


@contextlib.contextmanager
def _locked(group: zarr.Group) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the folder of ``group`` (local stores; elsewhere a no-op).

    The lock sits on the folder itself, so no lock file is left in the container
    (zarr would warn about any file it does not know). It is released when the
    descriptor closes, also when the process dies.
    """
    fd = None
    if fcntl is not None and isinstance(group.store, LocalStore):
        try:
            fd = os.open(Path(group.store.root) / group.path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:  # e.g. NFS refuses flock on a folder: fall back to check-and-rebuild
            LOGGER.debug("no lock on %s (%s): relying on check-and-rebuild", _label(group), error)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _sync_group(group: zarr.Group, override: Mapping[str, Geometry]) -> None:
    """Rebuild the OME-NGFF attributes of ``group``; repeat while another writer changes it."""
    for attempt in range(_ATTEMPTS):
        with _locked(group):
            current = _reopen(group, "r+")
            attrs = current.attrs.asdict()
            wanted = _rebuilt(current, attrs, override)
            if wanted != attrs:
                current.attrs.put(wanted)
        check = _reopen(group, "r")
        attrs = check.attrs.asdict()
        if _rebuilt(check, attrs, override) == attrs:
            return
        time.sleep(0.01 * (attempt + 1))
    LOGGER.debug("OME-NGFF metadata of %s kept changing while it was published", _label(group))
