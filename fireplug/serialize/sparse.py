"""SciPy sparse matrices and arrays: CSR and CSC as data/indices/indptr, COO as data/row/col.

Three plain arrays and a shape, as the 2016 FirePlug stored them: the layout that lifted
MATLAB v5's 4 GB limit, and one any reader can rebuild from. scipy is imported only when a
sparse object is saved or loaded.
"""

from __future__ import annotations

from typing import Any

from fireplug.serialize.reader import Reader
from fireplug.serialize.store import SerializeError
from fireplug.serialize.writer import Writer

PARTS = {"csr": ("data", "indices", "indptr"), "csc": ("data", "indices", "indptr"), "coo": ("data", "row", "col")}


def is_sparse(obj: Any) -> bool:
    return type(obj).__module__.startswith("scipy.sparse")


def write_sparse(writer: Writer, matrix: Any) -> None:
    """Store ``matrix`` in ``writer``'s file.

    Raises:
        SerializeError: a sparse format other than CSR, CSC or COO.
    """
    form = getattr(matrix, "format", "")
    if form not in PARTS:
        raise SerializeError(writer.path, f"cannot save a {form or type(matrix).__name__} sparse matrix: convert it with .tocsr() first")
    values = {"data": matrix.data, "indices": getattr(matrix, "indices", None), "indptr": getattr(matrix, "indptr", None)}
    if form == "coo":
        values = {"data": matrix.data, "row": matrix.row, "col": matrix.col}
    arrays = {f"sparse_{part}": writer._store(f"sparse_{part}", values[part]) for part in PARTS[form]}
    writer.composite = {"kind": "sparse", "sparse_format": form, "class": type(matrix).__name__, "shape": list(matrix.shape), "arrays": arrays}


def read_sparse(reader: Reader) -> Any:
    import scipy.sparse

    form = reader.meta["sparse_format"]
    if form not in PARTS:
        raise ValueError(f"unknown sparse format {form!r}")
    cls = getattr(scipy.sparse, reader.meta.get("class", f"{form}_matrix"), None) or getattr(scipy.sparse, f"{form}_matrix")
    first, second, third = (reader.named(f"sparse_{part}") for part in PARTS[form])
    shape = tuple(reader.meta["shape"])
    if form == "coo":
        return cls((first, (second, third)), shape=shape)
    return cls((first, second, third), shape=shape)
