"""Models shipped inside the package: ready to use, nothing to download.

Each is a self-describing incasem checkpoint in the package folder ``shipped/``,
trained with ``incasem train`` by a recipe in the repository's ``training/`` folder
(data configs, training config, the command). Its card holds what a user needs to
trust it: voxel size; the three parts of its data — trained on, selected on (what chose
the checkpoint and the thresholds) and held out (used for nothing but the final score) —
with the scores on each (plain and with the exclusion zone); iterations, training time
and hardware — see :func:`describe`.
"""

from __future__ import annotations

from pathlib import Path

from incasem.model.card import ModelCard
from incasem.model.checkpoint import read_card

#: Package folder of the shipped checkpoints (``<name>.pt``).
SHIPPED_FOLDER = Path(__file__).with_name("shipped")


def shipped_models() -> dict[str, Path]:
    """The shipped models by name (the file name without ``.pt``), sorted by name."""
    return {path.stem: path for path in sorted(SHIPPED_FOLDER.glob("*.pt"), key=lambda path: path.stem)}


def _score(scores: dict | None) -> str:
    if not scores or scores.get("f1") is None:
        return "-"
    return f"F1 {scores['f1']:.3f} IoU {scores['iou']:.3f}"


def _scored(part: dict | None) -> str:
    """``: <exclusion zone> (exclusion zone), <all voxels> (all voxels)`` of one part's scores, or nothing."""
    if not part:
        return ""
    zone = f"{_score(part.get('exclusion_zone'))} (exclusion zone), " if part.get("exclusion_zone") else ""
    return f": {zone}{_score(part.get('plain'))} (all voxels)"


def describe(card: ModelCard) -> str:
    """One line: the parts of its data (trained on, selected on, held out) with their scores,
    training time and hardware, and the thresholds set at shipping."""
    training, scores = card.training or {}, card.validation_scores or {}
    parts = [f"trained on {training.get('data', '?')}{_scored(scores.get('trained_on'))}"]
    if "selected_on" in training:
        parts.append(f"selected on {training['selected_on']}{_scored(scores.get('selected_on'))}")
    parts += [
        f"held out {training.get('held_out', '?')}{_scored(scores.get('held_out')) or ': -'}",
        f"{training.get('iterations', card.iteration)} iterations, {training.get('hours', '?')} h on {training.get('hardware', '?')}",
    ]
    if "decision_threshold" in training:
        parts.append(f"foreground threshold {training['decision_threshold']['threshold']:g} (set on the {_chosen_on(training['decision_threshold'])})")
    if card.seed_threshold is not None:
        parts.append(f"keeps objects that reach probability {card.seed_threshold:g} (seed threshold, set on the {_chosen_on(training.get('seed_threshold'))})")
    return "; ".join(parts)


def _chosen_on(record: dict | None) -> str:
    """Which part set a threshold, from its record's ``chosen_on`` (``"validation part (val.json), best F1"``)."""
    chosen = str((record or {}).get("chosen_on", "training volumes"))
    return chosen.split(" (")[0]


def shipped_card(name: str) -> ModelCard:
    """The card of shipped model ``name``."""
    return read_card(shipped_models()[name])
