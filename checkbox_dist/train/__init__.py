from checkbox_dist.train.loop import main

run = main

__all__ = ["main", "run"]
