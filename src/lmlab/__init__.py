"""lmlab: a bench for the science of language-model training.

>>> import lmlab
>>> isinstance(lmlab.__version__, str)
True
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
