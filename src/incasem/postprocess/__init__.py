"""After prediction: thresholded masks and instances (connected components), blockwise."""
