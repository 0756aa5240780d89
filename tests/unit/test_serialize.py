"""fireplug.serialize: round trips, partial reads, appends, bad files, and the format's golden files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tables

from fireplug import serialize
from fireplug.serialize import SerializeError, Writer, load, save, store, writer

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
RNG = np.random.default_rng(7)

ARRAYS = {
    "float64-2d": RNG.random((1000, 7)),
    "float32-1d": RNG.random(5000).astype("float32"),
    "float16": RNG.random((10, 3)).astype("float16"),
    "int8": RNG.integers(-128, 127, 999).astype("int8"),
    "int64-counters": np.cumsum(RNG.integers(0, 5, (3000, 4)), axis=0),
    "uint16": RNG.integers(0, 60000, (40, 5)).astype("uint16"),
    "bool-3d": RNG.random((50, 4, 3)) > 0.5,
    "complex128": RNG.random(300) + 1j * RNG.random(300),
    "datetime64": np.arange("2020-01-01", "2021-01-01", dtype="datetime64[D]"),
    "timedelta64": np.arange(100).astype("timedelta64[s]"),
    "unicode": np.array(["a", "héllo", ""]),
    "bytes": np.array([b"ab", b"cde"]),
    "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
    "scalar": np.array(3.5),
    "empty-2d": np.empty((0, 4)),
    "no-columns": np.empty((5000, 0)),
    "empty-rows": np.empty((5, 0, 3)),
    "4d": RNG.random((6, 2, 3, 4)),
    "big-endian": np.arange(10, dtype=">i4"),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_round_trip_keeps_dtype_shape_and_values(tmp_path: Path, name: str) -> None:
    array = ARRAYS[name]
    save(tmp_path / "a.h5", array)
    back = load(tmp_path / "a.h5")
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)


def test_fortran_order_comes_back_fortran(tmp_path: Path) -> None:
    array = np.asfortranarray(RNG.random((300, 5)))
    save(tmp_path / "f.h5", array)
    back = load(tmp_path / "f.h5")
    assert back.flags.f_contiguous and np.array_equal(back, array)


@pytest.mark.parametrize("codec", serialize.CODECS)
@pytest.mark.parametrize("shuffle", [True, False, None])
def test_every_codec_and_shuffle_setting(tmp_path: Path, codec: str, shuffle: bool | None) -> None:
    array = ARRAYS["int64-counters"]
    save(tmp_path / "c.h5", array, codec=codec, level=5, shuffle=shuffle)
    assert np.array_equal(load(tmp_path / "c.h5"), array)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 4 KiB, so that small arrays span many chunks."""
    monkeypatch.setattr(store, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(writer, "CHUNK_BYTES", 4096)


@pytest.mark.parametrize(
    "rows",
    [slice(10, 20), slice(0, 1), slice(4000, 10**9), slice(-25, None), slice(None, None, 7), slice(900, 5, -3), slice(30, 30), slice(None, None, -1)],
    ids=["middle", "first", "past-end", "negative-start", "step", "negative-step", "empty", "reversed"],
)
@pytest.mark.parametrize("name", ["float64-2d", "bool-3d", "float32-1d"])
def test_partial_reads_match_numpy_slicing(tmp_path: Path, small_chunks: None, name: str, rows: slice) -> None:
    array = ARRAYS[name]
    save(tmp_path / "p.h5", array)
    assert np.array_equal(load(tmp_path / "p.h5", rows=rows), array[rows])


def test_writer_appends_pieces_across_chunk_boundaries(tmp_path: Path, small_chunks: None) -> None:
    pieces = [RNG.random((size, 3)) for size in (1, 500, 170, 0, 1023)]
    with Writer(tmp_path / "w.h5", codec="zstd") as writer:
        for piece in pieces:
            writer.append(piece)
    assert np.array_equal(load(tmp_path / "w.h5"), np.concatenate(pieces))
    assert np.array_equal(load(tmp_path / "w.h5", rows=slice(495, 700)), np.concatenate(pieces)[495:700])


def test_writer_refuses_a_piece_that_does_not_match(tmp_path: Path) -> None:
    with pytest.raises(SerializeError, match=r"w\.h5: piece of dtype float32 and shape \(2, 4\) does not match float64"), Writer(tmp_path / "w.h5") as writer:
        writer.append(np.zeros((2, 3)))
        writer.append(np.zeros((2, 4), dtype="float32"))
    assert not (tmp_path / "w.h5").exists()  # no half-written file left to be mistaken for a whole one


def test_a_file_whose_writer_never_finished_is_refused(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "w.h5")
    writer.append(np.zeros(10))
    writer._file.close()  # as if the process died before close()
    with pytest.raises(SerializeError, match="writer never finished"):
        load(tmp_path / "w.h5")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        pytest.param([1, 2, 3], "cannot save a builtins.list", id="list"),
        pytest.param(np.array([object()], dtype=object), "cannot save dtype object", id="object-dtype"),
    ],
)
def test_unsupported_objects_are_refused_naming_the_path(tmp_path: Path, obj: object, message: str) -> None:
    with pytest.raises(SerializeError, match=message) as raised:
        save(tmp_path / "x.h5", obj)
    assert str(tmp_path / "x.h5") in str(raised.value)


