"""A trained model's decisions, chosen on validation data: the foreground threshold and the seed threshold.

The class-balanced loss (DESIGN §6) trains a network to call a rare organelle wherever it is
moderately likely, so the argmax of a freshly trained (or fine-tuned) two-class model
over-predicts. Two decisions fix that, both chosen on the *validation* data of a run (its
labelled voxels, inside the cell mask), never on what the model is scored on:

1. **foreground threshold**: the probability of best F1 over all validation voxels (one
   histogram sweep, :class:`~incasem.evaluate.metrics.ProbabilityHistogram`). It is folded into
   the final convolution's background bias (:meth:`~incasem.model.unet.UNet.set_foreground_threshold`),
   so the model's argmax — what ``incasem predict`` writes — is that threshold.
2. **seed threshold** (the card's ``seed_threshold``): with the threshold folded in,
   ``incasem predict`` keeps only the objects that reach this probability somewhere
   (hysteresis). Each of :data:`SEED_CANDIDATES` is tried on the calibrated model's
   probabilities of the validation boxes, predicted :data:`HYSTERESIS_MARGIN_NM` around them
   so that objects reach past the labelled voxels as they do in a whole prediction; one is kept only
   if it raises the validation F1 by at least :data:`MIN_SEED_GAIN_F1` over keeping every object
   (a smaller gain is within what a few labelled sections can tell, and a seed threshold
   chosen on too little data cost held-out IoU in BENCHMARKS.md).

With partial labels only the labelled sections are predicted (:meth:`Reference.labelled_boxes`),
once, so choosing costs about one validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.filters import apply_hysteresis_threshold

from incasem.evaluate.evaluate import Reference
from incasem.evaluate.metrics import ConfusionCounts, ProbabilityHistogram, confusion_counts
from incasem.geometry import Roi
from incasem.io.data_config import DataConfig
from incasem.io.volume import Volume, open_volume
from incasem.model.card import ModelCard
from incasem.model.checkpoint import load_checkpoint, save_checkpoint
from incasem.model.unet import UNet
from incasem.predict.core import Precision, predict_array
from incasem.runs import RunFolder
from incasem.train.validate import scored_boxes

__all__ = ["HYSTERESIS_MARGIN_NM", "MIN_SEED_GAIN_F1", "SEED_CANDIDATES", "Decisions", "calibrated", "choose_decisions", "decided_card", "make_run_model"]

#: Seed thresholds tried (0.5 is the foreground itself: every object kept).
SEED_CANDIDATES = (0.5, *(round(0.8 + 0.005 * k, 3) for k in range(40)))
#: Least rise of the validation F1 for which a seed threshold is kept.
MIN_SEED_GAIN_F1 = 0.005
#: How far (nm) around a validation box its probabilities are predicted for the hysteresis.
HYSTERESIS_MARGIN_NM = 100.0


@dataclass(frozen=True)
class Decisions:
    """The decisions chosen for a two-class model, and the validation F1 each gave.

    Attributes
    ----------
    threshold
        Foreground probability of best validation F1 (of the model as it was).
    seed_threshold
        Seed threshold on the calibrated model's probabilities, or ``None`` (every object).
    f1
        Validation F1 at argmax (``"argmax"``), at ``threshold`` (``"threshold"``) and with the
        seed threshold too (``"seeded"``).
    voxels
        Validation voxels the choice counted (labelled, inside the cell mask).
    """

    threshold: float
    seed_threshold: float | None
    f1: dict[str, float | None]
    voxels: int

    def record(self, chosen_on: str) -> dict[str, Any]:
        """The card's ``training`` entries that say what was chosen, where, and what it gave."""
        return {
            "decision_threshold": {"threshold": self.threshold, "chosen_on": chosen_on, "f1": self.f1["threshold"], "argmax_f1": self.f1["argmax"]},
            "seed_threshold": {"threshold": self.seed_threshold, "chosen_on": chosen_on, "f1": self.f1["seeded"]},
        }


@dataclass(frozen=True)
class _Box:
    """A validation box: where it is scored (``box``) inside the region predicted around it (``grown``)."""

    raw: Volume
    reference: Reference
    box: Roi
    grown: Roi


def _boxes(config: DataConfig, model: UNet) -> Iterator[_Box]:
    for entry in config:
        raw, reference = open_volume(entry.container, entry.raw), Reference.open(entry)
        margin = [math.ceil(HYSTERESIS_MARGIN_NM / size) for size in entry.voxel_size]
        for box in scored_boxes(entry, reference, model):
            yield _Box(raw, reference, box, box.grow(margin).intersect(raw.roi))


def _probability(model: UNet, raw: Volume, region: Roi, device: torch.device, precision: Precision) -> np.ndarray:
    """The organelle probability of ``model`` over ``region`` (float32), the raw reflected beyond its dataset."""
    context = model.config.context
    data = raw.read(region.grow(context), padding="reflect")
    return predict_array(model, data, Roi(context, region.shape), block_shape=None, padding="reflect", precision=precision, device=device)[1]


def _f1(counts: ConfusionCounts) -> float | None:
    return None if math.isnan(counts.f1) else float(counts.f1)


#: Predicted probabilities kept between the two steps of :func:`choose_decisions` (voxels, float16);
#: boxes beyond it are predicted again.
KEPT_VOXELS = 2**27


def choose_decisions(model: UNet, config: DataConfig, *, device: torch.device, precision: Precision) -> Decisions:
    """Choose the foreground and seed thresholds of two-class ``model`` on the validation data ``config``.

    Each validation box is predicted once (around it, for the hysteresis) and kept for the
    seed sweep up to :data:`KEPT_VOXELS`: the calibrated model's probability is a monotonic
    function of the model's, ``p' >= s`` exactly where ``logit(p) >= logit(s) + logit(t)``.

    Parameters
    ----------
    model
        The trained network (not changed).
    config
        Validation data, loaded with its datasets checked; labelled voxels inside the cell
        mask count (metric masks do not: the decision concerns every voxel).
    device, precision
        Where and how to run the network.

    Returns
    -------
    Decisions

    Raises
    ------
    ValueError
        If the model does not have two classes or the validation data holds no organelle.
    """
    if model.config.num_classes != 2:
        raise ValueError(f"thresholds are chosen for two-class models, this one has {model.config.num_classes} classes")
    model.eval()
    histogram: ProbabilityHistogram | None = None
    argmax = ConfusionCounts()
    kept: list[tuple[_Box, np.ndarray | None]] = []
    kept_voxels = 0
    for part in _boxes(config, model):
        probability = _probability(model, part.raw, part.grown, device, precision)
        scored = probability[part.box.relative_to(part.grown.offset).to_slices()]
        target, inside, _ = part.reference.read_regions(part.box)
        block = ProbabilityHistogram.from_arrays(scored, target == 1, inside)
        histogram = block if histogram is None else histogram + block
        argmax = argmax + confusion_counts(scored >= 0.5, target == 1, inside)
        keep = kept_voxels + probability.size <= KEPT_VOXELS
        kept_voxels += probability.size if keep else 0
        kept.append((part, probability.astype(np.float16) if keep else None))
    if histogram is None or not histogram.positives.sum():
        raise ValueError("the validation data holds no labelled organelle voxel: thresholds cannot be chosen")
    threshold = min(max(histogram.best_threshold(), 0.01), 0.99)
    seeds = dict.fromkeys(SEED_CANDIDATES, ConfusionCounts())
    for part, stored in kept:
        probability = _probability(model, part.raw, part.grown, device, precision) if stored is None else stored
        target, inside, _ = part.reference.read_regions(part.box)
        window = part.box.relative_to(part.grown.offset).to_slices()
        for candidate in SEED_CANDIDATES:
            found = apply_hysteresis_threshold(probability, threshold - 1e-6, _uncalibrated(candidate, threshold) - 1e-6)[window]
            seeds[candidate] = seeds[candidate] + confusion_counts(found, target == 1, inside)
    plain = seeds[SEED_CANDIDATES[0]]
    best = max(SEED_CANDIDATES, key=lambda candidate: (_f1(seeds[candidate]) or 0.0, -candidate))
    gain = (_f1(seeds[best]) or 0.0) - (_f1(plain) or 0.0)
    seed = best if best != SEED_CANDIDATES[0] and gain >= MIN_SEED_GAIN_F1 else None
    f1 = {"argmax": _f1(argmax), "threshold": _f1(plain), "seeded": _f1(seeds[seed or SEED_CANDIDATES[0]])}
    return Decisions(threshold, seed, f1, int(histogram.positives.sum() + histogram.negatives.sum()))


