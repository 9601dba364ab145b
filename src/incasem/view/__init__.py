"""Looking at the data: the neuroglancer viewer, preview pictures and training curves."""