def test_bad_settings_and_paths(tmp_path: Path) -> None:
    with pytest.raises(SerializeError, match="does not exist"):
        save(tmp_path / "missing" / "x.h5", np.zeros(3))
    with pytest.raises(SerializeError, match="unknown codec 'snappy'"):
        save(tmp_path / "x.h5", np.zeros(3), codec="snappy")
    with pytest.raises(SerializeError, match="level 11"):
        save(tmp_path / "x.h5", np.zeros(3), level=11)
    with pytest.raises(SerializeError, match="no such file"):
        load(tmp_path / "nothing.h5")


def write_foreign(path: Path) -> None:
    with tables.open_file(str(path), "w") as handle:
        handle.create_array("/", "x", np.arange(3))


def truncate(path: Path) -> None:
    save(path, RNG.random(200_000))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_chunk(path: Path) -> None:
    save(path, RNG.random(200_000))  # random doubles: Blosc stores them nearly as they are
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64) if data[middle : middle + 64] != bytes(64) else b"\xff" * 64
    path.write_bytes(bytes(data))


def newer_version(path: Path) -> None:
    save(path, np.zeros(3))
    with tables.open_file(str(path), "a") as handle:
        meta = json.loads(handle.root._v_attrs[serialize.META_ATTRIBUTE])
        handle.root._v_attrs[serialize.META_ATTRIBUTE] = json.dumps({**meta, "format": serialize.FORMAT_VERSION + 1})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda path: path.write_bytes(b"plain text, not HDF5\n" * 50), "not an HDF5 file", id="not-hdf5"),
        pytest.param(write_foreign, "not a fireplug.serialize file", id="foreign-hdf5"),
        pytest.param(truncate, "not an HDF5 file, or damaged|damaged or truncated", id="truncated"),
        pytest.param(corrupt_chunk, "damaged", id="corrupted-chunk"),
        pytest.param(newer_version, "format version 3; this fireplug reads up to 2: upgrade fireplug", id="newer-version"),
    ],
)
def test_bad_files_raise_one_clear_error_never_a_wrong_result(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.h5"
    make(path)
    with pytest.raises(SerializeError, match=message) as raised:
        load(path)
    assert str(raised.value).startswith(str(path))


GOLDEN_COLUMNS_ROWS = 4000
GOLDEN_ARRAYS = {
    "table": np.arange(60, dtype="<f8").reshape(20, 3) / 7,
    "cube": np.arange(24, dtype="<i4").reshape(2, 3, 4),
    "strings": np.array(["fp", "héllo", ""], dtype="<U5"),
    "columns": np.column_stack(
        [
            np.arange(GOLDEN_COLUMNS_ROWS, dtype="<f8"),
            np.tile(np.arange(16) / 3, GOLDEN_COLUMNS_ROWS // 16),
            (np.arange(GOLDEN_COLUMNS_ROWS) * 7919 % 10007) / 100.0,
        ]
    ),
}


@pytest.mark.parametrize(("version", "name"), [(1, "table"), (1, "cube"), (1, "strings"), (2, "table"), (2, "cube"), (2, "columns")])
def test_golden_files_of_every_format_still_load(version: int, name: str) -> None:
    expected = GOLDEN_ARRAYS[name]
    back = load(GOLDEN / f"serialize-v{version}-{name}.h5")
    assert back.dtype == expected.dtype and np.array_equal(back, expected)
    assert np.array_equal(load(GOLDEN / f"serialize-v{version}-{name}.h5", rows=slice(1, None, 3)), expected[1::3])


def test_golden_dataframe_of_format_2_still_loads() -> None:
    import pandas as pd

    expected = pd.DataFrame(
        {
            "x": np.arange(6, dtype="<i8"),
            "city": pd.Series(["Paris", "Zürich", None, "Paris", "Paris", "Zürich"], dtype=object),
            "id": pd.Series(["a", "b", "c", "d", "e", None], dtype=object),
        }
    )
    pd.testing.assert_frame_equal(load(GOLDEN / "serialize-v2-frame.h5"), expected)


def stored_layout(path: Path) -> str:
    with tables.open_file(str(path)) as handle:
        return str(json.loads(handle.root._v_attrs[serialize.META_ATTRIBUTE])["layout"])


def test_tables_go_by_rows_when_columns_compress_alike_and_by_columns_when_they_differ(tmp_path: Path) -> None:
    alike, mixed = RNG.random((40_000, 6)), GOLDEN_ARRAYS["columns"].repeat(10, axis=0)
    save(tmp_path / "alike.h5", alike)
    save(tmp_path / "mixed.h5", mixed)
    save(tmp_path / "fortran.h5", np.asfortranarray(alike))
    layouts = [stored_layout(tmp_path / name) for name in ("alike.h5", "mixed.h5", "fortran.h5")]
    assert layouts == ["rows", "columns", "columns"]
    assert np.array_equal(load(tmp_path / "alike.h5"), alike) and np.array_equal(load(tmp_path / "mixed.h5"), mixed)
    assert np.array_equal(load(tmp_path / "mixed.h5", rows=slice(39_990, 20, -7)), mixed[39_990:20:-7])


def test_a_damaged_chunk_of_a_column_stored_table_is_an_error(tmp_path: Path, small_chunks: None) -> None:
    path = tmp_path / "c.h5"
    save(path, GOLDEN_ARRAYS["columns"])
    assert stored_layout(path) == "columns"
    with tables.open_file(str(path), "a") as handle:
        handle.root.c00002_sum[3, 1] ^= 1  # as if the chunk's bytes had changed
    with pytest.raises(SerializeError, match=r"chunk at byte 12288 of c00002 is damaged"):
        load(path)
    assert np.array_equal(load(path, rows=slice(0, 100)), GOLDEN_ARRAYS["columns"][:100])  # other chunks still read


def test_strings_are_stored_as_a_dictionary_when_they_repeat(tmp_path: Path) -> None:
    import pandas as pd

    words = pd.Series(RNG.choice(["alpha", "béta", None], 5000), dtype=object)
    unique = pd.Series([f"id-{i}" for i in range(5000)], dtype=object)
    frame = pd.DataFrame({"words": words, "unique": unique, "text": words.astype("string")})
    save(tmp_path / "s.h5", frame)
    with tables.open_file(str(tmp_path / "s.h5")) as handle:
        columns = {column["name"]: column for column in json.loads(handle.root._v_attrs[serialize.META_ATTRIBUTE])["columns"]}
        assert handle.root.col00000_codes.nrows == 5000  # one byte per row
    assert "codes" in columns["words"] and "codes" in columns["text"] and "codes" not in columns["unique"]
    pd.testing.assert_frame_equal(load(tmp_path / "s.h5"), frame)
    pd.testing.assert_frame_equal(load(tmp_path / "s.h5", rows=slice(4990, 10)), frame.iloc[4990:10])
    save(tmp_path / "e.h5", frame.iloc[:0])
    pd.testing.assert_frame_equal(load(tmp_path / "e.h5"), frame.iloc[:0])


def test_importing_the_module_loads_no_heavy_library() -> None:
    import subprocess
    import sys

    code = "import sys, fireplug.serialize; print(sorted(m for m in ('numpy', 'tables', 'blosc', 'xxhash') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def sample_frame(rows: int = 1000) -> Any:
    import pandas as pd

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "price": rng.random(rows),
            "count": rng.integers(0, 9, rows),
            "flag": rng.random(rows) > 0.5,
            "when": pd.date_range("2020-01-01", periods=rows, freq="h"),
            "local": pd.date_range("2020-03-29", periods=rows, freq="h", tz="Europe/Paris"),
            "wait": pd.to_timedelta(rng.integers(0, 100, rows), unit="s"),
            "grade": pd.Categorical(rng.choice(["a", "bé", "c"], rows), categories=["c", "bé", "a"], ordered=True),
            "city": pd.Series(rng.choice(["Paris", "Zürich", "", None], rows), dtype=object),
            "label": pd.Series(rng.choice(["x", "yy"], rows), dtype="string"),
            "maybe": pd.array(rng.integers(0, 5, rows), dtype="Int64"),
            3: rng.random(rows).astype("float32"),
        },
        index=pd.Index([f"r{i}" for i in range(rows)], name="rid"),
    )
    frame.loc[frame.index[::7], "maybe"] = pd.NA
    frame.columns.name = "fields"
    return frame


