"""training/ship_model.py: what a shipped model's card says about its training."""

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("ship_model", Path(__file__).parents[1] / "training" / "ship_model.py")
ship_model = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ship_model)


def test_training_time_counts_each_step_once_up_to_the_shipped_iteration():
    metrics = [
        {"iteration": 1, "split": "train", "seconds_per_iteration": 2.0},
        {"iteration": 2, "split": "train", "seconds_per_iteration": 9.0},  # lost when the run stopped
        {"iteration": 2, "split": "validation", "f1": 0.5},
        {"iteration": 2, "split": "train", "seconds_per_iteration": 3.0},  # redone after --resume
        {"iteration": 3, "split": "train", "seconds_per_iteration": 4.0},
    ]
    assert ship_model.training_seconds(metrics, 2) == 5.0
    assert ship_model.training_seconds(metrics, 3) == 9.0
