"""Train the small demo model that ships with the bundled example.

This is a short, self-contained script, not part of the incasem package: it trains a
small 3D U-Net to segment mitochondria in the Lucchi++ FIB-SEM data (5 nm isotropic)
on the CPU in about ten minutes, so that the README demo can run ``incasem predict``
on ``examples/lucchi_crop`` without downloading anything. Use incasem's own training
command for real models.

The bundled example is a crop of the same data (slices 60-107, rows 160-351,
columns 256-447). That region is held out: the script trains only on the slabs
z in [0, 52) and [116, 165), which leaves 8 slices between the training data and the
held-out slab. Each training slab is read on its own and reflect-padded, so no voxel
of z in [52, 116) is ever seen during training. At the end the held-out crop is
equalised on its own (as ``incasem equalize`` does for the demo), predicted with
reflect padding for the context, and the F1 score of the mitochondria class is
printed and stored in the checkpoint's model card.

Inputs are CLAHE-equalised like the demo's ``volumes/raw_equalized_0.02``
(``skimage.exposure.equalize_adapthist`` with ``kernel_size=128, clip_limit=0.02``,
which ``incasem equalize`` reproduces) and normalised with
:func:`incasem.model.unet.normalize_raw`.

Usage (from the repository root)::

    python examples/train_demo_model.py [DATA_DIR] [--iterations N] [--output PATH]

``DATA_DIR`` holds ``image/*.tif`` (uint8) and ``labels/mito/*.tif`` (0/1); it defaults
to ``../shared/data/lucchi_pp_fibsem`` relative to the repository root.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from skimage.exposure import equalize_adapthist
from skimage.util import img_as_ubyte

from incasem.evaluate.metrics import confusion_counts
from incasem.model.checkpoint import ModelCard, save_checkpoint
from incasem.model.unet import UNet, UNetConfig, count_parameters, normalize_raw
from incasem.predict.core import predict_array

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT / ".." / "shared" / "data" / "lucchi_pp_fibsem"
DEFAULT_OUTPUT = REPO_ROOT / "examples" / "demo_model_mito_5nm.pt"

# Region of the bundled example (examples/lucchi_crop), held out from training.
HELDOUT = (slice(60, 108), slice(160, 352), slice(256, 448))
# Training slabs along z: at least 8 slices away from the held-out slab.
TRAIN_Z = ((0, 52), (116, 165))

CLAHE_KERNEL = 128
CLAHE_CLIP = 0.02

# Four levels like the published incasem network, but 6 instead of 32 feature maps:
# the context of 47 voxels (235 nm) is needed to tell mitochondria from other dark
# structures; a 3-level network (context 21) confused them.
CONFIG = UNetConfig(
    num_fmaps=6, fmap_inc_factor=2, downsample_factors=((2, 2, 2), (2, 2, 2), (2, 2, 2))
)
# Output size of one training sample (z, y, x); z is limited by the 49-slice slab.
OUTPUT_SHAPE = (30, 70, 70)


def read_stack(folder: Path) -> np.ndarray:
    """Read a folder of 2D TIFF slices (sorted by name) into a (z, y, x) array."""
    files = sorted(folder.glob("*.tif"))
    if not files:
        raise SystemExit(f"no *.tif files in {folder}")
    return np.stack([tifffile.imread(f) for f in files])


def equalize(raw: np.ndarray) -> np.ndarray:
    """3D CLAHE as ``incasem equalize`` (``volumes/raw_equalized_0.02``)."""
    return img_as_ubyte(equalize_adapthist(raw, kernel_size=CLAHE_KERNEL, clip_limit=CLAHE_CLIP))


class Slab:
    """One block of training data: normalised and reflect-padded by the network context."""

    def __init__(self, raw: np.ndarray, labels: np.ndarray, context: tuple[int, int, int]):
        self.shape = labels.shape
        pad = [(c, c) for c in context]
        self.raw = np.pad(normalize_raw(raw), pad, mode="reflect")
        self.labels = labels.astype(np.int64)
        self.foreground = np.argwhere(labels > 0)

    def sample(self, rng: np.random.Generator, out_shape, in_shape):
        """A random (raw, labels) pair; half of the samples are centred on a mitochondrion."""
        if rng.random() < 0.5 and len(self.foreground):
            centre = self.foreground[rng.integers(len(self.foreground))]
            start = [
                int(np.clip(c - o // 2 + rng.integers(-o // 4, o // 4 + 1), 0, s - o))
                for c, o, s in zip(centre, out_shape, self.shape)
            ]
        else:
            start = [int(rng.integers(0, s - o + 1)) for o, s in zip(out_shape, self.shape)]
        # In padded coordinates the input box starts where the output box starts.
        raw = self.raw[tuple(slice(b, b + i) for b, i in zip(start, in_shape))]
        labels = self.labels[tuple(slice(b, b + o) for b, o in zip(start, out_shape))]
        return raw, labels


def training_blocks(raw: np.ndarray, labels: np.ndarray, context) -> list[Slab]:
    """The training slab equalised as a whole, and cut into 2 x 2 (y, x) blocks equalised alone.

    CLAHE adapts to the volume it sees: the demo equalises only the small example crop,
    so half of the training data is equalised in comparably small pieces.
    """
    blocks = [Slab(equalize(raw), labels, context)]
    ys, xs = raw.shape[1] // 2, raw.shape[2] // 2
    for y in (slice(0, ys), slice(ys, None)):
        for x in (slice(0, xs), slice(xs, None)):
            blocks.append(Slab(equalize(raw[:, y, x]), labels[:, y, x], context))
    return blocks


def init_weights(model: UNet) -> None:
    """He initialisation of the ReLU convolutions (the network has no normalisation layers)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv3d) and not name.startswith("final"):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)


