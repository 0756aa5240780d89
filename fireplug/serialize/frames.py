"""pandas DataFrames: one stored array (or a few) per column, so columns read alone.

Column kinds: plain NumPy dtypes (numbers, bool, datetime64, timedelta64) as they are;
categoricals as their codes plus their categories (stored like a column); strings (object
columns of str, or pandas' ``string`` dtype) as UTF-8 bytes, offsets and a missing-value
mask; timezone-aware datetimes as UTC values plus the zone; pandas' nullable dtypes (Int64,
boolean, Float64...) as values plus a mask. The index is a range (three numbers) or a column.
Column and index names are kept as JSON values (str, int, float, bool or None). pandas is
imported only when a DataFrame is saved or loaded.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from fireplug.serialize.reader import Reader, RowSpan
from fireplug.serialize.store import SerializeError, numpy_module
from fireplug.serialize.writer import Writer

NAME_TYPES = (str, int, float, bool, type(None))
STRING_BATCH = 65536


def is_frame(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def is_series(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "Series"


def write_frame(writer: Writer, frame: Any) -> None:
    """Store ``frame`` (a DataFrame, or a Series: a one-column frame marked as such) in ``writer``'s file.

    Raises:
        SerializeError: a MultiIndex, a name that is not a JSON value, or a column of Python objects other than strings.
    """
    import pandas as pd

    series = is_series(frame)
    if series:
        frame = pd.DataFrame({0: frame}).set_axis(pd.Index([frame.name], dtype=object), axis=1)

    if isinstance(frame.columns, pd.MultiIndex) or isinstance(frame.index, pd.MultiIndex):
        raise SerializeError(writer.path, "cannot save a MultiIndex: reset_index() or flatten the columns first")
    columns = []
    for position, name in enumerate(frame.columns):
        _check_name(writer, name)
        columns.append({"name": name, **_write_values(writer, f"col{position:05d}", frame.iloc[:, position], name)})
    _check_name(writer, frame.columns.name)
    writer.composite = {
        "kind": "frame",
        "nrows": len(frame),
        "columns": columns,
        "columns_name": frame.columns.name,
        "columns_dtype": str(frame.columns.dtype),
        "index": _write_index(writer, frame.index),
        **({"series": True} if series else {}),
    }


def read_frame(reader: Reader, rows: slice | None, wanted_columns: list[Any] | None) -> Any:
    """The DataFrame (or Series) stored; ``rows`` and ``wanted_columns`` as ``load`` takes them."""
    import pandas as pd

    meta = reader.meta
    if meta.get("series") and wanted_columns is not None:
        raise SerializeError(reader.path, "columns= applies to DataFrames, and this file holds a Series")
    total = meta["nrows"]
    span = RowSpan.of(rows, total)
    first, last = span.first, span.last
    chosen = _chosen_columns(reader, meta["columns"], wanted_columns)
    index = _read_index(reader, meta["index"], first, last)
    data = {position: _series(pd, _read_values(reader, column, first, last), index) for position, column in chosen}
    frame = pd.DataFrame(data, index=index)
    frame.columns = _names_index(pd, [column["name"] for _, column in chosen], meta["columns_name"], meta.get("columns_dtype", "object"))
    positions = span.positions()
    frame = frame if positions is None else frame.iloc[positions]
    return frame.iloc[:, 0].rename(meta["columns"][0]["name"]) if meta.get("series") else frame


def _series(pd: Any, values: Any, index: Any) -> Any:
    """A column as a Series; object arrays stay object (pandas 3 would turn strings into "str")."""
    is_objects = isinstance(values, numpy_module().ndarray) and values.dtype.kind == "O"
    return pd.Series(values, index=index, dtype=object if is_objects else None, copy=False)


def _names_index(pd: Any, names: list[Any], name: Any, dtype: str) -> Any:
    """The column labels with the dtype they had (pandas 3's "str" falls back to object on older pandas)."""
    try:
        return pd.Index(names, name=name, dtype=dtype)
    except (TypeError, ValueError):
        return pd.Index(names, name=name, dtype=object)


def _check_name(writer: Writer, name: Any) -> None:
    if not isinstance(name, NAME_TYPES):
        raise SerializeError(writer.path, f"cannot save the name {name!r}: names must be str, int, float, bool or None")


def _chosen_columns(reader: Reader, columns: list[dict[str, Any]], wanted: list[Any] | None) -> list[tuple[int, dict[str, Any]]]:
    if wanted is None:
        return list(enumerate(columns))
    names = [column["name"] for column in columns]
    missing = [name for name in wanted if name not in names]
    if missing:
        raise SerializeError(reader.path, f"no column {', '.join(map(repr, missing))} (columns: {', '.join(map(repr, names))})")
    return [(position, column) for name in wanted for position, column in enumerate(columns) if column["name"] == name]


def _write_index(writer: Writer, index: Any) -> dict[str, Any]:
    import pandas as pd

    _check_name(writer, index.name)
    if isinstance(index, pd.RangeIndex):
        return {"type": "range", "start": index.start, "stop": index.stop, "step": index.step, "name": index.name}
    return {"type": "index", "name": index.name, **_write_values(writer, "index", index, index.name)}


def _read_index(reader: Reader, meta: dict[str, Any], first: int, last: int) -> Any:
    import pandas as pd

    if meta["type"] == "range":
        return pd.RangeIndex(meta["start"], meta["stop"], meta["step"], name=meta["name"])[first:last]
    return pd.Index(_read_values(reader, meta, first, last), name=meta["name"])


def _write_values(writer: Writer, key: str, values: Any, name: Any) -> dict[str, Any]:
    """Store one column (a Series or an Index) under dataset names starting with ``key``."""
    import pandas as pd

    np = numpy_module()
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        codes = values.cat.codes if isinstance(values, pd.Series) else values.codes
        return {
            "type": "categorical",
            "ordered": bool(dtype.ordered),
            "codes": writer._store(f"{key}_codes", np.asarray(codes)) | {"key": f"{key}_codes"},
            "categories": _write_values(writer, f"{key}_cats", dtype.categories, None),
        }
    if isinstance(dtype, pd.DatetimeTZDtype):
        utc = pd.DatetimeIndex(values).tz_convert("UTC").tz_localize(None)
        return {"type": "datetimetz", "tz": str(dtype.tz), "values": writer._store(key, utc.to_numpy()) | {"key": key}}
    if isinstance(dtype, pd.StringDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "O"):
        return _write_strings(writer, key, values, name, str(dtype) if isinstance(dtype, pd.StringDtype) else "object")
    if isinstance(dtype, np.dtype):
        return {"type": "values", "values": writer._store(key, np.asarray(values)) | {"key": key}}
    if hasattr(values, "isna") and hasattr(dtype, "numpy_dtype"):  # Int64, boolean, Float64...
        mask = np.asarray(values.isna())
        filled = np.asarray(values.to_numpy(dtype=dtype.numpy_dtype, na_value=dtype.numpy_dtype.type(0)))
        return {
            "type": "masked",
            "pandas_dtype": str(dtype),
            "values": writer._store(key, filled) | {"key": key},
            "mask": writer._store(f"{key}_mask", mask) | {"key": f"{key}_mask"},
        }
    raise SerializeError(writer.path, f"column {name!r} has dtype {dtype}, which fireplug.serialize cannot store yet")


def _write_strings(writer: Writer, key: str, values: Any, name: Any, storage: str) -> dict[str, Any]:
    """Strings as UTF-8: a dictionary of the distinct ones plus a code per row when they repeat
    (at most one distinct value in two rows), else every row's bytes; missing values coded -1.

    Rows become Python strings a batch at a time (pandas 3's "str" columns hold none).
    """
    import pandas as pd

    np = numpy_module()
    strings = values.array  # positional slices, for a Series or an Index
    codes, distinct = pd.factorize(strings)  # hashing, in C (Arrow's for Arrow-backed strings)
    distinct = np.asarray(distinct, dtype=object)
    strange = sorted({type(item).__name__ for item in distinct if not isinstance(item, str)})
    if strange:
        raise SerializeError(writer.path, f"column {name!r} holds Python objects other than strings ({', '.join(strange)}): convert it first")
    missing = codes < 0
    first_missing = np.asarray(strings[missing][:1], dtype=object)[0] if storage == "object" and missing.any() else None
    meta: dict[str, Any] = {"type": "string", "storage": storage, "missing_as": "none" if first_missing is None else "nan"}
    if len(distinct) * 2 <= len(codes):
        code_type = np.min_scalar_type(-max(len(distinct), 1))
        meta["codes"] = writer._store(f"{key}_codes", codes.astype(code_type)) | {"key": f"{key}_codes"}
        return meta | _write_utf8(writer, f"{key}_dict", distinct, np.zeros(len(distinct), dtype=bool))
    return meta | _write_utf8(writer, key, strings, missing) | {"mask": writer._store(f"{key}_mask", missing) | {"key": f"{key}_mask"}}


def _write_utf8(writer: Writer, key: str, strings: Any, missing: Any) -> dict[str, Any]:
    """``strings`` as one blob of UTF-8 (missing ones empty) and the offsets of each string's end."""
    np = numpy_module()
    pieces, lengths = [], np.empty(len(strings), dtype=np.int64)
    for start in range(0, len(strings), STRING_BATCH):  # a few MB of Python objects at a time
        batch = np.asarray(strings[start : start + STRING_BATCH], dtype=object)
        encoded = [b"" if absent else item.encode("utf-8") for item, absent in zip(batch, missing[start : start + STRING_BATCH], strict=True)]
        lengths[start : start + len(encoded)] = [len(item) for item in encoded]
        pieces.append(b"".join(encoded))
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    blob = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    return {
        "blob": writer._store(f"{key}_utf8", blob) | {"key": f"{key}_utf8"},
        "offsets": writer._store(f"{key}_offsets", offsets) | {"key": f"{key}_offsets"},
    }


def _read_values(reader: Reader, meta: dict[str, Any], first: int, last: int) -> Any:
    import pandas as pd

    kind = meta["type"]
    if kind == "values":
        return reader.part(meta["values"], first, last)
    if kind == "categorical":
        codes = reader.part(meta["codes"], first, last)
        categories = pd.Index(_read_values(reader, meta["categories"], 0, _length(meta["categories"])))
        return pd.Categorical.from_codes(codes, categories=categories, ordered=meta["ordered"])
    if kind == "datetimetz":
        return pd.DatetimeIndex(reader.part(meta["values"], first, last)).tz_localize("UTC").tz_convert(meta["tz"])
    if kind == "masked":
        values = pd.array(reader.part(meta["values"], first, last), dtype=meta["pandas_dtype"])
        values[reader.part(meta["mask"], first, last)] = pd.NA
        return values
    if kind == "string":
        return _read_strings(reader, meta, first, last)
    raise ValueError(f"unknown column type {kind!r}")


def _read_strings(reader: Reader, meta: dict[str, Any], first: int, last: int) -> Any:
    import pandas as pd

    np = numpy_module()
    missing_value = None if meta["missing_as"] == "none" else float("nan")
    if "codes" in meta:  # a dictionary: code -1 picks the missing value, the last entry
        dictionary = _read_utf8(reader, meta, 0, int(meta["offsets"]["shape"][0]) - 1)
        lookup = np.empty(len(dictionary) + 1, dtype=object)
        lookup[:-1], lookup[-1] = dictionary, missing_value
        objects = lookup[reader.part(meta["codes"], first, last)]
    else:
        objects = _read_utf8(reader, meta, first, last)
        objects[reader.part(meta["mask"], first, last)] = missing_value
    if meta["storage"] == "object":
        return objects
    try:  # pandas' "string" (NA for missing) or, from pandas 3, "str" (NaN)
        dtype = pd.api.types.pandas_dtype(meta["storage"])
    except (TypeError, ValueError):  # an older pandas without that string dtype
        return objects
    if not isinstance(dtype, pd.StringDtype):  # "str" before pandas 3 is NumPy's: it would spell None as 'None'
        return objects
    return pd.array(objects, dtype=dtype)


def _read_utf8(reader: Reader, meta: dict[str, Any], first: int, last: int) -> Any:
    """Strings ``first`` to ``last`` of a blob and its offsets, as an object array."""
    np = numpy_module()
    offsets = reader.part(meta["offsets"], first, last + 1)
    blob = reader.part(meta["blob"], int(offsets[0]), int(offsets[-1])).tobytes() if last > first else b""
    bounds = (offsets - offsets[0]).tolist()
    objects = np.empty(last - first, dtype=object)
    objects[:] = [blob[start:end].decode("utf-8") for start, end in pairwise(bounds)]
    return objects


def _length(meta: dict[str, Any]) -> int:
    """Rows in a stored column, from its first part's shape."""
    part = meta.get("values") or meta.get("codes") or meta.get("mask")
    assert part is not None
    return int(part["shape"][0])
