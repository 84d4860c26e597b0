"""checkbox_dist: train and serve a classifier of UI checkbox states (checked / unchecked / other)."""

__version__ = "0.1.0"
