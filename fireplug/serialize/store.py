"""Storage of arrays in fp's HDF5 format: chunked, Blosc 1-compressed, checksummed datasets.

Every dataset holds raw bytes (so every fixed-size dtype is stored alike) in chunks of whole
rows, up to 2 MiB each, compressed with Blosc 1 (HDF5 filter 32001), which both the laptop's
PyTables and the image's Debian PyTables 3.7 read (Blosc2 would be unreadable in the image).
Where PyTables has direct chunk I/O (3.8+), fp compresses chunks itself with python-blosc on
all cores (``pipeline.Pool``) and writes and reads them directly; elsewhere HDF5's filter
pipeline does the same work, more slowly. A checksum per chunk (xxh3-64; CRC-32 in format 1)
makes damage an error, never a wrong value.
"""

from __future__ import annotations

import json
import mmap
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from fireplug.serialize.pipeline import Pool

if TYPE_CHECKING:
    import numpy as np

FORMAT_VERSION = 2  # 2: xxh3-64 checksums (1: CRC-32)
META_ATTRIBUTE = "FIREPLUG"
CHUNK_BYTES = 2 << 20  # MB-sized chunks: large enough for Blosc's threads, small enough to stream
CODECS = ("lz4", "zstd", "blosclz", "zlib", "lz4hc")
SAMPLE_BYTES = 256 << 10  # per column, to pick its filter
TABLE_SAMPLE_BYTES = 2 << 20  # at most, for a 2-D array's columns together (rows or columns?)
KINDS = ("ndarray", "sparse", "frame")
NO_SHUFFLE, SHUFFLE, BIT_SHUFFLE = 0, 1, 2  # Blosc 1's filter codes
TILE_ROWS = 8192  # rows transposed at once between C order and columns: a tile stays in cache
BLOCK_BYTES = 16 << 20  # rows of all columns of a column-stored table compressed as one job
READ_DEPTH_PER_WORKER = 4  # reading jobs hold views of the mapped file, no memory: more keep the workers busy
ROWS_LAYOUT_SLACK = 1.1  # a C-ordered table is stored by rows if that is at most 10% bigger on a sample


