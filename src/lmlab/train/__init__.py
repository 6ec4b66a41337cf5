"""Training: one loop with callbacks (the loop itself lands with the first training study).

>>> from lmlab.train import Callback, TrainState
>>> TrainState(step=3).step
3
"""

from lmlab.train.callbacks import Callback, TrainState

__all__ = ["Callback", "TrainState"]
