"""What a command uses when it is not told: the default raw, labels, metric masks and prediction.

One policy for the CLI, the Python API, the viewer, the preview and the plugins alike, built
on the container's vocabulary (:mod:`incasem.io.layout`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from incasem.errors import DatasetNotFoundError
from incasem.io.layout import (
    LABELS_GROUP,
    PREDICTIONS_GROUP,
    RAW,
    RAW_EQUALIZED,
    SEGMENTATION,
    labelled_mask_dataset,
    metric_mask_dataset,
)
from incasem.io.metadata import INCOMPLETE, JOB_KEY, STATUS_KEY
from incasem.io.provenance import PROVENANCE_KEY
from incasem.io.volume import dataset_names, open_container

__all__ = [
    "DERIVED_JOBS",
    "RAW_ORDER",
    "default_labelled_masks",
    "default_labels",
    "default_metric_masks",
    "default_raw",
    "label_datasets",
    "latest_prediction",
]

#: Grey-level datasets, in the order the first that exists is taken: the equalised raw
#: (what the networks see), else the raw as converted.
RAW_ORDER = (RAW_EQUALIZED, RAW)

#: Jobs whose outputs beside a labels dataset are derived from it, not labels of their own.
DERIVED_JOBS = ("instances", "threshold", "pyramid")


def _holds(container: Path) -> str:
    return ", ".join(dataset_names(open_container(container), container)) or "none"


def default_raw(container: str | Path) -> str:
    """The grey-level dataset shown or read when none is named: the first of :data:`RAW_ORDER` that exists.

    Raises
    ------
    DatasetNotFoundError
        If the container holds neither (the message lists what it holds).
    """
    container = Path(container)
    names = dataset_names(open_container(container), container)
    for name in RAW_ORDER:
        if name in names:
            return name
    raise DatasetNotFoundError(f"{container} has no {' or '.join(RAW_ORDER)} (it has: {_holds(container)}): name the grey-level dataset")


def _job_kind(job: Any) -> str | None:
    return job.get("job") if isinstance(job, dict) else None


def label_datasets(container: str | Path) -> list[str]:
    """Paths of the labels arrays under ``volumes/labels/`` of ``container``, sorted.

    Arrays that ``incasem instances``, ``threshold`` or ``pyramid`` derived from labels
    (``…/mito_instances``, ``…/mito_s1``) are not labels of another organelle and are left out.
    """
    container = Path(container)
    group = open_container(container)
    return [
        name
        for name in dataset_names(group, container)
        if name.startswith(f"{LABELS_GROUP}/") and _job_kind(group[name].attrs.get(JOB_KEY)) not in DERIVED_JOBS
    ]


def default_labels(container: str | Path) -> list[str]:
    """The labels scored when none are named: every dataset of :func:`label_datasets`.

    Raises
    ------
    DatasetNotFoundError
        If there is none.
    """
    labels = label_datasets(container)
    if not labels:
        raise DatasetNotFoundError(f"{container} has no {LABELS_GROUP}/* (it has: {_holds(Path(container))}): name the labels dataset")
    return labels


def _existing(container: str | Path, candidates: list[str]) -> list[str]:
    container = Path(container)
    names = set(dataset_names(open_container(container), container))
    return [name for name in candidates if name in names]


def default_metric_masks(container: str | Path, labels: list[str]) -> list[str]:
    """The metric masks (exclusion zones) of labels datasets ``labels``: ``volumes/metric_masks/<organelle>``
    of each, those that exist."""
    return _existing(container, [metric_mask_dataset(label) for label in labels])


def default_labelled_masks(container: str | Path, labels: list[str]) -> list[str]:
    """The labelled masks of partial labels ``labels``: ``volumes/labelled/<organelle>`` of each, those that exist."""
    return _existing(container, [labelled_mask_dataset(label) for label in labels])


def latest_prediction(container: str | Path, *, finished_only: bool) -> str | None:
    """The ``segmentation`` of the prediction created last (by its provenance time, then name), or ``None``.

    ``finished_only``: leave out predictions whose job has not finished.
    """
    container = Path(container)
    group = open_container(container)
    depth = PREDICTIONS_GROUP.count("/") + 4  # volumes/predictions/<model>/<id>/segmentation
    candidates = []
    for name in dataset_names(group, container):
        parts = name.split("/")
        if name.startswith(f"{PREDICTIONS_GROUP}/") and len(parts) == depth and parts[-1] == SEGMENTATION:
            attrs = group[name].attrs
            if finished_only and attrs.get(STATUS_KEY) == INCOMPLETE:
                continue
            record = attrs.get(PROVENANCE_KEY)
            candidates.append((str(record.get("created", "")) if isinstance(record, dict) else "", name))
    return max(candidates)[1] if candidates else None
