"""incasem: organelle segmentation in volume EM with 3D U-Nets.

The public API, one function per step of the workflow (README "Python API"), importable
from here: ``from incasem import predict_container, evaluate``. Each name lives in the
module of its step (:data:`PUBLIC_API` says where) and is imported from there on first use,
so ``import incasem`` stays light (no PyTorch until a model is needed). ``evaluate`` and
``train`` share their names with their packages: import them from
``incasem.evaluate.evaluate`` and ``incasem.train.trainer``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Each public name and the module it lives in.
PUBLIC_API: dict[str, str] = {
    "RunOptions": "incasem.blockwise",
    "ConvertOptions": "incasem.preprocess.convert",
    "tiff_to_zarr": "incasem.preprocess.convert",
    "zarr_to_tiff": "incasem.preprocess.export",
    "ClaheOptions": "incasem.preprocess.equalize",
    "equalize_volume": "incasem.preprocess.equalize",
    "MaskOptions": "incasem.preprocess.masks",
    "MetricMaskOptions": "incasem.preprocess.masks",
    "create_mask": "incasem.preprocess.masks",
    "create_metric_mask": "incasem.preprocess.masks",
    "create_pyramid": "incasem.preprocess.pyramid",
    "write_partial_labels": "incasem.preprocess.painted",
    "PredictOptions": "incasem.predict",
    "predict_container": "incasem.predict",
    "predict_config": "incasem.predict",
    "predict_array": "incasem.predict.core",
    "EvaluationOptions": "incasem.evaluate.evaluate",
    "evaluate_entry": "incasem.evaluate.evaluate",
    "threshold_probabilities": "incasem.postprocess.threshold",
    "InstanceOptions": "incasem.postprocess.instances",
    "label_instances": "incasem.postprocess.instances",
    "load_training_config": "incasem.train.config",
    "TrainOptions": "incasem.train.trainer",
    "resume_training": "incasem.train.trainer",
    "resolve_model": "incasem.model.zoo",
    "list_models": "incasem.model.zoo",
    "fetch_published_model": "incasem.model.zoo",
    "load_checkpoint": "incasem.model.checkpoint",
    "write_preview": "incasem.view.preview",
    "open_viewer": "incasem.view.neuroglancer",
    "download_cell": "incasem.io.download",
    "load_data_config": "incasem.io.data_config",
    "open_volume": "incasem.io.volume",
    "run_demo": "incasem.demo",
    "JobMonitor": "incasem.monitor",
    "watching": "incasem.monitor",
}

__all__ = ["PUBLIC_API", "__version__", *PUBLIC_API]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    if name not in PUBLIC_API:
        raise AttributeError(f"module 'incasem' has no attribute {name!r}")
    value = getattr(importlib.import_module(PUBLIC_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
