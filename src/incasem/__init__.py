"""incasem: organelle segmentation in volume EM with 3D U-Nets."""

__version__ = "0.1.0"
