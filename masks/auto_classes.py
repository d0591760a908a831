"""Register the compacted encoders with transformers' ``AutoConfig`` / ``AutoModel`` (saving or loading a compacted model does it; or call it).

After registration, ``AutoModel.from_pretrained(DIR)`` on a directory written by ``masks.compact``
returns the compacted encoder (``config.model_type == "compact_bert"``, ...). Nothing registers at import time:
:func:`mtl.compact_run.save_compacted` and :func:`mtl.model.load_encoder` call :func:`register_auto_classes`, and a
user who loads a compacted directory with ``AutoModel`` directly calls it once first.

Cheap and idempotent:

- the configs are registered with ``AutoConfig``. This imports transformers' Auto registry and eight
  small configuration modules: about 1-2 s on top of ``import torch`` on the shared 2-core machine,
  paid only by processes that do not import transformers anyway;
- ``AutoModel`` gets :class:`LazyCompactModel`, a stand-in that imports the model code
  (:mod:`masks.compact_model`, seconds) only when a compacted model is actually built or loaded;
- a second call does nothing.

(Deferring even the first step with an import hook was tried and rejected: registering from inside
transformers' own import sequence breaks on some import orders, e.g. ``from transformers import
BertConfig`` first.)
"""

from __future__ import annotations

from typing import Any

_registered = False


def register_auto_classes() -> None:
    """Register the compacted configs with AutoConfig and :class:`LazyCompactModel` with AutoModel (once)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel

    from masks.compact_config import COMPACT_CONFIGS

    for cls in COMPACT_CONFIGS.values():
        AutoConfig.register(cls.model_type, cls, exist_ok=True)
        AutoModel.register(cls, LazyCompactModel, exist_ok=True)
    _registered = True


def compact_model_class(config: Any) -> type:
    """The model class of a compacted config (imports :mod:`masks.compact_model`)."""
    from masks.compact_model import COMPACT_MODELS

    return COMPACT_MODELS[config.model_type]


class LazyCompactModel:
    """What ``AutoModel`` holds for every compacted config: imports and delegates to the real class."""

    @classmethod
    def from_pretrained(cls, path, *args, config=None, **kwargs):
        if config is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(path)
        return compact_model_class(config).from_pretrained(path, *args, config=config, **kwargs)

    @classmethod
    def _from_config(cls, config, **kwargs):
        return compact_model_class(config)._from_config(config, **kwargs)