def test_dataframes_round_trip_exactly(tmp_path: Path) -> None:
    import pandas as pd

    frame = sample_frame()
    save(tmp_path / "f.h5", frame)
    pd.testing.assert_frame_equal(load(tmp_path / "f.h5"), frame)
    plain = pd.DataFrame({"a": np.arange(5), "b": list("vwxyz")})
    save(tmp_path / "p.h5", plain)
    pd.testing.assert_frame_equal(load(tmp_path / "p.h5"), plain)


@pytest.mark.parametrize(
    ("rows", "columns"), [(slice(10, 500, 3), ["city", "grade", 3]), (slice(None, None, -4), None), (None, ["local"]), (slice(990, 2000), ["maybe", "label"])]
)
def test_dataframe_partial_reads(tmp_path: Path, small_chunks: None, rows: slice | None, columns: list[Any] | None) -> None:
    import pandas as pd

    frame = sample_frame()
    save(tmp_path / "f.h5", frame)
    expected = frame.iloc[rows if rows is not None else slice(None)]
    pd.testing.assert_frame_equal(load(tmp_path / "f.h5", rows=rows, columns=columns), expected[columns] if columns else expected)


def test_dataframe_problems_are_clear(tmp_path: Path) -> None:
    import pandas as pd

    with pytest.raises(SerializeError, match="holds Python objects other than strings"):
        save(tmp_path / "o.h5", pd.DataFrame({"mixed": [1, "a", 2.5]}, dtype=object))
    with pytest.raises(SerializeError, match="MultiIndex"):
        save(tmp_path / "m.h5", pd.DataFrame({"a": [1, 2]}, index=pd.MultiIndex.from_tuples([(1, 2), (3, 4)])))
    save(tmp_path / "f.h5", sample_frame(20))
    with pytest.raises(SerializeError, match="no column 'nope'"):
        load(tmp_path / "f.h5", columns=["nope"])


