"""fireplug.serialize files cross between this machine (PyPI's PyTables, direct chunk I/O) and a
container on fp's base image (Debian's PyTables 3.7, HDF5's filter pipeline), through fp itself."""

from __future__ import annotations

import numpy as np
import pytest

from fireplug import serialize
from tests.integration.conftest import Project

pytestmark = pytest.mark.engine

CONTAINER_SIDE = """
import numpy as np
from fireplug import serialize as s
table = s.load("data/table.h5")
cube = s.load("data/cube.h5", rows=slice(2, 5))
small = s.load("data/small_ints.h5")  # small integers: bit shuffle
s.save("data/small_ints_back.h5", small + 1)
mixed = s.load("data/mixed.h5")  # stored column by column (its columns compress differently)
assert np.array_equal(s.load("data/mixed.h5", rows=slice(-5, None)), mixed[-5:])
s.save("data/mixed_back.h5", mixed * 2)
assert table.dtype == np.int64 and cube.shape == (3, 4, 3), (table.dtype, cube.shape)
s.save("data/doubled.h5", table * 2)
with s.Writer("data/appended.h5", codec="zstd") as out:
    for k in range(3):
        out.append(np.full((200_000, 2), k, dtype="float32"))
print("container", np.__version__, __import__("tables").__version__, cube.sum().round(3))
"""


def test_files_cross_between_client_and_container_both_ways(fp, project: Project) -> None:
    rng = np.random.default_rng(3)
    table = np.cumsum(rng.integers(0, 5, (600_000, 3)), axis=0)
    cube = rng.random((10, 4, 3)).astype("float32")
    (project.root / "data").mkdir()
    small_ints = np.minimum(rng.zipf(1.5, 500_000), 1000).astype("int64")
    serialize.save(project.root / "data/table.h5", table)
    serialize.save(project.root / "data/cube.h5", cube)
    serialize.save(project.root / "data/small_ints.h5", small_ints)
    mixed = np.column_stack([np.arange(300_000.0), rng.random(16)[rng.integers(0, 16, 300_000)], np.round(rng.random(300_000) * 100, 2)])
    serialize.save(project.root / "data/mixed.h5", mixed)
    result = fp(project.root, "python", "-c", CONTAINER_SIDE)
    assert result.code == 0, result.err
    assert result.out.startswith("container 1.") and f"{cube[2:5].sum():.3f}"[:5] in result.out
    assert np.array_equal(serialize.load(project.root / "data/doubled.h5"), table * 2)
    assert np.array_equal(serialize.load(project.root / "data/small_ints_back.h5"), small_ints + 1)
    assert np.array_equal(serialize.load(project.root / "data/mixed_back.h5"), mixed * 2)
    appended = serialize.load(project.root / "data/appended.h5")
    assert appended.shape == (600_000, 2) and appended.dtype == np.float32
    assert appended[0, 0] == 0 and appended[300_000, 1] == 1 and appended[-1, 0] == 2


FRAME_SIDE = """
import numpy as np, pandas as pd, scipy.sparse
from fireplug import serialize as s
frame = s.load("data/frame.h5")
assert list(frame.columns) == ["price", "grade", "city", "local", "maybe", "word"], list(frame.columns)
assert frame["word"].tolist() == ["x", "y", "x", None]  # repeated strings: stored as a dictionary
assert frame["grade"].dtype == "category" and frame["grade"].cat.ordered
assert frame["city"].iloc[1] == "Zürich" and frame["city"].isna().sum() == 1
assert str(frame["local"].dt.tz) == "Europe/Paris" and frame["maybe"].isna().sum() == 1
part = s.load("data/frame.h5", rows=slice(1, 3), columns=["price"])
assert part.index.tolist() == [1, 2] and part["price"].tolist() == frame["price"].iloc[1:3].tolist()
matrix = s.load("data/matrix.h5")
assert matrix.format == "csr" and matrix.nnz == 30 and matrix.sum() == 435
s.save("data/frame_back.h5", frame.assign(price=frame["price"] * 10))
s.save("data/matrix_back.h5", (matrix * 2).tocoo())
text = s.load("data/text.h5")  # pandas 3's "str", missing as None and NaN: missing here too, not 'None'
assert text.name == "note" and text.index.tolist() == ["a", "b", "c", "d"], text
assert text.isna().tolist() == [False, True, True, False] and text.iloc[3] == "z", text.tolist()
s.save("data/text_back.h5", text.str.upper())
one = s.load("data/one.h5")
assert isinstance(one, np.float32) and one == np.float32(2.5), repr(one)
print("container pandas", pd.__version__)
"""


def test_dataframes_and_sparse_matrices_cross_both_ways(fp, project: Project) -> None:
    import pandas as pd
    import scipy.sparse

    frame = pd.DataFrame(
        {
            "price": [1.5, 2.5, 3.5, 4.5],
            "grade": pd.Categorical(["a", "b", "a", "c"], ordered=True),
            "city": pd.Series(["Paris", "Zürich", None, ""], dtype=object),
            "local": pd.date_range("2024-03-30", periods=4, freq="D", tz="Europe/Paris"),
            "maybe": pd.array([1, None, 3, 4], dtype="Int64"),
            "word": pd.Series(["x", "y", "x", None], dtype=object),
        }
    )
    matrix = scipy.sparse.csr_matrix((np.arange(30, dtype="float64"), (np.arange(30) % 10, np.arange(30))), shape=(10, 40))
    (project.root / "data").mkdir()
    serialize.save(project.root / "data/frame.h5", frame)
    serialize.save(project.root / "data/matrix.h5", matrix)
    text = pd.Series(["y", None, np.nan, "z"], index=list("abcd"), name="note")
    assert str(text.dtype) == "str"  # pandas 3 here
    serialize.save(project.root / "data/text.h5", text)
    serialize.save(project.root / "data/one.h5", np.float32(2.5))
    result = fp(project.root, "python", "-c", FRAME_SIDE)
    assert result.code == 0, result.err
    assert result.out.startswith("container pandas 1.")
    back = serialize.load(project.root / "data/frame_back.h5")
    # pandas 1.5 in the image labels columns with object strings (pandas 3 here: its "str" dtype)
    # and has nanosecond datetimes only
    expected = frame.assign(price=frame["price"] * 10, local=frame["local"].dt.as_unit("ns"))
    pd.testing.assert_frame_equal(back, expected, check_column_type=False)
    text_back = serialize.load(project.root / "data/text_back.h5")
    assert text_back.name == "note" and text_back.isna().tolist() == [False, True, True, False] and text_back.tolist()[::3] == ["Y", "Z"]
    matrix_back = serialize.load(project.root / "data/matrix_back.h5")
    assert matrix_back.format == "coo" and (matrix_back.tocsr() != matrix * 2).nnz == 0
