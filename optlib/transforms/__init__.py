"""Layer 2: small chainable ``GradientTransformation``s, each doing one job."""

from optlib.transforms.clipping import *  # noqa: F403
from optlib.transforms.factored import *  # noqa: F403
from optlib.transforms.learning_rate import *  # noqa: F403
from optlib.transforms.moments import *  # noqa: F403
from optlib.transforms.momentum import *  # noqa: F403
from optlib.transforms.regularization import *  # noqa: F403
from optlib.transforms.second_order import *  # noqa: F403
from optlib.transforms.torch_lbfgs import *  # noqa: F403
