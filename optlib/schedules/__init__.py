"""Layer 1: schedules, pure jit-traceable functions of the update count."""

from optlib.schedules._core import *  # noqa: F403
from optlib.schedules.extras import *  # noqa: F403
from optlib.schedules.hf import *  # noqa: F403
from optlib.schedules.swa import *  # noqa: F403
from optlib.schedules.torch import *  # noqa: F403
