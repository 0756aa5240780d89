"""Storage of arrays in fp's HDF5 format: chunked, Blosc 1-compressed, checksummed datasets.

Every dataset holds raw bytes (so every fixed-size dtype is stored alike) in chunks of whole
rows, about 4 MiB each, compressed with Blosc 1 (HDF5 filter 32001), which both the laptop's
PyTables and the image's Debian PyTables 3.7 read (Blosc2 would be unreadable in the image).
Where PyTables has direct chunk I/O (3.8+), fp compresses chunks itself with python-blosc on
all cores and writes and reads them directly; elsewhere HDF5's filter pipeline does the same
work, more slowly. A CRC-32 per chunk makes damage an error, never a wrong value.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

FORMAT_VERSION = 1
META_ATTRIBUTE = "FIREPLUG"
CHUNK_BYTES = 4 << 20  # MB-sized chunks: large enough for Blosc's threads, small enough to stream
CODECS = ("lz4", "zstd", "blosclz", "zlib", "lz4hc")
SAMPLE_BYTES = 256 << 10
KINDS = ("ndarray", "sparse", "frame")
NO_SHUFFLE, SHUFFLE, BIT_SHUFFLE = 0, 1, 2  # Blosc 1's filter codes
INTERLEAVE_ROWS = 8192  # rows of a column-stored table gathered at once when reading into C order


class SerializeError(Exception):
    """A file cannot be written or read; the message names the file and says why."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{os.fspath(path)}: {message}")
        self.path = os.fspath(path)


def save_array(path: str | os.PathLike[str], array: np.ndarray, *, codec: str, level: int, shuffle: bool | None) -> None:
    """Write a NumPy array to ``path`` (see ``fireplug.serialize.save``)."""
    with Writer(path, codec=codec, level=level, shuffle=shuffle) as writer:
        writer.order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        if array.ndim == 0 or len(array) == 0:
            writer.append(array)
            return
        rows = writer.chunk_rows_for(array)  # chunk-sized pieces: never copied whole
        for start in range(0, len(array), rows):
            writer.append(array[start : start + rows])


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
        return read(_Reader(path, handle))
    except (tables.HDF5ExtError, ValueError, LookupError, AttributeError, RuntimeError) as e:
        raise SerializeError(path, f"damaged or truncated file ({e})") from e
    finally:
        handle.close()