@pytest.mark.parametrize("form", ["csr", "csc", "coo"])
def test_sparse_matrices_round_trip_as_their_own_type(tmp_path: Path, form: str) -> None:
    import scipy.sparse

    matrix = scipy.sparse.random(2000, 300, density=0.01, format=form, random_state=4, dtype="float32")
    save(tmp_path / "s.h5", matrix)
    back = load(tmp_path / "s.h5")
    assert type(back) is type(matrix) and back.shape == matrix.shape and back.dtype == matrix.dtype
    assert (back != matrix).nnz == 0
    with pytest.raises(SerializeError, match="rows= applies to arrays and DataFrames"):
        load(tmp_path / "s.h5", rows=slice(0, 10))
    with pytest.raises(SerializeError, match=r"convert it with \.tocsr\(\)"):
        save(tmp_path / "l.h5", matrix.tolil())


def test_series_and_numpy_scalars_round_trip(tmp_path: Path) -> None:
    import pandas as pd

    series = pd.Series([1.5, None, 3.0], index=pd.Index(["a", "b", "c"], name="key"), name="price")
    serialize.save(tmp_path / "s.h5", series)
    pd.testing.assert_series_equal(serialize.load(tmp_path / "s.h5"), series)
    assert serialize.load(tmp_path / "s.h5", rows=slice(1, 3)).index.tolist() == ["b", "c"]
    with pytest.raises(SerializeError, match="holds a Series"):
        serialize.load(tmp_path / "s.h5", columns=["price"])
    unnamed = pd.Series(["x", None, np.nan])
    serialize.save(tmp_path / "u.h5", unnamed)
    back = serialize.load(tmp_path / "u.h5")
    assert back.name is None and back.isna().tolist() == [False, True, True]
    for scalar in (np.float32(2.5), np.int64(-7), np.bool_(True), np.datetime64("2024-01-01")):
        serialize.save(tmp_path / "x.h5", scalar)
        loaded = serialize.load(tmp_path / "x.h5")
        assert type(loaded) is type(scalar) and loaded == scalar
    serialize.save(tmp_path / "zero-d.h5", np.array(3.0))
    assert serialize.load(tmp_path / "zero-d.h5").shape == ()  # a 0-d array stays an array


def test_a_missing_pandas_or_scipy_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd
    import scipy.sparse

    serialize.save(tmp_path / "f.h5", pd.DataFrame({"a": [1, 2]}))
    serialize.save(tmp_path / "m.h5", scipy.sparse.eye(3, format="csr"))
    monkeypatch.setitem(sys.modules, "pandas", None)
    monkeypatch.setitem(sys.modules, "scipy.sparse", None)
    with pytest.raises(SerializeError, match=r"needs pandas, which is not installed here: pip install pandas \(or pip install 'fireplug\[frames\]'\)"):
        serialize.load(tmp_path / "f.h5")
    with pytest.raises(SerializeError, match=r"needs scipy.*fireplug\[sparse\]"):
        serialize.load(tmp_path / "m.h5")
