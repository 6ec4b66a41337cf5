"""A weight matrix read a block at a time, so that no full-size float64 (or float32) copy of it
is ever made.

The ESD of an N×M matrix (N ≥ M) needs only the M×M Gram matrix of its *tall* orientation T
(T = W when W has more rows than columns, T = Wᵀ otherwise), and that Gram matrix is a sum over
row blocks of T: TᵀT = Σ BᵢᵀBᵢ. A :class:`MatrixBlocks` yields those row blocks as float32:

* :class:`FileBlocks` reads them from a ``.safetensors`` file through a read-only memory map,
  handing each block's pages back to the kernel (``madvise(MADV_DONTNEED)``) once copied, so
  the file's pages never pile up in the process's resident memory;
* :class:`TensorBlocks` slices them from a tensor already in memory (a module's weight, a
  memory-mapped ``.pt`` tensor, a difference W − W_base).

A block holds at most :data:`BLOCK_BYTES` bytes in float64; a matrix that fits in one block
comes out whole (the same array the unblocked route would see).

:func:`location_of` finds the file and tensor name behind a layer read from a safetensors
file, as a :class:`SafetensorsTensor`: a picklable loader (a path and a tensor name), so a
worker process can open the file itself.

>>> import numpy as np, torch
>>> W = torch.arange(12, dtype=torch.float32).reshape(3, 4)  # wide: T = Wᵀ is 4×3
>>> blocks = TensorBlocks(W, block_bytes=2 * 3 * 8)  # two rows of T per block
>>> [b.shape for b in blocks.tall_blocks()]
[(2, 3), (2, 3)]
>>> bool(np.array_equal(np.vstack(list(blocks.tall_blocks())), W.numpy().T))
True
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BLOCK_BYTES", "MatrixBlocks", "FileBlocks", "TensorBlocks", "SafetensorsTensor",
           "blocks_of", "file_blocks", "location_of"]

#: The most bytes one block may take in float64 (32 MiB: 1,024 rows of a 4096-wide matrix).
BLOCK_BYTES = 32 * 2**20

# safetensors dtype name -> NumPy dtype of the stored bytes (bf16 is decoded by hand)
_STORED: dict[str, np.dtype[Any]] = {"BF16": np.dtype("<u2"), "F16": np.dtype("<f2"),
                                     "F32": np.dtype("<f4"), "F64": np.dtype("<f8")}


@dataclass(frozen=True)
class SafetensorsTensor:
    """Loads one tensor of a safetensors file (picklable: the path and the tensor name).

    >>> SafetensorsTensor("model.safetensors", "lm_head.weight").key
    'lm_head.weight'
    """

    path: str
    key: str

    def __call__(self) -> Any:
        from safetensors import safe_open

        with safe_open(self.path, framework="pt") as h:
            return h.get_tensor(self.key)


class MatrixBlocks:
    """Row blocks of a 2-D matrix's tall orientation, as float32.

    Attributes:
        shape: the stored shape (rows, cols).
        N, M: the larger and the smaller side.
        block_rows: rows of T per block.
    """

    def __init__(self, shape: tuple[int, int], block_bytes: int | None = None):
        block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
        self.shape = (int(shape[0]), int(shape[1]))
        self.N, self.M = max(self.shape), min(self.shape)
        self.tall = self.shape[0] >= self.shape[1]
        self.block_rows = max(1, min(self.N, block_bytes // (8 * max(self.M, 1))))

    @property
    def n_blocks(self) -> int:
        """How many blocks :meth:`tall_blocks` yields."""
        return -(-self.N // self.block_rows)

    def tall_blocks(self) -> Iterator[np.ndarray]:
        """float32 row blocks of T (each ``(rows, M)``), in order."""
        for a in range(0, self.N, self.block_rows):
            yield self._block(a, min(a + self.block_rows, self.N))

    def whole(self) -> np.ndarray:
        """The matrix as stored, float32 (for a matrix that fits in one block)."""
        block = self._block(0, self.N)
        return block if self.tall else block.T

    def _block(self, a: int, b: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file (no-op for tensors)."""


class TensorBlocks(MatrixBlocks):
    """Blocks of a 2-D real tensor (or array) already in memory."""

    def __init__(self, tensor: Any, block_bytes: int | None = None):
        super().__init__(tuple(tensor.shape), block_bytes)  # type: ignore[arg-type]
        self._t = tensor

    def _block(self, a: int, b: int) -> np.ndarray:
        part = self._t[a:b] if self.tall else self._t[:, a:b]
        if isinstance(part, np.ndarray):
            out = np.asarray(part, dtype=np.float32)
        else:
            out = part.detach().to("cpu").float().numpy()
        return out if self.tall else out.T