class Writer:
    """An array written in pieces along its first axis, for data larger than memory.

    All pieces share the dtype and trailing shape of the first. The file is complete (and
    loadable) once the writer is closed; ``with Writer(...) as w:`` closes it.

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
        self.composite: dict[str, Any] | None = None  # header of a sparse matrix or DataFrame, once stored
        self._tables, self._np, self._blosc = _tables(), _numpy(), _blosc()
        self._blosc.set_nthreads(os.cpu_count() or 1)
        try:
            self._file = self._tables.open_file(os.fspath(path), "w")
        except (OSError, self._tables.HDF5ExtError) as e:
            raise SerializeError(path, f"cannot write: {e}") from e
        self._dtype: np.dtype | None = None
        self._trailing: tuple[int, ...] = ()
        self._scalar = False
        self._rows = 0
        self._columns: list[_Column] = []

    def chunk_rows_for(self, array: np.ndarray) -> int:
        """How many rows of ``array`` make one chunk (pieces of that many rows are never copied)."""
        return _chunk_rows(self._np, array.dtype, () if array.ndim == 2 else tuple(array.shape[1:]))

    def append(self, piece: Any) -> None:
        array = _as_array(self.path, piece)
        if self._dtype is None:
            self._start(array)
        elif array.dtype != self._dtype or (array.shape[1:] if array.ndim else ()) != self._trailing:
            raise SerializeError(self.path, f"piece of dtype {array.dtype} and shape {array.shape} does not match {self._dtype} x {self._trailing}")
        if array.ndim == 0:
            self._columns[0].append(array.reshape(1))
            self._rows = 1
            return
        if array.ndim == 2:
            for index, column in enumerate(self._columns):
                column.append(array[:, index])
        else:
            self._columns[0].append(array)
        self._rows += len(array)

    def close(self) -> None:
        if not self._file.isopen:
            return
        try:
            if self.composite is not None:
                self._file.root._v_attrs[META_ATTRIBUTE] = json.dumps({"format": FORMAT_VERSION, **self.composite, "codec": self.codec, "level": self.level})
                return
            if self._dtype is None:
                raise SerializeError(self.path, "nothing was appended")
            for column in self._columns:
                column.finish()
            meta = {
                "format": FORMAT_VERSION,
                "kind": "ndarray",
                "dtype": _dtype_text(self._dtype),
                "shape": [] if self._scalar else [self._rows, *self._trailing],
                "layout": "columns" if len(self._trailing) == 1 else "rows",
                "order": self.order,
                "codec": self.codec,
                "level": self.level,
            }
            self._file.root._v_attrs[META_ATTRIBUTE] = json.dumps(meta)
        finally:
            self._file.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self._file.close()
            os.unlink(os.fspath(self.path))  # never leave a file that looks complete and is not

    def _start(self, array: np.ndarray) -> None:
        self._dtype = array.dtype
        self._scalar = array.ndim == 0
        self._trailing = tuple(array.shape[1:]) if array.ndim else ()
        chunk_rows = self.chunk_rows_for(array if array.ndim else array.reshape(1))
        if array.ndim == 2:
            names = [f"c{index:05d}" for index in range(array.shape[1])]
            self._columns = [self._column(name, array[:, index], (), chunk_rows) for index, name in enumerate(names)]
        else:
            sample = array if array.ndim else array.reshape(1)
            self._columns = [self._column("rows", sample, self._trailing, chunk_rows)]

    def _column(self, name: str, sample: np.ndarray, trailing: tuple[int, ...], chunk_rows: int) -> _Column:
        mode = (SHUFFLE if self.shuffle else NO_SHUFFLE) if self.shuffle is not None else _best_shuffle(self._np, self._blosc, sample, self.codec, self.level)
        return _Column(self, name, sample.dtype, trailing, chunk_rows, mode)

    def _store(self, name: str, array: np.ndarray) -> dict[str, Any]:
        """Write one whole array (a part of a sparse matrix or DataFrame) as dataset ``name``; its description."""
        flat = array if array.ndim else array.reshape(1)
        trailing = tuple(flat.shape[1:])
        rows = _chunk_rows(self._np, flat.dtype, trailing)
        column = self._column(name, flat, trailing, rows)
        for start in range(0, len(flat), rows):
            column.append(flat[start : start + rows])
        column.finish()
        return {"dtype": _dtype_text(array.dtype), "shape": list(array.shape)}


class _Column:
    """One HDF5 dataset of raw bytes: a column of a 2-D array, or the rows of any other array.

    Bytes, not typed elements, so every fixed-size dtype is stored the same way; Blosc still
    shuffles by the element size. Full chunks are written as they fill; the last is padded
    and the dataset truncated to the real length.
    """

    def __init__(self, writer: Writer, name: str, dtype: np.dtype, trailing: tuple[int, ...], chunk_rows: int, shuffle: int) -> None:
        self.writer = writer
        self.dtype = dtype
        self.row_bytes = dtype.itemsize * max(1, int(writer._np.prod(trailing)) if trailing else 1)
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
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.written = 0
        self.checksums: list[tuple[int, int]] = []  # per chunk: CRC-32 of its bytes, and of them compressed (0: not known)
        self._window = (0, 0)  # pipeline path: CRC and length of the chunk being filled

    def append(self, rows: np.ndarray) -> None:
        data = self.writer._np.ascontiguousarray(rows).view(self.writer._np.uint8).reshape(-1)
        if not self.direct:
            self.dataset.append(data)
            self.written += len(data)
            self._account(memoryview(data))
            return
        offset = 0
        if self.pending_bytes:
            take = min(self.chunk_bytes - self.pending_bytes, len(data))
            self.pending.append(data[:take].tobytes())
            self.pending_bytes += take
            offset = take
            if self.pending_bytes == self.chunk_bytes:
                self._write(b"".join(self.pending))
                self.pending, self.pending_bytes = [], 0
        while len(data) - offset >= self.chunk_bytes:
            self._write(data[offset : offset + self.chunk_bytes])
            offset += self.chunk_bytes
        if offset < len(data):
            self.pending.append(data[offset:].tobytes())
            self.pending_bytes += len(data) - offset

    def finish(self) -> None:
        if self.direct and self.pending_bytes:
            tail = b"".join(self.pending)
            self._write(tail + bytes(self.chunk_bytes - len(tail)), real=len(tail))
        if not self.direct and self._window[1]:
            self.checksums.append((self._window[0], 0))
        table = self.writer._np.array(self.checksums or [(0, 0)], dtype=self.writer._np.uint32)[: len(self.checksums)]
        self.writer._file.create_array("/", f"{self.dataset.name}_crc", obj=table.reshape(len(self.checksums), 2))

    def _write(self, chunk: Any, *, real: int | None = None) -> None:
        """Compress one full chunk (``real``: how much of it is data, for the last) and store it as is.

        The dataset is extended to its final length before the last chunk is written: cutting
        it afterwards would make HDF5 rewrite that chunk and leak the space of the first copy.
        """
        writer, np = self.writer, self.writer._np
        raw = np.frombuffer(chunk, dtype=np.uint8) if isinstance(chunk, (bytes, bytearray)) else np.ascontiguousarray(chunk)
        itemsize = self.dtype.itemsize
        typesize = itemsize if itemsize <= 255 and len(raw) % itemsize == 0 else 1
        address = raw.__array_interface__["data"][0]
        settings = {"typesize": typesize, "clevel": writer.level, "shuffle": self.shuffle, "cname": writer.codec}
        compressed = writer._blosc.compress_ptr(address, len(raw) // typesize, **settings)
        length = real if real is not None else self.chunk_bytes
        self.checksums.append((zlib.crc32(memoryview(raw)[:length]), zlib.crc32(compressed)))
        self.dataset.truncate(self.written + length)
        self.dataset.write_chunk((self.written,), compressed)
        self.written += length

    def _account(self, data: memoryview) -> None:
        """CRC-32 of each chunk-sized window of the bytes appended through the pipeline."""
        crc, filled = self._window
        while len(data):
            take = min(self.chunk_bytes - filled, len(data))
            crc, filled, data = zlib.crc32(data[:take], crc), filled + take, data[take:]
            if filled == self.chunk_bytes:
                self.checksums.append((crc, 0))
                crc, filled = 0, 0
        self._window = (crc, filled)


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
    def __init__(self, path: str | os.PathLike[str], handle: Any) -> None:
        self.path = path
        self.handle = handle
        self.np = _numpy()
        self.meta = _meta(path, handle)
        self.kind = self.meta.get("kind")
        self.dtype = _dtype_from_text(self.meta["dtype"]) if self.kind == "ndarray" else None
        self.shape = tuple(self.meta.get("shape", ()))
        self._buffer = bytearray()
        _blosc().set_nthreads(os.cpu_count() or 1)

    def read(self, rows: slice | None) -> np.ndarray:
        if not self.shape:
            return self._rows_of(self.handle.root.rows, 1, 0, 1, ()).reshape(())
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
        if order == "F":  # each column is contiguous in the result
            for index, dataset in enumerate(datasets):
                block[:, index] = self._rows_of(dataset, total, first, last, ())
            return block
        # A C-ordered result, one window of chunk-aligned rows at a time: the columns' rows are
        # decompressed, then interleaved in cache-sized slices (column by column over the whole
        # array was 3x slower: every store a cache miss).
        window = max(1, datasets[0].chunkshape[0] // self.dtype.itemsize) if datasets else 1
        start = first
        while start < last:
            stop = min(last, (start // window + 1) * window)
            columns = [self._rows_of(dataset, total, start, stop, ()) for dataset in datasets]
            for offset in range(0, stop - start, INTERLEAVE_ROWS):
                rows = slice(start - first + offset, min(stop, start + offset + INTERLEAVE_ROWS) - first)
                block[rows] = self.np.column_stack([column[offset : offset + INTERLEAVE_ROWS] for column in columns])
            start = stop
        return block

    def _rows_of(self, dataset: Any, total: int, first: int, last: int, trailing: tuple[int, ...], dtype: np.dtype | None = None) -> np.ndarray:
        dtype = dtype if dtype is not None else self.dtype
        row_bytes = dtype.itemsize * (int(self.np.prod(trailing)) if trailing else 1)
        if dataset.nrows != total * row_bytes:
            raise ValueError(f"dataset {dataset.name} holds {dataset.nrows} bytes, expected {total * row_bytes}")
        raw = self._bytes(dataset, first * row_bytes, last * row_bytes)
        return raw.view(dtype).reshape((last - first, *trailing))

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

    def _bytes(self, dataset: Any, begin: int, end: int) -> np.ndarray:
        """Bytes ``begin`` to ``end`` of a dataset; every chunk they touch is read whole and checked."""
        out = self.np.empty(max(end - begin, 0), dtype=self.np.uint8)
        if end <= begin:
            return out
        checksums = self.handle.root[f"{dataset.name}_crc"][:]
        chunk = dataset.chunkshape[0]
        for chunk_start in range(begin - begin % chunk, end, chunk):
            real = min(chunk, dataset.nrows - chunk_start)
            low, high = max(begin, chunk_start), min(end, chunk_start + chunk)
            whole = low == chunk_start and high - low == chunk  # lands in ``out`` as is: no copy
            target = out[low - begin : high - begin] if whole else None
            data = self._chunk(dataset, chunk_start, real, checksums[chunk_start // chunk], target)
            if data is not None:
                out[low - begin : high - begin] = self.np.frombuffer(data, dtype=self.np.uint8)[low - chunk_start : high - chunk_start]
        return out

    def _packed(self, dataset: Any, start: int) -> Any:
        """A chunk's stored bytes, read into a reused buffer (PyTables would copy them once more)."""
        size = dataset.chunk_info((start,)).size
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        return dataset.read_chunk((start,), out=memoryview(self._buffer)[:size])

    def _chunk(self, dataset: Any, start: int, real: int, checksums: Any, target: np.ndarray | None) -> bytes | None:
        """One chunk, checked: decompressed into ``target`` when given (then None), else returned."""
        raw_crc, packed_crc = int(checksums[0]), int(checksums[1])
        if not hasattr(dataset, "read_chunk"):  # old PyTables: HDF5's filter pipeline decompresses
            data = dataset[start : start + real].tobytes()
            if zlib.crc32(data) != raw_crc:
                raise ValueError(f"chunk at byte {start} of {dataset.name} is damaged (checksum mismatch)")
            return data
        packed = self._packed(dataset, start)
        # Intact compressed bytes decompress to the bytes written; files written through the
        # pipeline (0: not known) are checked after decompression instead.
        if packed_crc and zlib.crc32(packed) != packed_crc:
            raise ValueError(f"chunk at byte {start} of {dataset.name} is damaged (checksum mismatch)")
        blosc = _blosc()
        try:
            if target is not None:
                blosc.decompress_ptr(packed, target.__array_interface__["data"][0])
            data = None if target is not None else blosc.decompress(packed)
        except Exception as e:  # python-blosc's own error type, not an exported class
            raise ValueError(f"chunk at byte {start} of {dataset.name} cannot be decompressed ({e})") from e
        if not packed_crc and zlib.crc32(memoryview(data if data is not None else target)[:real]) != raw_crc:
            raise ValueError(f"chunk at byte {start} of {dataset.name} is damaged (checksum mismatch)")
        return data