class SerializeError(Exception):
    """A file cannot be written or read; the message names the file and says why."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{os.fspath(path)}: {message}")
        self.path = os.fspath(path)


def save_array(path: str | os.PathLike[str], array: np.ndarray, *, codec: str, level: int, shuffle: bool | None, scalar: bool = False) -> None:
    """Write a NumPy array to ``path`` (see ``fireplug.serialize.save``); ``scalar``: a 0-d
    array that stands for a NumPy scalar."""
    with Writer(path, codec=codec, level=level, shuffle=shuffle) as writer:
        writer.numpy_scalar = scalar
        writer.order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        writer.append(array)  # cut into chunk-sized views inside: never copied whole


def read_file(path: str | os.PathLike[str], read: Callable[[_Reader], Any]) -> Any:
    """Open ``path``, check its header, and return ``read(reader)``; every failure named after the file.

    Raises:
        SerializeError: missing, damaged, truncated or foreign file, or a newer format version.
    """
    tables = _tables()
    try:
        handle = tables.open_file(os.fspath(path), "r")
    except (OSError, tables.HDF5ExtError) as e:
        raise SerializeError(path, _open_failure(path, e)) from e
    try:
        reader = _Reader(path, handle)
        try:
            return read(reader)
        finally:
            reader.close()
    except (tables.HDF5ExtError, ValueError, LookupError, AttributeError, RuntimeError) as e:
        raise SerializeError(path, f"damaged or truncated file ({e})") from e
    finally:
        handle.close()


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
        self._tables, self._np, self._blosc = _tables(), _numpy(), _blosc_for_pool()
        try:
            self._file = self._tables.open_file(os.fspath(path), "w")
        except (OSError, self._tables.HDF5ExtError) as e:
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
        self._stages: _Stages | None = None  # column-stored tables: buffers for transposed blocks
        self._tail_rows = 0

    def append(self, piece: Any) -> None:
        array = _as_array(self.path, piece)
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
            "dtype": _dtype_text(self._dtype),
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
        self.chunk_rows = _chunk_rows(self._np, array.dtype, self._trailing)
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
            self.chunk_rows = _chunk_rows(np, table.dtype, self._trailing)
            self._datasets = [_Dataset(self, "rows", table.dtype, self._trailing, self.chunk_rows, by_rows[0])]
            return
        self.layout = "columns"
        column_bytes = min(CHUNK_BYTES, max(BLOCK_BYTES // max(width, 1), CHUNK_BYTES // 16))
        self.chunk_rows = max(1, column_bytes // table.dtype.itemsize)
        self._stages = _Stages(np, (width, self.chunk_rows), table.dtype)
        self._datasets = [_Dataset(self, f"c{index:05d}", table.dtype, (), self.chunk_rows, mode) for index, (mode, _) in enumerate(columns)]

    def _filter(self, data: np.ndarray, sample_bytes: int = SAMPLE_BYTES) -> tuple[int, int]:
        """The Blosc filter for ``data``, and the size of a sample of its first ``sample_bytes`` with it."""
        modes = (NO_SHUFFLE, SHUFFLE, BIT_SHUFFLE) if self.shuffle is None else ((SHUFFLE,) if self.shuffle else (NO_SHUFFLE,))
        return _best_filter(self._np, self._blosc, data, sample_bytes, modes, codec=self.codec, level=self.level)

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
        _transpose(block.T, stage.T[: len(block)])
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
        rows = _chunk_rows(self._np, flat.dtype, trailing)
        mode, _ = self._filter(flat)
        dataset = _Dataset(self, name, flat.dtype, trailing, rows, mode)
        self._parts.append(dataset)
        for start in range(0, len(flat), rows):
            self._pool.submit(partial(dataset.pack, flat[start : start + rows]), dataset.store)
        return {"dtype": _dtype_text(array.dtype), "shape": list(array.shape)}


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
        return int(_xxhash().xxh3_64_intdigest(data))

    def hasher(self) -> Any:
        assert self is XXH3
        return _xxhash().xxh3_64()


CRC32 = Checksum("crc32", "_crc", "uint32")  # format 1
XXH3 = Checksum("xxh3-64", "_sum", "uint64")  # format 2: 3x faster than CRC-32 here (10 GB/s)
CHECKSUM = XXH3  # what files are written with


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
        self.np, self.blosc = writer._np, writer._blosc
        self.codec, self.level = writer.codec, writer.level
        self.dtype = dtype
        self.row_bytes = _row_bytes(writer._np, dtype, trailing)
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_rows * self.row_bytes
        self.shuffle = shuffle
        filters = writer._tables.Filters(
            complevel=max(writer.level, 1), complib=f"blosc:{writer.codec}", shuffle=shuffle == SHUFFLE, bitshuffle=shuffle == BIT_SHUFFLE
        )
        self.dataset = writer._file.create_earray(
            "/", name, atom=writer._tables.UInt8Atom(), shape=(0,), filters=filters, chunkshape=(max(self.chunk_bytes, 1),)
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
        return _numpy().arange(len(self.wanted)) * self.wanted.step + (self.wanted[0] - self.first)

    def pick(self, block: np.ndarray) -> np.ndarray:
        positions = self.positions()
        return block if positions is None else block[positions]


class _Reader:
    """Reads a file's datasets: chunks are located on this thread (HDF5), checked and decompressed on the pool's."""

    def __init__(self, path: str | os.PathLike[str], handle: Any) -> None:
        self.path = path
        self.handle = handle
        self.np = _numpy()
        self.meta = _meta(path, handle)
        self.kind = self.meta.get("kind")
        self.dtype = _dtype_from_text(self.meta["dtype"]) if self.kind == "ndarray" else None
        self.shape = tuple(self.meta.get("shape", ()))
        self.checksum = Checksum.of(self.meta)
        self._blosc = _blosc_for_pool()
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
        stages = _Stages(self.np, (len(datasets), window), self.dtype)
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
        row_bytes = _row_bytes(self.np, out.dtype, out.shape[1:])
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
        dtype, shape = _dtype_from_text(description["dtype"]), tuple(description["shape"])
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
        blosc = _blosc()
        try:
            if blosc.get_cbuffer_sizes(packed)[0] != self.size:
                raise ValueError("wrong size")
            if offset == 0 and len(target) == self.size:  # lands in the result as is: no copy
                blosc.decompress_ptr(packed, target.__array_interface__["data"][0])
                data = target
            else:
                data = _numpy().frombuffer(blosc.decompress(packed), dtype="uint8")
                target[:] = data[offset : offset + len(target)]
        except Exception as e:  # python-blosc's own error type, not an exported class
            raise ValueError(f"chunk at byte {self.start} of {self.dataset} cannot be decompressed ({e})") from e
        if not self.packed_sum:
            self.check_raw(data[: self.real])

    def check_raw(self, data: Any) -> None:
        if self.digest(memoryview(data)) != self.raw_sum:
            raise ValueError(f"chunk at byte {self.start} of {self.dataset} is damaged (checksum mismatch)")


class _Stages:
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


def _unpack_window(jobs: list[Callable[[], None]], stage: np.ndarray, rows: np.ndarray, stages: _Stages) -> None:
    """Decompress a window's column chunks into ``stage`` (a row per column), then transpose them into ``rows``."""
    for job in jobs:
        job()
    _transpose(stage[:, : len(rows)], rows)
    stages.give(stage)


