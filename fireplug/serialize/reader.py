"""Reading an array in fp's HDF5 format (see ``store.py``): its header checked, its chunks
read from the mapped file and decompressed on all cores, every checksum verified, any span of
rows without reading the rest.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from fireplug.serialize.pipeline import Pool
from fireplug.serialize.store import (
    FORMAT_VERSION,
    KINDS,
    META_ATTRIBUTE,
    Checksum,
    SerializeError,
    Stages,
    blosc_for_pool,
    blosc_module,
    bytes_per_row,
    numpy_module,
    tables_module,
    transpose,
)

if TYPE_CHECKING:
    import numpy as np


READ_DEPTH_PER_WORKER = 4  # reading jobs hold views of the mapped file, no memory: more keep the workers busy


def read_file(path: str | os.PathLike[str], read: Callable[[Reader], Any]) -> Any:
    """Open ``path``, check its header, and return ``read(reader)``; every failure named after the file.

    Raises:
        SerializeError: missing, damaged, truncated or foreign file, or a newer format version.
    """
    tables = tables_module()
    try:
        handle = tables.open_file(os.fspath(path), "r")
    except (OSError, tables.HDF5ExtError) as e:
        raise SerializeError(path, _open_failure(path, e)) from e
    try:
        reader = Reader(path, handle)
        try:
            return read(reader)
        finally:
            reader.close()
    except (tables.HDF5ExtError, ValueError, LookupError, AttributeError, RuntimeError) as e:
        raise SerializeError(path, f"damaged or truncated file ({e})") from e
    finally:
        handle.close()


class RowSpan:
    """The rows a ``rows=`` slice selects: the contiguous range to read, then which of its rows to keep."""

    def __init__(self, wanted: range) -> None:
        self.wanted = wanted
        self.first, self.last = (min(wanted[0], wanted[-1]), max(wanted[0], wanted[-1]) + 1) if wanted else (0, 0)

    @classmethod
    def of(cls, rows: slice | None, total: int) -> RowSpan:
        return cls(range(*(rows or slice(None)).indices(total)))

    def positions(self) -> np.ndarray | None:
        """Positions within the range read (None: all of it, in order)."""
        if self.wanted.step == 1 or not self.wanted:
            return None
        return numpy_module().arange(len(self.wanted)) * self.wanted.step + (self.wanted[0] - self.first)

    def pick(self, block: np.ndarray) -> np.ndarray:
        positions = self.positions()
        return block if positions is None else block[positions]


class Reader:
    """Reads a file's datasets: chunks are located on this thread (HDF5), checked and decompressed on the pool's."""

    def __init__(self, path: str | os.PathLike[str], handle: Any) -> None:
        self.path = path
        self.handle = handle
        self.np = numpy_module()
        self.meta = _meta(path, handle)
        self.kind = self.meta.get("kind")
        self.dtype = dtype_from_text(self.meta["dtype"]) if self.kind == "ndarray" else None
        self.shape = tuple(self.meta.get("shape", ()))
        self.checksum = Checksum.of(self.meta)
        self.blosc_module = blosc_for_pool()
        self._pool = Pool(depth_per_worker=READ_DEPTH_PER_WORKER)
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._sums: dict[str, np.ndarray] = {}

    def close(self) -> None:
        self._pool.close()
        if self._map is not None and self._view is not None:
            try:
                self._view.release()
                self._map.close()
            except BufferError:  # a chunk's view outlived the read (an error path): closed when collected
                pass

    def read(self, rows: slice | None) -> np.ndarray:
        if not self.shape:
            value = self._rows_of(self.handle.root.rows, 1, 0, 1, ()).reshape(())
            return value[()] if self.meta.get("scalar") else value
        span = RowSpan.of(rows, self.shape[0])
        block = span.pick(self._block(span.first, span.last))
        return self.np.asfortranarray(block) if self.meta.get("order") == "F" else block

    def _block(self, first: int, last: int) -> np.ndarray:
        """Rows ``first`` to ``last`` (exclusive): only the chunks holding them are read."""
        total = self.shape[0]
        if self.meta["layout"] != "columns":
            return self._rows_of(self.handle.root.rows, total, first, last, self.shape[1:])
        order = self.meta.get("order", "C")
        block = self.np.empty((last - first, self.shape[1]), dtype=self.dtype, order=order)
        datasets = [self.handle.root[f"c{index:05d}"] for index in range(self.shape[1])]
        if not datasets:  # no columns: nothing stored
            return block
        if order == "F":  # each column is contiguous in the result
            for index, dataset in enumerate(datasets):
                for job in self._fetch(dataset, total, first, last, block[:, index]):
                    self._pool.submit(job)
            self._pool.drain()
            return block
        # A C-ordered result, one window of chunk-aligned rows per job: the columns' chunks are
        # decompressed side by side into a reused buffer, then transposed into the result.
        assert self.dtype is not None  # (an array's reader)
        window = max(1, datasets[0].chunkshape[0] // self.dtype.itemsize)
        stages = Stages(self.np, (len(datasets), window), self.dtype)
        start = first
        while start < last:
            stop = min(last, (start // window + 1) * window)
            stage = stages.take()
            jobs = [job for index, dataset in enumerate(datasets) for job in self._fetch(dataset, total, start, stop, stage[index, : stop - start])]
            self._pool.submit(partial(_unpack_window, jobs, stage, block[start - first : stop - first], stages))
            start = stop
        self._pool.drain()
        return block

    def _rows_of(self, dataset: Any, total: int, first: int, last: int, trailing: tuple[int, ...], dtype: np.dtype | None = None) -> np.ndarray:
        out = self.np.empty((last - first, *trailing), dtype=dtype if dtype is not None else self.dtype)
        for job in self._fetch(dataset, total, first, last, out):
            self._pool.submit(job)
        self._pool.drain()
        return out

    def _fetch(self, dataset: Any, total: int, first: int, last: int, out: np.ndarray) -> Iterator[Callable[[], None]]:
        """Jobs that put rows ``first`` to ``last`` of a dataset of ``total`` rows into ``out`` (contiguous).

        Each chunk is located as its job is made (an HDF5 call, so here); the job checks and decompresses it.
        """
        row_bytes = bytes_per_row(self.np, out.dtype, out.shape[1:])
        if dataset.nrows != total * row_bytes:
            raise ValueError(f"dataset {dataset.name} holds {dataset.nrows} bytes, expected {total * row_bytes}")
        if last <= first:
            return iter(())
        assert out.flags.c_contiguous, "chunks are decompressed in place"
        return self._chunk_jobs(dataset, first * row_bytes, last * row_bytes, out.reshape(-1).view(self.np.uint8))

    def named(self, name: str) -> np.ndarray:
        """A part stored under ``name`` and described in the header's ``arrays``."""
        return self.part({**self.meta["arrays"][name], "key": name})

    def part(self, description: dict[str, Any], first: int = 0, last: int | None = None) -> np.ndarray:
        """A stored part (``Writer._store``'s description plus its ``key``), whole or rows ``first`` to ``last``."""
        dtype, shape = dtype_from_text(description["dtype"]), tuple(description["shape"])
        total = shape[0] if shape else 1
        stop = total if last is None else last
        rows = self._rows_of(self.handle.root[description["key"]], total, first, stop, shape[1:], dtype)
        return rows.reshape(()) if not shape else rows

    def _chunk_jobs(self, dataset: Any, begin: int, end: int, out: np.ndarray) -> Iterator[Callable[[], None]]:
        """Jobs putting bytes ``begin`` to ``end`` of a dataset into ``out``; every chunk they touch is read whole and checked."""
        checksums = self._checksums(dataset.name)
        chunk = dataset.chunkshape[0]
        for chunk_start in range(begin - begin % chunk, end, chunk):
            real = min(chunk, dataset.nrows - chunk_start)
            low, high = max(begin, chunk_start), min(end, chunk_start + chunk)
            sums = checksums[chunk_start // chunk]
            piece = _Piece(dataset.name, chunk_start, chunk, real, int(sums[0]), int(sums[1]), self.checksum.digest)
            target = out[low - begin : high - begin]
            if not hasattr(dataset, "read_chunk"):  # old PyTables: HDF5's filter pipeline decompresses, here
                data = dataset[chunk_start : chunk_start + real]
                piece.check_raw(data)
                target[:] = data[low - chunk_start : high - chunk_start]
                continue
            yield partial(piece.unpack, self._packed(dataset, chunk_start), target, low - chunk_start)

    def _checksums(self, name: str) -> np.ndarray:
        """A dataset's checksum table, read once (a window of a column-stored table reads each column's)."""
        if name not in self._sums:
            self._sums[name] = self.handle.root[self.checksum.table(name)][:]
        return self._sums[name]

    def _packed(self, dataset: Any, start: int) -> Any:
        """A chunk's stored bytes, where they lie in the file mapped into memory: no read, no copy.

        The workers decompress straight from the page cache. Only the chunk's address comes
        from HDF5 (on this thread).
        """
        info = dataset.chunk_info((start,))
        mapped = self._mapped()
        if info.offset is None or info.offset + info.size > len(mapped):
            raise ValueError(f"chunk at byte {start} of {dataset.name} is missing (truncated file)")
        return self.np.frombuffer(mapped[info.offset : info.offset + info.size], dtype=self.np.uint8)  # python-blosc takes arrays, not views

    def _mapped(self) -> memoryview:
        if self._map is None:
            with open(os.fspath(self.path), "rb") as file:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            self._view = memoryview(self._map)
        assert self._view is not None
        return self._view


@dataclass(frozen=True)
class _Piece:
    """Where a chunk sits in its dataset, and its checksums."""

    dataset: str
    start: int
    size: int  # bytes in a whole chunk
    real: int  # bytes of data (less in the last chunk)
    raw_sum: int
    packed_sum: int
    digest: Callable[[Any], int]

    def unpack(self, packed: np.ndarray, target: np.ndarray, offset: int) -> None:
        """Check and decompress the chunk (on a worker), putting its bytes from ``offset`` on into ``target``."""
        # Intact compressed bytes decompress to the bytes written; files written through the
        # pipeline (0: not known) are checked after decompression instead.
        if self.packed_sum and self.digest(packed) != self.packed_sum:
            raise ValueError(f"chunk at byte {self.start} of {self.dataset} is damaged (checksum mismatch)")
        blosc = blosc_module()
        try:
            if blosc.get_cbuffer_sizes(packed)[0] != self.size:
                raise ValueError("wrong size")
            if offset == 0 and len(target) == self.size:  # lands in the result as is: no copy
                blosc.decompress_ptr(packed, target.__array_interface__["data"][0])
                data = target
            else:
                data = numpy_module().frombuffer(blosc.decompress(packed), dtype="uint8")
                target[:] = data[offset : offset + len(target)]
        except Exception as e:  # python-blosc's own error type, not an exported class
            raise ValueError(f"chunk at byte {self.start} of {self.dataset} cannot be decompressed ({e})") from e
        if not self.packed_sum:
            self.check_raw(data[: self.real])

    def check_raw(self, data: Any) -> None:
        if self.digest(memoryview(data)) != self.raw_sum:
            raise ValueError(f"chunk at byte {self.start} of {self.dataset} is damaged (checksum mismatch)")


def _unpack_window(jobs: list[Callable[[], None]], stage: np.ndarray, rows: np.ndarray, stages: Stages) -> None:
    """Decompress a window's column chunks into ``stage`` (a row per column), then transpose them into ``rows``."""
    for job in jobs:
        job()
    transpose(stage[:, : len(rows)], rows)
    stages.give(stage)


def _meta(path: str | os.PathLike[str], handle: Any) -> dict[str, Any]:
    attrs = handle.root._v_attrs
    if META_ATTRIBUTE not in attrs._v_attrnames:
        raise SerializeError(path, "not a fireplug.serialize file (or one whose writer never finished)")
    try:
        meta = json.loads(attrs[META_ATTRIBUTE])
    except (TypeError, ValueError) as e:
        raise SerializeError(path, f"damaged fireplug.serialize header ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("format"), int):
        raise SerializeError(path, "damaged fireplug.serialize header")
    if meta["format"] > FORMAT_VERSION:
        raise SerializeError(path, f"written in format version {meta['format']}; this fireplug reads up to {FORMAT_VERSION}: upgrade fireplug")
    if meta.get("kind") not in KINDS:
        raise SerializeError(path, f"holds a {meta.get('kind')!r}, which this fireplug cannot read: upgrade fireplug")
    return meta


def dtype_from_text(text: Any) -> np.dtype:
    from numpy.lib import format as npy_format

    descr: Any = text if isinstance(text, str) else [tuple(item) for item in text]
    return npy_format.descr_to_dtype(descr)


def _open_failure(path: str | os.PathLike[str], error: BaseException) -> str:
    if not os.path.exists(os.fspath(path)):
        return "no such file"
    return f"not an HDF5 file, or damaged ({type(error).__name__})"