def augment(raw: np.ndarray, labels: np.ndarray, order, rng: np.random.Generator):
    """Axis permutation ``order`` (the data are isotropic), random flips, intensity jitter."""
    raw, labels = raw.transpose(order), labels.transpose(order)
    for axis in range(3):
        if rng.random() < 0.5:
            raw, labels = np.flip(raw, axis), np.flip(labels, axis)
    scale, shift = rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1)
    raw = raw * np.float32(scale) + np.float32(shift)
    return np.ascontiguousarray(raw, dtype=np.float32), np.ascontiguousarray(labels)


def balanced_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class weights ``1/(K*fraction)`` with fractions clipped to [0.01, 0.99]."""
    counts = torch.bincount(labels.flatten(), minlength=num_classes).float()
    fractions = (counts / counts.sum()).clamp(0.01, 0.99)
    return 1.0 / (num_classes * fractions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA,
                        help="folder with image/*.tif and labels/mito/*.tif")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--iterations", type=int, default=350)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    start_time = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    data = args.data.resolve()
    raw = read_stack(data / "image")
    labels = read_stack(data / "labels" / "mito")
    if raw.shape != labels.shape or raw.dtype != np.uint8:
        raise SystemExit(f"image {raw.shape} {raw.dtype} and labels {labels.shape} do not match")
    print(f"data {data}: {raw.shape}, mito fraction {(labels > 0).mean():.3f}")

    in_shape = CONFIG.input_shape_for_output(OUTPUT_SHAPE)
    out_shape = CONFIG.output_shape(in_shape)
    slabs = [
        block for a, b in TRAIN_Z for block in training_blocks(raw[a:b], labels[a:b], CONFIG.context)
    ]
    heldout_raw = equalize(raw[HELDOUT])
    heldout_labels = labels[HELDOUT]
    del raw, labels
    print(f"equalised in {time.perf_counter() - start_time:.0f} s; training slabs z {TRAIN_Z}, "
          f"input {in_shape} -> output {out_shape}")

    # channels-last is about 1.7x faster for 3D convolutions on the CPU
    model = UNet(CONFIG)
    init_weights(model)
    model = model.to(memory_format=torch.channels_last_3d)
    print(f"U-Net: {count_parameters(model)} parameters, context {CONFIG.context}")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    # Cosine decay to a tenth of the learning rate.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / args.iterations))
    )
    sizes = np.array([slab.labels.size for slab in slabs], dtype=float)

    running = 0.0
    for iteration in range(1, args.iterations + 1):
        batch_raw, batch_labels = [], []
        order = rng.permutation(3)  # one per batch: the crops are not cubes
        for _ in range(args.batch_size):
            slab = slabs[rng.choice(len(slabs), p=sizes / sizes.sum())]
            x, y = augment(*slab.sample(rng, out_shape, in_shape), order, rng)
            batch_raw.append(x)
            batch_labels.append(y)
        x = torch.from_numpy(np.stack(batch_raw))[:, None]
        x = x.to(memory_format=torch.channels_last_3d)
        y = torch.from_numpy(np.stack(batch_labels))
        logits = model(x)
        loss = F.cross_entropy(logits, y, weight=balanced_weights(y, CONFIG.num_classes))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running += loss.item()
        if iteration % 50 == 0:
            print(f"iteration {iteration}: loss {running / 50:.4f} "
                  f"({time.perf_counter() - start_time:.0f} s)", flush=True)
            running = 0.0

    model.eval()
    probabilities = predict_array(model, heldout_raw, padding="reflect", precision="fp32", device="cpu")
    f1 = confusion_counts(probabilities.argmax(0) == 1, heldout_labels > 0).f1
    wall = time.perf_counter() - start_time
    print(f"held-out F1 (z 60-107, y 160-351, x 256-447): {f1:.4f}")

    card = ModelCard(
        voxel_size_nm=(5, 5, 5),
        class_names=("background", "mito"),
        organelle="mito",
        source="incasem-demo",
        architecture=CONFIG,
        training={
            "script": "examples/train_demo_model.py",
            "data": "Lucchi++ FIB-SEM mitochondria (EPFL hippocampus), 165x512x640, 5 nm",
            "train_z": [list(z) for z in TRAIN_Z],
            "heldout_region_zyx": [[s.start, s.stop] for s in HELDOUT],
            "input": f"CLAHE kernel {CLAHE_KERNEL}, clip {CLAHE_CLIP} (raw_equalized_0.02), "
            "of each whole training slab and of its 2x2 (y, x) blocks",
            "iterations": args.iterations,
            "batch_size": args.batch_size,
            "input_shape": list(in_shape),
            "lr": args.lr,
            "seed": args.seed,
            "loss": "class-balanced cross-entropy",
            "wall_seconds": round(wall),
        },
        iteration=args.iterations,
        validation_scores={"f1_heldout": round(f1, 4)},
    )
    model = model.to(memory_format=torch.contiguous_format)
    path = save_checkpoint(args.output, model, card)
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) after {wall:.0f} s")


if __name__ == "__main__":
    main()
