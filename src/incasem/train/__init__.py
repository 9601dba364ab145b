"""Training of the 3D U-Net (DESIGN §6): sampling, augmentation, loss and the training loop."""
