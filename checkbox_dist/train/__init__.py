from checkbox_dist.train.loop import main

__all__ = ["main"]
