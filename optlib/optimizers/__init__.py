"""Layer 3: reference-named optimizers, each one readable ``optax.chain``."""

from optlib.optimizers.adafactor import *  # noqa: F403
from optlib.optimizers.lbfgs import *  # noqa: F403
from optlib.optimizers.second_order import *  # noqa: F403
from optlib.optimizers.torch import *  # noqa: F403