def _transpose(source: np.ndarray, target: np.ndarray) -> None:
    """``target[...] = source.T`` in tiles of rows that stay in cache (one column at a time was 3x slower)."""
    for start in range(0, len(target), TILE_ROWS):
        target[start : start + TILE_ROWS] = source[:, start : start + TILE_ROWS].T


def _chunk_rows(np: Any, dtype: np.dtype, trailing: tuple[int, ...]) -> int:
    """Rows of ``trailing`` shape per chunk of a dataset: whole rows, about ``CHUNK_BYTES``."""
    return max(1, CHUNK_BYTES // max(_row_bytes(np, dtype, trailing), 1))


def _row_bytes(np: Any, dtype: np.dtype, trailing: tuple[int, ...]) -> int:
    """Bytes in one row of ``trailing`` shape (0 when one of its dimensions is 0)."""
    return dtype.itemsize * (int(np.prod(trailing)) if trailing else 1)


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


def _as_array(path: str | os.PathLike[str], obj: Any) -> np.ndarray:
    np = _numpy()
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


def _dtype_text(dtype: np.dtype) -> Any:
    from numpy.lib import format as npy_format

    return npy_format.dtype_to_descr(dtype)


def _dtype_from_text(text: Any) -> np.dtype:
    from numpy.lib import format as npy_format

    descr: Any = text if isinstance(text, str) else [tuple(item) for item in text]
    return npy_format.descr_to_dtype(descr)


def _open_failure(path: str | os.PathLike[str], error: BaseException) -> str:
    if not os.path.exists(os.fspath(path)):
        return "no such file"
    return f"not an HDF5 file, or damaged ({type(error).__name__})"


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


def _numpy() -> Any:
    import numpy

    return numpy


def _blosc_for_pool() -> Any:
    """python-blosc set for the pool: one thread per call, GIL released (calls run side by side)."""
    blosc = _blosc()
    blosc.set_nthreads(1)
    blosc.set_releasegil(True)
    return blosc


def _xxhash() -> Any:
    import xxhash

    return xxhash


def _tables() -> Any:
    import tables

    return tables


def _blosc() -> Any:
    import blosc

    return blosc
