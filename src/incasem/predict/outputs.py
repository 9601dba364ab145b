"""Where a prediction goes: unique prediction ids, and the earlier prediction to resume or replace.

Provenance is not built here: every output dataset gets the one record of
:func:`incasem.io.provenance.provenance_record` from :func:`incasem.io.volume.create_volume`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from incasem.errors import DatasetExistsError, DatasetNotFoundError, IncasemError
from incasem.io.layout import PREDICTIONS_GROUP, prediction_group, segmentation_of
from incasem.io.metadata import INCOMPLETE, JOB_KEY, STATUS_KEY
from incasem.io.volume import WriteMode, open_volume


def allocate_prediction_id(container: Path, model_name: str) -> str:
    """Claim the next free prediction id (``0001``, ``0002``, ...) for ``model_name``.

    The id is claimed by creating its folder, which fails for all but one of several
    runs racing for the same id, so concurrent runs never share an id.
    """
    base = Path(container) / PREDICTIONS_GROUP / model_name
    base.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    number = max(taken, default=0) + 1
    while True:
        try:
            (base / f"{number:04d}").mkdir()
            return f"{number:04d}"
        except FileExistsError:
            number += 1


def claim_prediction_id(container: Path, model_name: str, prediction_id: str | None, mode: WriteMode) -> str:
    """The prediction id a run writes to: a new one, a requested new one (``mode="create"``),
    one to resume (it must exist) or one to overwrite (created if missing)."""
    if prediction_id is None:
        return allocate_prediction_id(container, model_name)
    folder = Path(container) / prediction_group(model_name, prediction_id)
    if mode == "overwrite":
        folder.mkdir(parents=True, exist_ok=True)
        return prediction_id
    if mode == "resume":
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{container} has no prediction {model_name}/{prediction_id} to resume: check the id with `incasem info {container}`")
        return prediction_id
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        raise DatasetExistsError(
            f"prediction {model_name}/{prediction_id} exists in {container}: pick another id, leave --prediction-id out for a new one, or --resume it"
        ) from None
    return prediction_id


def find_previous(container: Path, model_name: str, job: dict[str, Any], mode: WriteMode) -> str | None:
    """The id of the newest prediction of ``model_name`` started with the same ``job``
    settings (for ``mode="resume"`` the newest unfinished one), or ``None``."""
    base = Path(container) / PREDICTIONS_GROUP / model_name
    if not base.is_dir():
        return None
    for folder in sorted((p for p in base.iterdir() if p.name.isdigit()), reverse=True):
        try:
            stored = open_volume(container, segmentation_of(prediction_group(model_name, folder.name)), require_complete=False).array.attrs
        except IncasemError:
            continue
        unfinished = stored.get(STATUS_KEY) == INCOMPLETE
        if (unfinished or mode != "resume") and stored.get(JOB_KEY) == json.loads(json.dumps(job)):
            return folder.name
    return None


def interrupted_predictions(container: Path, model_name: str) -> list[tuple[str, dict[str, Any]]]:
    """The unfinished predictions of ``model_name`` (id and stored job settings), newest first."""
    base = Path(container) / PREDICTIONS_GROUP / model_name
    if not base.is_dir():
        return []
    found = []
    for folder in sorted((p for p in base.iterdir() if p.name.isdigit()), reverse=True):
        try:
            stored = open_volume(container, segmentation_of(prediction_group(model_name, folder.name)), require_complete=False).array.attrs
        except IncasemError:
            continue
        job = stored.get(JOB_KEY)
        if stored.get(STATUS_KEY) == INCOMPLETE and isinstance(job, dict):
            found.append((folder.name, job))
    return found
