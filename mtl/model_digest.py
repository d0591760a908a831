"""The identity of a model directory's weights, so that a finished run can be told apart from one trained from a
model rebuilt at the same path.

A study builds its students into fixed folders (``models/distilled``...). Run again with other settings, or on
another machine, the folder holds other weights under the same name, and a finished run of the old model must
not be taken for a run of the new one. Every run trained from a local model directory records
:func:`weights_digest` of it in ``results.json``; :meth:`mtl.rundir.RunDir.conflicts` compares it with the folder's
weights now. A model named on the hub (or ``minilm``, the packaged one) is identified by its name.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from safetensors import safe_open

from masks.mask import tensor_record
from mtl.data import file_fingerprint
from mtl.model import MODEL_ALIASES

WEIGHT_SUFFIXES = (".safetensors", ".bin")  # model.safetensors, shards, pytorch_model.bin


def is_model_alias(name: str | os.PathLike) -> bool:
    """``name`` is one of our names for a packaged model (``minilm``), not a path."""
    return os.fspath(name).lower() in MODEL_ALIASES


def local_model_dir(name: str | os.PathLike) -> Path | None:
    """``name`` as a directory when it is one on this machine, else None (a hub name, an alias)."""
    if is_model_alias(name):
        return None
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def weights_digest(directory: str | os.PathLike) -> str | None:
    """SHA-256 of the weights in ``directory``: the tensors of its safetensors files (names, dtypes, sizes, bytes:
    :func:`masks.mask.tensor_record`; in name order: one file or shards, whatever the metadata), then the bytes of
    any other weight file (``.bin``). None when it holds no weights. Each file is read once per version in a
    process (keyed on size and mtime)."""
    files = sorted(p for p in Path(directory).expanduser().iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    tensors: dict[str, str] = {}
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        if path.suffix == ".safetensors":
            tensors.update(_tensor_digests(str(path.resolve()), stat.st_size, stat.st_mtime_ns))
        else:
            digest.update(f"{path.name}:{_file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)};".encode())
    for name in sorted(tensors):
        digest.update(f"{name}:{tensors[name]};".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _tensor_digests(path: str, size: int, mtime_ns: int) -> dict[str, str]:  # size and mtime: the cache key
    with safe_open(path, framework="pt") as f:
        return {name: hashlib.sha256(tensor_record(name, f.get_tensor(name))).hexdigest()
                for name in f.keys()}  # noqa: SIM118 - safe_open is not a mapping


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: the cache key
    return file_fingerprint(Path(path))["sha256"]


def model_identity(name: str | os.PathLike) -> dict[str, str]:
    """What ``results.json`` records of the model a run started from: its name, and for a local directory the
    digest of its weights."""
    out = {"name": os.fspath(name)}
    local = local_model_dir(name)
    digest = weights_digest(local) if local is not None else None
    return {**out, "sha256": digest} if digest else out
