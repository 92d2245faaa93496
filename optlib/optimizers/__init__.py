"""Layer 3: reference-named optimizers, each one readable ``optax.chain``."""

from optlib.optimizers.torch import *  # noqa: F401,F403
from optlib.optimizers.adafactor import *  # noqa: F401,F403
from optlib.optimizers.second_order import *  # noqa: F401,F403
