"""Blockwise prediction with a trained U-Net."""

from incasem.predict.job import PredictionOutput, PredictOptions, predict_roi
from incasem.predict.run import EntryPrediction, predict_config, predict_container

__all__ = ["EntryPrediction", "PredictOptions", "PredictionOutput", "predict_config", "predict_container", "predict_roi"]
