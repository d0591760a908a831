"""Multi-task learning core: shared encoder + task heads, samplers, trainer.

Importing the package registers the compacted encoders (``masks.compact``) with transformers'
``AutoConfig`` / ``AutoModel`` (see :mod:`mtl.auto_classes`). That imports transformers' Auto
registry; the model code of the compacted encoders is imported only when one is built or loaded.
"""

from .auto_classes import register_auto_classes

register_auto_classes()
