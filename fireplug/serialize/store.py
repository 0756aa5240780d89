"""Storage of arrays in fp's HDF5 format: chunked, Blosc 1-compressed, checksummed datasets.

Every dataset holds raw bytes (so every fixed-size dtype is stored alike) in chunks of whole
rows, up to 2 MiB each, compressed with Blosc 1 (HDF5 filter 32001), which both the laptop's
PyTables and the image's Debian PyTables 3.7 read (Blosc2 would be unreadable in the image).
Where PyTables has direct chunk I/O (3.8+), fp compresses chunks itself with python-blosc on
all cores (``pipeline.Pool``) and writes and reads them directly; elsewhere HDF5's filter
pipeline does the same work, more slowly. A checksum per chunk (xxh3-64; CRC-32 in format 1)
makes damage an error, never a wrong value.

This module holds what both directions share (the format's constants, checksums, errors, the
optional modules loaded when first needed); ``writer.py`` writes, ``reader.py`` reads.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


FORMAT_VERSION = 2  # 2: xxh3-64 checksums (1: CRC-32)

META_ATTRIBUTE = "FIREPLUG"

CHUNK_BYTES = 2 << 20  # MB-sized chunks: large enough for Blosc's threads, small enough to stream

CODECS = ("lz4", "zstd", "blosclz", "zlib", "lz4hc")

KINDS = ("ndarray", "sparse", "frame")

TILE_ROWS = 8192  # rows transposed at once between C order and columns: a tile stays in cache


class SerializeError(Exception):
    """A file cannot be written or read; the message names the file and says why."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{os.fspath(path)}: {message}")
        self.path = os.fspath(path)


@dataclass(frozen=True)
class Checksum:
    """How a format version checks chunks: one table ``<dataset><suffix>`` of (data, compressed) digests."""

    name: str
    suffix: str
    dtype: str

    @classmethod
    def of(cls, meta: dict[str, Any]) -> Checksum:
        if meta["format"] < 2:
            return CRC32
        if meta.get("checksum") != XXH3.name:
            raise ValueError(f"unknown checksum {meta.get('checksum')!r}")
        return XXH3

    def table(self, dataset: str) -> str:
        return f"{dataset}{self.suffix}"

    def digest(self, data: Any) -> int:
        if self is CRC32:
            return zlib.crc32(data)
        return int(xxhash_module().xxh3_64_intdigest(data))

    def hasher(self) -> Any:
        assert self is XXH3
        return xxhash_module().xxh3_64()


CRC32 = Checksum("crc32", "_crc", "uint32")  # format 1

XXH3 = Checksum("xxh3-64", "_sum", "uint64")  # format 2: 3x faster than CRC-32 here (10 GB/s)

CHECKSUM = XXH3  # what files are written with


class Stages:
    """Reused buffers of one shape (fresh ones would cost a page fault per 4 KiB, every time)."""

    def __init__(self, np: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.np, self.shape, self.dtype = np, shape, dtype
        self._free: list[np.ndarray] = []

    def take(self) -> np.ndarray:
        try:
            return self._free.pop()  # atomic: workers take and give back
        except IndexError:
            return self.np.empty(self.shape, dtype=self.dtype)

    def give(self, stage: np.ndarray) -> None:
        self._free.append(stage)


def transpose(source: np.ndarray, target: np.ndarray) -> None:
    """``target[...] = source.T`` in tiles of rows that stay in cache (one column at a time was 3x slower)."""
    for start in range(0, len(target), TILE_ROWS):
        target[start : start + TILE_ROWS] = source[:, start : start + TILE_ROWS].T


def rows_per_chunk(np: Any, dtype: np.dtype, trailing: tuple[int, ...]) -> int:
    """Rows of ``trailing`` shape per chunk of a dataset: whole rows, about ``CHUNK_BYTES``."""
    return max(1, CHUNK_BYTES // max(bytes_per_row(np, dtype, trailing), 1))


def bytes_per_row(np: Any, dtype: np.dtype, trailing: tuple[int, ...]) -> int:
    """Bytes in one row of ``trailing`` shape (0 when one of its dimensions is 0)."""
    return dtype.itemsize * (int(np.prod(trailing)) if trailing else 1)


def dtype_text(dtype: np.dtype) -> Any:
    from numpy.lib import format as npy_format

    return npy_format.dtype_to_descr(dtype)


def needs(path: str | os.PathLike[str], module: str, what: str, extra: str) -> Any:
    """``module`` imported, or a SerializeError saying which package to install.

    Raises:
        SerializeError: ``module`` is not installed here.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        package = module.split(".")[0]
        raise SerializeError(path, f"{what} needs {package}, which is not installed here: pip install {package} (or pip install 'fireplug[{extra}]')") from e


def numpy_module() -> Any:
    import numpy

    return numpy


def blosc_for_pool() -> Any:
    """python-blosc set for the pool: one thread per call, GIL released (calls run side by side)."""
    blosc = blosc_module()
    blosc.set_nthreads(1)
    blosc.set_releasegil(True)
    return blosc


def xxhash_module() -> Any:
    import xxhash

    return xxhash


def tables_module() -> Any:
    import tables

    return tables


def blosc_module() -> Any:
    import blosc

    return blosc
