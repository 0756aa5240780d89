"""Writing an array in fp's HDF5 format (see ``store.py``): cut into chunks of whole rows, each
compressed with the Blosc filter that suits its column best on a sample, on all cores, and
checksummed; a 2-D table stored by rows or by columns, whichever compresses better.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from fireplug.serialize.pipeline import Pool
from fireplug.serialize.store import (
    CHECKSUM,
    CHUNK_BYTES,
    CODECS,
    FORMAT_VERSION,
    META_ATTRIBUTE,
    SerializeError,
    Stages,
    blosc_for_pool,
    bytes_per_row,
    dtype_text,
    numpy_module,
    rows_per_chunk,
    tables_module,
    transpose,
)

if TYPE_CHECKING:
    import numpy as np


SAMPLE_BYTES = 256 << 10  # per column, to pick its filter

TABLE_SAMPLE_BYTES = 2 << 20  # at most, for a 2-D array's columns together (rows or columns?)

NO_SHUFFLE, SHUFFLE, BIT_SHUFFLE = 0, 1, 2  # Blosc 1's filter codes

BLOCK_BYTES = 16 << 20  # rows of all columns of a column-stored table compressed as one job

ROWS_LAYOUT_SLACK = 1.1  # a C-ordered table is stored by rows if that is at most 10% bigger on a sample


def save_array(path: str | os.PathLike[str], array: np.ndarray, *, codec: str, level: int, shuffle: bool | None, scalar: bool = False) -> None:
    """Write a NumPy array to ``path`` (see ``fireplug.serialize.save``); ``scalar``: a 0-d
    array that stands for a NumPy scalar."""
    with Writer(path, codec=codec, level=level, shuffle=shuffle) as writer:
        writer.numpy_scalar = scalar
        writer.order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        writer.append(array)  # cut into chunk-sized views inside: never copied whole


class Writer:
    """An array written in pieces along its first axis, for data larger than memory.

    All pieces share the dtype and trailing shape of the first. The file is complete (and
    loadable) once the writer is closed; ``with Writer(...) as w:`` closes it. Chunks are
    compressed on all cores while earlier ones are written; ``append`` returns once it has
    read the whole piece, so the caller may reuse it.

    Raises (every method):
        SerializeError: a piece does not match, or the file cannot be written.
    """

    def __init__(self, path: str | os.PathLike[str], *, codec: str = "lz4", level: int = 1, shuffle: bool | None = None) -> None:
        if codec not in CODECS:
            raise SerializeError(path, f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
        if not 0 <= level <= 9:
            raise SerializeError(path, f"level {level} is not between 0 and 9")
        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(folder):
            raise SerializeError(path, f"folder {folder} does not exist")
        self.path = path
        self.codec, self.level, self.shuffle = codec, level, shuffle
        self.order = "C"  # the memory order ``load`` gives back
        self.numpy_scalar = False  # a 0-d array that ``load`` gives back as a NumPy scalar
        self.composite: dict[str, Any] | None = None  # header of a sparse matrix or DataFrame, once stored
        self.tables_module, self._np, self.blosc_module = tables_module(), numpy_module(), blosc_for_pool()
        try:
            self._file = self.tables_module.open_file(os.fspath(path), "w")
        except (OSError, self.tables_module.HDF5ExtError) as e:
            raise SerializeError(path, f"cannot write: {e}") from e
        self._pool = Pool()
        self._dtype: np.dtype | None = None
        self._trailing: tuple[int, ...] = ()
        self._scalar = False
        self._rows = 0
        self.layout = "rows"
        self.chunk_rows = 1
        self._datasets: list[_Dataset] = []  # the array's: one per column, or one of rows
        self._parts: list[_Dataset] = []  # a composite's (``_store``)
        self._tail: np.ndarray | None = None  # rows short of a whole chunk, copied
        self._stages: Stages | None = None  # column-stored tables: buffers for transposed blocks
        self._tail_rows = 0

    def append(self, piece: Any) -> None:
        array = as_array(self.path, piece)
        if self._dtype is None:
            self._start(array)
        elif array.dtype != self._dtype or (array.shape[1:] if array.ndim else ()) != self._trailing:
            raise SerializeError(self.path, f"piece of dtype {array.dtype} and shape {array.shape} does not match {self._dtype} x {self._trailing}")
        rows = array.reshape(1) if array.ndim == 0 else array
        self._feed(rows)
        self._pool.drain()  # the jobs hold views of the piece: done with it before returning
        self._rows = 1 if array.ndim == 0 else self._rows + len(array)

    def close(self) -> None:
        if not self._file.isopen:
            return
        try:
            if self.composite is None and self._dtype is None:
                raise SerializeError(self.path, "nothing was appended")
            if self._tail is not None and self._tail_rows:
                self._emit(self._tail[: self._tail_rows])
            self._pool.drain()
            for dataset in self._datasets + self._parts:
                dataset.finish()
            self._file.root._v_attrs[META_ATTRIBUTE] = json.dumps(self._meta())
        finally:
            self._pool.close()
            self._file.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self._pool.close()
            self._file.close()
            os.unlink(os.fspath(self.path))  # never leave a file that looks complete and is not

    def _meta(self) -> dict[str, Any]:
        if self.composite is not None:
            return {"format": FORMAT_VERSION, **self.composite, "codec": self.codec, "level": self.level, "checksum": CHECKSUM.name}
        assert self._dtype is not None
        return {
            "format": FORMAT_VERSION,
            "kind": "ndarray",
            "dtype": dtype_text(self._dtype),
            "shape": [] if self._scalar else [self._rows, *self._trailing],
            **({"scalar": True} if self.numpy_scalar else {}),
            "layout": self.layout,
            "order": self.order,
            "codec": self.codec,
            "level": self.level,
            "checksum": CHECKSUM.name,
        }

    def _start(self, array: np.ndarray) -> None:
        self._dtype = array.dtype
        self._scalar = array.ndim == 0
        self._trailing = tuple(array.shape[1:]) if array.ndim else ()
        rows = array if array.ndim else array.reshape(1)
        if array.ndim == 2:
            self._start_table(rows)
            return
        self.chunk_rows = rows_per_chunk(self._np, array.dtype, self._trailing)
        mode, _ = self._filter(rows)
        self._datasets = [_Dataset(self, "rows", array.dtype, self._trailing, self.chunk_rows, mode)]

    def _start_table(self, table: np.ndarray) -> None:
        """Columns or rows for a 2-D array, from a sample of its first rows.

        Stored column by column, each column gets its own filter and a column reads alone; by
        rows, C-ordered data is compressed and read back without being transposed. Rows win
        when they compress (almost) as well as columns: random values, columns all alike.
        """
        np, width, itemsize = self._np, table.shape[1], table.dtype.itemsize
        sample = table[: max(1, min(SAMPLE_BYTES // itemsize, TABLE_SAMPLE_BYTES // max(width * itemsize, 1)))]
        parts = [sample[:, index] for index in range(width)] + ([sample] if self.order == "C" and width else [])
        found = self._pool.map(partial(self._filter, sample_bytes=sample.nbytes), parts)
        columns, by_rows = found[:width], (found[width] if len(found) > width else None)
        if by_rows is not None and by_rows[1] <= ROWS_LAYOUT_SLACK * sum(size for _, size in columns):
            self.chunk_rows = rows_per_chunk(np, table.dtype, self._trailing)
            self._datasets = [_Dataset(self, "rows", table.dtype, self._trailing, self.chunk_rows, by_rows[0])]
            return
        self.layout = "columns"
        column_bytes = min(CHUNK_BYTES, max(BLOCK_BYTES // max(width, 1), CHUNK_BYTES // 16))
        self.chunk_rows = max(1, column_bytes // table.dtype.itemsize)
        self._stages = Stages(np, (width, self.chunk_rows), table.dtype)
        self._datasets = [_Dataset(self, f"c{index:05d}", table.dtype, (), self.chunk_rows, mode) for index, (mode, _) in enumerate(columns)]

    def _filter(self, data: np.ndarray, sample_bytes: int = SAMPLE_BYTES) -> tuple[int, int]:
        """The Blosc filter for ``data``, and the size of a sample of its first ``sample_bytes`` with it."""
        modes = (NO_SHUFFLE, SHUFFLE, BIT_SHUFFLE) if self.shuffle is None else ((SHUFFLE,) if self.shuffle else (NO_SHUFFLE,))
        return _best_filter(self._np, self.blosc_module, data, sample_bytes, modes, codec=self.codec, level=self.level)

    def _feed(self, rows: np.ndarray) -> None:
        """Hand whole chunks of ``rows`` to the pool (views, no copy); keep a copy of what is left."""
        start = 0
        if self._tail_rows:
            assert self._tail is not None
            start = min(self.chunk_rows - self._tail_rows, len(rows))
            self._tail[self._tail_rows : self._tail_rows + start] = rows[:start]
            self._tail_rows += start
            if self._tail_rows == self.chunk_rows:
                self._emit(self._tail)
                self._tail, self._tail_rows = None, 0
        while len(rows) - start >= self.chunk_rows:
            self._emit(rows[start : start + self.chunk_rows])
            start += self.chunk_rows
        if start < len(rows):
            self._tail = self._np.empty((self.chunk_rows, *rows.shape[1:]), dtype=rows.dtype)
            self._tail_rows = len(rows) - start
            self._tail[: self._tail_rows] = rows[start:]

    def _emit(self, block: np.ndarray) -> None:
        if self.layout == "columns":
            self._pool.submit(partial(self._pack_columns, block), self._store_columns)
        else:
            dataset = self._datasets[0]
            self._pool.submit(partial(dataset.pack, block), dataset.store)

    def _pack_columns(self, block: np.ndarray) -> list[_Chunk]:
        """Each column of ``block`` compressed (on a worker); C-ordered rows are transposed in cache-sized tiles first."""
        if block.strides[0] == block.dtype.itemsize or block.shape[1] == 0:  # Fortran order: columns already contiguous
            return [dataset.pack(block[:, index]) for index, dataset in enumerate(self._datasets)]
        assert self._stages is not None
        stage = self._stages.take()
        transpose(block.T, stage.T[: len(block)])
        chunks = [dataset.pack(stage[index, : len(block)]) for index, dataset in enumerate(self._datasets)]
        self._stages.give(stage)
        return chunks

    def _store_columns(self, chunks: list[_Chunk]) -> None:
        for dataset, chunk in zip(self._datasets, chunks, strict=True):
            dataset.store(chunk)

    def _store(self, name: str, array: np.ndarray) -> dict[str, Any]:
        """Write one whole array (a part of a sparse matrix or DataFrame) as dataset ``name``; its description.

        Its chunks are written as they are compressed, up to ``close``.
        """
        flat = array if array.ndim else array.reshape(1)
        trailing = tuple(flat.shape[1:])
        rows = rows_per_chunk(self._np, flat.dtype, trailing)
        mode, _ = self._filter(flat)
        dataset = _Dataset(self, name, flat.dtype, trailing, rows, mode)
        self._parts.append(dataset)
        for start in range(0, len(flat), rows):
            self._pool.submit(partial(dataset.pack, flat[start : start + rows]), dataset.store)
        return {"dtype": dtype_text(array.dtype), "shape": list(array.shape)}


@dataclass(frozen=True)
class _Chunk:
    """One chunk ready to store: compressed, with the digests of its bytes and of them compressed, or (old PyTables) the bytes themselves."""

    length: int  # bytes of data in it (the last chunk is padded to the full size)
    packed: bytes | None = None
    raw_sum: int = 0
    packed_sum: int = 0
    data: np.ndarray | None = None


class _Dataset:
    """One HDF5 dataset of raw bytes: a column of a 2-D array, or the rows of any array.

    Bytes, not typed elements, so every fixed-size dtype is stored the same way; Blosc still
    shuffles by the element size. ``pack`` runs on any thread, ``store`` on the file's.
    The last chunk is padded and the dataset truncated to the real length.
    """

    def __init__(self, writer: Writer, name: str, dtype: np.dtype, trailing: tuple[int, ...], chunk_rows: int, shuffle: int) -> None:
        self.np, self.blosc = writer._np, writer.blosc_module
        self.codec, self.level = writer.codec, writer.level
        self.dtype = dtype
        self.row_bytes = bytes_per_row(writer._np, dtype, trailing)
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_rows * self.row_bytes
        self.shuffle = shuffle
        filters = writer.tables_module.Filters(
            complevel=max(writer.level, 1), complib=f"blosc:{writer.codec}", shuffle=shuffle == SHUFFLE, bitshuffle=shuffle == BIT_SHUFFLE
        )
        self.dataset = writer._file.create_earray(
            "/", name, atom=writer.tables_module.UInt8Atom(), shape=(0,), filters=filters, chunkshape=(max(self.chunk_bytes, 1),)
        )
        self.direct = hasattr(self.dataset, "write_chunk")
        self.written = 0
        self.checksums: list[tuple[int, int]] = []  # per chunk: digest of its bytes, and of them compressed (0: not known)
        self._window: tuple[Any, int] = (None, 0)  # pipeline path: checksum (hasher) and length of the chunk being filled

    def pack(self, rows: np.ndarray) -> _Chunk:
        """Up to a chunk of rows, compressed and checksummed (thread-safe: no HDF5 call)."""
        np, length = self.np, len(rows) * self.row_bytes
        if not self.direct or not self.row_bytes:  # a copy (``rows`` may be a reused buffer); rows of no bytes: nothing to compress
            return _Chunk(length, data=np.array(rows, order="C").view(np.uint8).reshape(-1))
        if len(rows) < self.chunk_rows:
            padded = np.zeros((self.chunk_rows, *rows.shape[1:]), dtype=rows.dtype)
            padded[: len(rows)] = rows
            rows = padded
        raw = np.ascontiguousarray(rows).view(np.uint8).reshape(-1)
        itemsize = self.dtype.itemsize
        typesize = itemsize if itemsize <= 255 and len(raw) % itemsize == 0 else 1
        settings = {"typesize": typesize, "clevel": self.level, "shuffle": self.shuffle, "cname": self.codec}
        packed = self.blosc.compress_ptr(raw.__array_interface__["data"][0], len(raw) // typesize, **settings)
        return _Chunk(length, packed, CHECKSUM.digest(memoryview(raw)[:length]), CHECKSUM.digest(packed))

    def store(self, chunk: _Chunk) -> None:
        """Write a packed chunk after the ones before it.

        The dataset is extended to its final length before the last chunk is written: cutting
        it afterwards would make HDF5 rewrite that chunk and leak the space of the first copy.
        """
        if chunk.packed is None:
            assert chunk.data is not None
            self.dataset.append(chunk.data)
            self._account(memoryview(cast(Any, chunk.data)))  # (numpy arrays are buffers; its stubs do not say so)
        else:
            self.checksums.append((chunk.raw_sum, chunk.packed_sum))
            self.dataset.truncate(self.written + chunk.length)
            self.dataset.write_chunk((self.written,), chunk.packed)
        self.written += chunk.length

    def finish(self) -> None:
        if not self.direct and self._window[1]:
            self.checksums.append((self._window[0].intdigest(), 0))
        table = self.np.array(self.checksums or [(0, 0)], dtype=CHECKSUM.dtype)[: len(self.checksums)]
        self.dataset._v_file.create_array("/", CHECKSUM.table(self.dataset.name), obj=table.reshape(len(self.checksums), 2))

    def _account(self, data: memoryview) -> None:
        """The checksum of each chunk-sized window of the bytes appended through the pipeline."""
        hasher, filled = self._window
        while len(data):
            take = min(self.chunk_bytes - filled, len(data))
            hasher = hasher or CHECKSUM.hasher()
            hasher.update(data[:take])
            filled, data = filled + take, data[take:]
            if filled == self.chunk_bytes:
                self.checksums.append((hasher.intdigest(), 0))
                hasher, filled = None, 0
        self._window = (hasher, filled)


def as_array(path: str | os.PathLike[str], obj: Any) -> np.ndarray:
    np = numpy_module()
    if isinstance(obj, np.generic):
        obj = np.asarray(obj)
    if not isinstance(obj, np.ndarray):
        raise SerializeError(path, f"cannot save a {type(obj).__module__}.{type(obj).__name__}: not a NumPy array, scalar, DataFrame, Series or sparse matrix")
    if obj.dtype.hasobject:
        raise SerializeError(path, f"cannot save dtype {obj.dtype}: Python objects have no fixed size (use fixed-width strings, 'U' or 'S')")
    if obj.dtype.itemsize == 0:
        raise SerializeError(path, f"cannot save dtype {obj.dtype} of size 0")
    return obj


def _best_filter(np: Any, blosc: Any, source: np.ndarray, sample_bytes: int, modes: tuple[int, ...], *, codec: str, level: int) -> tuple[int, int]:
    """Of Blosc's filters ``modes`` (none, byte shuffle, bit shuffle), the one that makes ``source``'s first ``sample_bytes`` smallest, and that size.

    Shuffle helps counters and random values and hurts columns of few distinct values; bit
    shuffle helps small integers most. Blosc 1 records the filter in each chunk's header.
    """
    rows = source if source.ndim else source.reshape(1)
    row_items = max(1, rows[:1].size)
    sample = np.ascontiguousarray(rows[: max(1, sample_bytes // (rows.dtype.itemsize * row_items))]).view(np.uint8).tobytes() if rows.size else b""
    itemsize = rows.dtype.itemsize
    if len(sample) < 1024 or itemsize == 1 or itemsize > 255:
        return (modes[0] if len(modes) == 1 else NO_SHUFFLE), len(sample)
    sizes = {mode: len(blosc.compress(sample, typesize=itemsize, clevel=max(level, 1), shuffle=mode, cname=codec)) for mode in modes}
    best = min(sizes, key=lambda mode: (sizes[mode], mode))
    return best, sizes[best]
