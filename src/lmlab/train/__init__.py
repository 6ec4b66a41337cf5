"""Training: one loop with callbacks, causal-LM loss and perplexity, checkpoints, torchrun.

Checkpoints, random states, resume, the NaN guard and the progress bar of every training loop
(this one, :mod:`lmlab.train.sampled`, the induction study's) are :mod:`lmlab.train.core`'s.

>>> from lmlab.train import Callback, TrainState, TrainConfig
>>> TrainState(step=3).step, TrainConfig().warmup_steps
(3, 20)
"""

from lmlab.train.callbacks import Callback, Timed, TrainState
from lmlab.train.distributed import DistContext, setup
from lmlab.train.lm import LMEval, evaluate_lm, token_loss_sum
from lmlab.train.loop import TrainConfig, TrainResult, train

__all__ = ["Callback", "TrainState", "Timed", "TrainConfig", "TrainResult", "train", "evaluate_lm",
           "LMEval", "token_loss_sum", "DistContext", "setup"]
