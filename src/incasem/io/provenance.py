"""The provenance record that incasem stamps on every dataset it writes.

:func:`provenance_record` is the one builder: :func:`incasem.io.volume.create_volume`
calls it for every dataset a job creates (convert, equalize, mask, metric-mask,
predict) and stores the result under :data:`PROVENANCE_KEY`. A record holds

- ``incasem_version``: the software version,
- ``command``: the command line (``sys.argv`` joined by spaces),
- ``created``: when the dataset was created (UTC, ISO 8601, seconds),
- ``job``: the job and its settings (the same dict as the ``incasem_job`` attribute
  that a resumed job is compared against; the record itself never is, since its
  time differs between runs),
- ``inputs``: what the job read: ``container/dataset`` paths, source folders, files,

plus any job-specific details (a prediction's model, checkpoint hash, block shape ...).
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from incasem import __version__

#: Attribute under which every dataset incasem writes keeps its provenance record.
PROVENANCE_KEY = "incasem_provenance"


def command_line() -> str:
    """The command that runs this process: ``sys.argv`` joined by spaces."""
    return " ".join(sys.argv)


def utc_now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def provenance_record(job: Mapping[str, Any] | None = None, inputs: Sequence[str] = (), **details: Any) -> dict[str, Any]:
    """The provenance record of a dataset: version, command, time, job settings, inputs and ``details``.

    Parameters
    ----------
    job
        The job and its settings, e.g. ``{"job": "equalize", "clip_limit": 0.02, ...}``.
    inputs
        What the job read: ``container/dataset`` paths, a source folder, a checkpoint file.
    details
        Further JSON-like fields (finite numbers), e.g. a prediction's model and block shape.

    Returns
    -------
    dict
        A JSON-safe dict (lists, not tuples), ready to store as a zarr attribute.
    """
    record = {
        "incasem_version": __version__,
        "command": command_line(),
        "created": utc_now(),
        "job": None if job is None else dict(job),
        "inputs": [str(source) for source in inputs],
        **details,
    }
    return json.loads(json.dumps(record, allow_nan=False))
