"""Where a prediction goes: unique prediction ids and provenance attributes."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

from incasem import __version__
from incasem.errors import DatasetExistsError, DatasetNotFoundError, IncasemError
from incasem.io.metadata import INCOMPLETE, JOB_KEY, STATUS_KEY
from incasem.io.volume import open_volume

PREDICTIONS_GROUP = "volumes/predictions"


def prediction_group(model_name: str, prediction_id: str) -> str:
    """Dataset group of one prediction: ``volumes/predictions/<model>/<id>``."""
    return f"{PREDICTIONS_GROUP}/{model_name}/{prediction_id}"


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


def claim_prediction_id(container: Path, model_name: str, prediction_id: str | None, resume: bool) -> str:
    """The prediction id a run writes to: a new one, a requested new one, or one to resume."""
    if prediction_id is None:
        return allocate_prediction_id(container, model_name)
    folder = Path(container) / prediction_group(model_name, prediction_id)
    if resume:
        if not folder.is_dir():
            raise DatasetNotFoundError(
                f"{container} has no prediction {model_name}/{prediction_id} to resume: check the id "
                f"with `incasem info {container}`"
            )
        return prediction_id
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        raise DatasetExistsError(
            f"prediction {model_name}/{prediction_id} exists in {container}: pick another id, "
            "leave --prediction-id out for a new one, or --resume it"
        ) from None
    return prediction_id


def find_resumable(container: Path, model_name: str, job: dict[str, Any]) -> str | None:
    """The id of the newest unfinished prediction of ``model_name`` started with the
    same ``job`` settings, or ``None``."""
    base = Path(container) / PREDICTIONS_GROUP / model_name
    if not base.is_dir():
        return None
    for folder in sorted((p for p in base.iterdir() if p.name.isdigit()), reverse=True):
        try:
            stored = open_volume(container, f"{prediction_group(model_name, folder.name)}/segmentation", require_complete=False).array.attrs
        except IncasemError:
            continue
        if stored.get(STATUS_KEY) == INCOMPLETE and stored.get(JOB_KEY) == json.loads(json.dumps(job)):
            return folder.name
    return None


def provenance(**fields: Any) -> dict[str, Any]:
    """Provenance attributes: the given fields plus software version, command and time."""
    return {
        "incasem_version": __version__,
        "command": " ".join(sys.argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }
