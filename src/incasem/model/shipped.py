"""Models shipped inside the package: ready to use, nothing to download.

Each is a self-describing incasem checkpoint in the package folder ``shipped/``,
trained with ``incasem train`` by a recipe in the repository's ``training/`` folder
(data configs, training config, the command). Its card holds what a user needs to
trust it: voxel size, training data and the held-out part, iterations, training time
and hardware, and the scores on the held-out part (plain and with the exclusion
zone) — see :func:`describe`.
"""

from __future__ import annotations

from pathlib import Path

from incasem.model.checkpoint import ModelCard, read_card

#: Package folder of the shipped checkpoints (``<name>.pt``).
SHIPPED_FOLDER = Path(__file__).with_name("shipped")


def shipped_models() -> dict[str, Path]:
    """The shipped models by name (the file name without ``.pt``), sorted by name."""
    return {path.stem: path for path in sorted(SHIPPED_FOLDER.glob("*.pt"), key=lambda path: path.stem)}


def _score(scores: dict | None) -> str:
    if not scores or scores.get("f1") is None:
        return "-"
    return f"F1 {scores['f1']:.3f} IoU {scores['iou']:.3f}"


def describe(card: ModelCard) -> str:
    """One line: training data, held-out scores (exclusion zone; plain) and training time / hardware."""
    training, scores = card.training or {}, card.validation_scores or {}
    held_out = scores.get("held_out", {})
    parts = [
        f"trained on {training.get('data', '?')}",
        f"held out {training.get('held_out', '?')}: {_score(held_out.get('exclusion_zone'))} (exclusion zone), "
        f"{_score(held_out.get('plain'))} (all voxels)",
        f"{training.get('iterations', card.iteration)} iterations, {training.get('hours', '?')} h on {training.get('hardware', '?')}",
    ]
    if "decision_threshold" in training:
        parts.append(f"foreground threshold {training['decision_threshold']['threshold']:g} (set on the training volumes)")
    if card.seed_threshold is not None:
        parts.append(f"keeps objects that reach probability {card.seed_threshold:g} (seed threshold, set on the training volumes)")
    return "; ".join(parts)


def shipped_card(name: str) -> ModelCard:
    """The card of shipped model ``name``."""
    return read_card(shipped_models()[name])