def _chunk_rows(np: Any, dtype: np.dtype, trailing: tuple[int, ...]) -> int:
    """Rows of ``trailing`` shape per chunk of a dataset: whole rows, about ``CHUNK_BYTES``."""
    row_bytes = dtype.itemsize * (int(np.prod(trailing)) if trailing else 1)
    return max(1, CHUNK_BYTES // max(row_bytes, 1))


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
    if not isinstance(obj, np.ndarray):
        raise SerializeError(path, f"cannot save a {type(obj).__module__}.{type(obj).__name__}: not a NumPy array")
    if obj.dtype.hasobject:
        raise SerializeError(path, f"cannot save dtype {obj.dtype}: Python objects have no fixed size (use fixed-width strings, 'U' or 'S')")
    if obj.dtype.itemsize == 0:
        raise SerializeError(path, f"cannot save dtype {obj.dtype} of size 0")
    return obj


def _best_shuffle(np: Any, blosc: Any, sample_source: np.ndarray, codec: str, level: int) -> int:
    """The Blosc filter (none, byte shuffle, bit shuffle) that makes a sample of the column smallest.

    Shuffle helps counters and random values and hurts columns of few distinct values; bit
    shuffle helps small integers most. Blosc 1 records the filter in each chunk's header.
    """
    flat = np.ascontiguousarray(sample_source).reshape(-1)
    sample = flat[: max(1, SAMPLE_BYTES // flat.dtype.itemsize)].view(np.uint8).tobytes() if flat.size else b""
    if len(sample) < 1024 or flat.dtype.itemsize == 1:
        return NO_SHUFFLE
    typesize = min(flat.dtype.itemsize, 255)
    sizes = {
        mode: len(blosc.compress(sample, typesize=typesize, clevel=max(level, 1), shuffle=mode, cname=codec)) for mode in (NO_SHUFFLE, SHUFFLE, BIT_SHUFFLE)
    }
    return min(sizes, key=lambda mode: (sizes[mode], mode))


def _dtype_text(dtype: np.dtype) -> Any:
    from numpy.lib import format as npy_format

    return npy_format.dtype_to_descr(dtype)


def _dtype_from_text(text: Any) -> np.dtype:
    from numpy.lib import format as npy_format

    return npy_format.descr_to_dtype(text if isinstance(text, str) else [tuple(item) for item in text])


def _open_failure(path: str | os.PathLike[str], error: BaseException) -> str:
    if not os.path.exists(os.fspath(path)):
        return "no such file"
    return f"not an HDF5 file, or damaged ({type(error).__name__})"


def _numpy() -> Any:
    import numpy

    return numpy


def _tables() -> Any:
    import tables

    return tables


def _blosc() -> Any:
    import blosc

    return blosc
