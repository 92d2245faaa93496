"""Layer 3: reference-named optimizers, each one readable ``optax.named_chain``."""

from optlib.optimizers.extras import (
    ademamix,
    lion,
    stable_adamw,
)
from optlib.optimizers.huggingface import adafactor
from optlib.optimizers.lbfgs import (
    lbfgs,
)
from optlib.optimizers.muon import (
    muon,
)
from optlib.optimizers.schedule_free import (
    schedule_free_adamw,
    schedule_free_radam,
    schedule_free_sgd,
)
from optlib.optimizers.second_order import bfgs, newton
from optlib.optimizers.torch import (
    adadelta,
    adagrad,
    adam,
    adamax,
    adamw,
    asgd,
    nadam,
    radam,
    rmsprop,
    rprop,
    sgd,
)
from optlib.optimizers.torch_adafactor import (
    torch_adafactor,
)

__all__ = [
    # torch.optim
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
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
    # torch.optim.Adafactor
    "torch_adafactor",
    # schedule-free optimizers (facebookresearch schedulefree)
    "schedule_free_adamw",
    "schedule_free_radam",
    "schedule_free_sgd",
    # torch.optim.Muon
    "muon",
    # torch.optim.LBFGS
    "lbfgs",
]
