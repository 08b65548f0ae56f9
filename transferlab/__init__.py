"""transferlab: a lab for how pretraining knowledge transfers and generalizes."""

from transferlab.core.errors import TransferlabError

__version__ = "0.1.0"
__all__ = ["TransferlabError", "__version__"]