def _uncalibrated(seed: float, threshold: float) -> float:
    """The model's probability at which the model calibrated to ``threshold`` gives ``seed``."""
    logit = math.log(seed / (1 - seed)) + math.log(threshold / (1 - threshold)) if seed < 1 else math.inf
    return 1.0 if logit == math.inf else 1 / (1 + math.exp(-logit))


def calibrated(model: UNet, threshold: float) -> UNet:
    """A copy of two-class ``model`` whose argmax is ``probability >= threshold`` of ``model``."""
    copy = UNet(model.config)
    copy.load_state_dict(model.state_dict())
    copy.set_foreground_threshold(threshold)
    copy.eval()
    return copy


def decided_card(card: ModelCard, decisions: Decisions, chosen_on: str) -> ModelCard:
    """``card`` with the seed threshold and the record of both decisions (for the calibrated model)."""
    training = {**(card.training or {}), **decisions.record(chosen_on)}
    return replace(card, seed_threshold=decisions.seed_threshold, training=training)


def make_run_model(
    run: RunFolder, val_config: DataConfig, *, device: torch.device, precision: Precision, log: Callable[[str], None] | None = None
) -> Path | None:
    """Write the run's model (``run-<id>.pt``): its best checkpoint (its latest, while none is best)
    with the decisions chosen on ``val_config``; record it in the run. ``None`` (nothing written)
    for a run without checkpoints or of more than two classes, or validation data without organelle."""
    record = run.record()
    checkpoints = run.checkpoints()
    entry = record.get("best") or (checkpoints[-1] if checkpoints else None)
    if entry is None:
        return None
    model, card = load_checkpoint(run.path / entry["file"])
    if model.config.num_classes != 2:
        return None
    try:
        decisions = choose_decisions(model, val_config, device=device, precision=precision)
    except ValueError as error:
        if log is not None:
            log(f"run {run.id}: no decisions chosen ({error}); predict with its best checkpoint as it is")
        return None
    chosen_on = f"the validation data of run {run.id} ({val_config.path.name}: {decisions.voxels} labelled voxels)"
    save_checkpoint(run.model_path, calibrated(model, decisions.threshold), decided_card(card, decisions, chosen_on))
    run.set_model(entry["iteration"], {"threshold": decisions.threshold, "seed_threshold": decisions.seed_threshold, "f1": decisions.f1})
    if log is not None:
        seed = "none (every object kept)" if decisions.seed_threshold is None else f"{decisions.seed_threshold:g}"
        f1 = {key: "-" if value is None else f"{value:.3f}" for key, value in decisions.f1.items()}
        log(
            f"run {run.id}: model {run.model_path} from iteration {entry['iteration']}, decisions chosen on {decisions.voxels} validation voxels: "
            f"foreground threshold {decisions.threshold:g} (F1 {f1['argmax']} at 0.5 -> {f1['threshold']}), seed threshold {seed} (F1 {f1['seeded']})"
        )
    return run.model_path
