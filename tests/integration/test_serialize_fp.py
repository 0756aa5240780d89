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
    serialize.save(project.root / "data/table.h5", table)
    serialize.save(project.root / "data/cube.h5", cube)
    result = fp(project.root, "python", "-c", CONTAINER_SIDE)
    assert result.code == 0, result.err
    assert result.out.startswith("container 1.") and f"{cube[2:5].sum():.3f}"[:5] in result.out
    assert np.array_equal(serialize.load(project.root / "data/doubled.h5"), table * 2)
    appended = serialize.load(project.root / "data/appended.h5")
    assert appended.shape == (600_000, 2) and appended.dtype == np.float32
    assert appended[0, 0] == 0 and appended[300_000, 1] == 1 and appended[-1, 0] == 2