class FileBlocks(MatrixBlocks):
    """Blocks of one 2-D tensor of a safetensors file, read through a memory map."""

    def __init__(self, path: str, key: str, shape: tuple[int, int], dtype: str, start: int,
                 block_bytes: int | None = None):
        super().__init__(shape, block_bytes)
        stored = _STORED[dtype]
        self._bf16 = dtype == "BF16"
        page = mmap.ALLOCATIONGRANULARITY
        base = start - start % page
        length = start - base + self.shape[0] * self.shape[1] * stored.itemsize
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), length, access=mmap.ACCESS_READ, offset=base)
        self._view = np.frombuffer(self._map, dtype=stored, count=self.shape[0] * self.shape[1],
                                   offset=start - base).reshape(self.shape)

    def _block(self, a: int, b: int) -> np.ndarray:
        raw = self._view[a:b] if self.tall else self._view[:, a:b]
        if self._bf16:  # bfloat16 = the top 16 bits of a float32
            out = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            out = raw.astype(np.float32)
        self._release()
        return out if self.tall else out.T

    def _release(self) -> None:
        """Drop the mapped pages from this process (they stay in the page cache)."""
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if advice is not None:
            self._map.madvise(advice)

    def close(self) -> None:
        del self._view
        self._map.close()


def _header(path: str) -> tuple[dict[str, Any], int, int]:
    """(header, offset of the data, file size) of a safetensors file."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        size = os.fstat(f.fileno()).st_size
        if not 0 < n <= size - 8:
            raise ValueError("bad header length")
        return json.loads(f.read(n)), 8 + n, size


def file_blocks(path: str, key: str, block_bytes: int | None = None) -> FileBlocks | None:
    """:class:`FileBlocks` for ``key`` of ``path``; None when the tensor is not a 2-D real
    float tensor laid out as the format says (the caller then loads it whole, which reports
    any problem in lmlab's words)."""
    try:
        header, data, size = _header(path)
        info = header[key]
        dtype, shape, (lo, hi) = info["dtype"], info["shape"], info["data_offsets"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if dtype not in _STORED or len(shape) != 2 or min(shape) < 1:
        return None
    if hi - lo != shape[0] * shape[1] * _STORED[dtype].itemsize or data + hi > size:
        return None
    return FileBlocks(path, key, (shape[0], shape[1]), dtype, data + lo, block_bytes)


def location_of(load: Any) -> SafetensorsTensor | None:
    """The file and tensor name behind a layer's loader when it reads a safetensors file (a
    :class:`~lmlab.spectral.sources.StoredTensor` of a store that knows the tensor's file),
    else None (a module's weight, a ``.pt`` tensor, a difference W − W_base).

    >>> location_of(lambda: None) is None
    True
    """
    from lmlab.spectral.sources import StoredTensor

    if isinstance(load, SafetensorsTensor):
        return load
    if isinstance(load, StoredTensor):
        where = getattr(load.store, "location", None)
        path = where(load.key) if callable(where) else None
        if path is not None:
            return SafetensorsTensor(str(path), load.key)
    return None


def blocks_of(load: Any, block_bytes: int | None = None) -> tuple[MatrixBlocks | None, Any]:
    """Blocks of what a :class:`~lmlab.spectral.sources.LayerRef` loader gives: read from its
    file when it is a :class:`SafetensorsTensor`, else sliced from the loaded tensor.

    Returns:
        ``(blocks, None)``, or ``(None, tensor)`` with the loaded tensor when it is not a 2-D
        real matrix (complex weights, conv kernels: the whole-matrix route takes them).

    >>> import torch
    >>> blocks, _ = blocks_of(lambda: torch.ones(3, 2))
    >>> blocks.shape, blocks.n_blocks
    ((3, 2), 1)
    """
    where = location_of(load)
    if where is not None:
        found = file_blocks(where.path, where.key, block_bytes)
        if found is not None:
            return found, None
    tensor = load()
    if tensor.ndim != 2 or tensor.is_complex() or min(tensor.shape) < 1:
        return None, tensor
    return TensorBlocks(tensor, block_bytes), None
