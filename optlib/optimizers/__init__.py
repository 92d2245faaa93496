"""Layer 3: reference-named optimizers, each one readable ``optax.named_chain``."""

from optlib.optimizers.extras import (
    ademamix,
    lion,
    stable_adamw,
)
from optlib.optimizers.huggingface import adafactor
from optlib.optimizers.second_order import bfgs, newton
from optlib.optimizers.torch import (
    adadelta,
    adagrad,
    adam,
    adamax,
    adamw,
    nadam,
    radam,
    rmsprop,
    rprop,
    sgd,
)

__all__ = [
    # torch.optim
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "nadam",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
    # transformers.optimization
    "adafactor",
    # second order (Newton's method, BFGS)
    "bfgs",
    "newton",
    # reference packages that Hugging Face Trainer offers (bitsandbytes, torch-optimi)
    "ademamix",
    "lion",
    "stable_adamw",
]
