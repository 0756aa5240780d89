"""Fast Blosc-compressed HDF5 save/load, bundled in every fp base image.

    from fireplug import serialize
    serialize.save("data/features.h5", matrix)              # NumPy array, DataFrame, sparse
    part = serialize.load("data/features.h5", rows=slice(0, 1000))
    frame = serialize.load("data/table.h5", columns=["price", "city"])
    with serialize.Writer("data/big.h5") as out:             # larger than memory
        for block in blocks:
            out.append(block)

Files written on a laptop (PyPI's PyTables) load in fp's containers (Debian's PyTables 3.7)
and the other way round. The format is described in docs/serialize.md. numpy, tables, blosc,
pandas and scipy are imported only when a file is written or read; this package imports
nothing else from fireplug.
"""

from __future__ import annotations

import os
from typing import Any

from fireplug.serialize.reader import read_file
from fireplug.serialize.store import CODECS, FORMAT_VERSION, META_ATTRIBUTE, SerializeError, needs
from fireplug.serialize.writer import Writer, as_array, save_array

__all__ = ["CODECS", "FORMAT_VERSION", "META_ATTRIBUTE", "SerializeError", "Writer", "load", "save"]


def save(path: str | os.PathLike[str], obj: Any, *, codec: str = "lz4", level: int = 1, shuffle: bool | None = None) -> None:
    """Write ``obj`` to ``path``, replacing the file: a NumPy array (any fixed-size dtype, any
    ndim, C or Fortran order) or scalar, a pandas DataFrame or Series (name and index kept),
    or a SciPy CSR/CSC/COO sparse matrix.

    ``codec``: one of ``CODECS``; ``level``: 0-9; ``shuffle``: Blosc's byte shuffle, or None
    to choose it per column from a sample (it helps counters and random values, hurts columns
    of few distinct values).

    Raises:
        SerializeError: unsupported object or dtype, unusable path, bad settings.
    """
    from fireplug.serialize import frames, sparse

    if sparse.is_sparse(obj):
        with Writer(path, codec=codec, level=level, shuffle=shuffle) as writer:
            sparse.write_sparse(writer, obj)
    elif frames.is_frame(obj) or frames.is_series(obj):
        with Writer(path, codec=codec, level=level, shuffle=shuffle) as writer:
            frames.write_frame(writer, obj)
    else:
        array = as_array(path, obj)
        save_array(path, array, codec=codec, level=level, shuffle=shuffle, scalar=array is not obj and array.ndim == 0)


def load(path: str | os.PathLike[str], *, rows: slice | None = None, columns: list[Any] | None = None) -> Any:
    """What ``path`` holds. ``rows``: only those rows (arrays, DataFrames and Series), read
    without loading the rest; ``columns``: only those DataFrame columns.

    Raises:
        SerializeError: missing, damaged, truncated or foreign file, a newer format version,
            ``rows`` / ``columns`` that do not apply, or pandas / scipy missing for a file that needs it.
    """
    from fireplug.serialize import frames, sparse

    def read(reader: Any) -> Any:
        if reader.kind == "frame":
            needs(path, "pandas", "loading this DataFrame", "frames")
            return frames.read_frame(reader, rows, columns)
        if columns is not None:
            raise SerializeError(path, "columns= applies to DataFrames only")
        if reader.kind == "sparse":
            if rows is not None:
                raise SerializeError(path, "rows= applies to arrays and DataFrames, not sparse matrices")
            needs(path, "scipy.sparse", "loading this sparse matrix", "sparse")
            return sparse.read_sparse(reader)
        return reader.read(rows)

    return read_file(path, read)
