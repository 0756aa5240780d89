"""fireplug.serialize against NumPy, SciPy, pandas and Arrow baselines, measured in one run.

    python bench/serialize.py [--repeat 3] [--folder DIR] [--plot docs/serialize-benchmark.png]

Needs pandas, scipy and pyarrow (and matplotlib for --plot) next to fp. Datasets (issue 4):
R random float64 2e6 x 30; C the mixed compressible matrix (10 cumulative counters, 10
columns of 16 distinct floats, 10 columns rounded to 2 decimals); V one int64 column of 2e7
Zipf(1.5) values capped at 1,000; S CSR 1e6 x 1e5 with 1e7 non-zeros; F a DataFrame of C
plus a string column of 1,000 distinct values. Each format is timed best of --repeat for:
write (until the call returns), write + fsync, read (warm page cache), and file size. Then
the memory ``save`` adds (peak RSS above the object's, in a fresh process per dataset) is
checked against the issue's 1.2x of the object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fireplug import serialize  # the checkout's, when run from a clone

ROWS, COLUMNS = 2_000_000, 30


def datasets(names: str = "RCVSF") -> dict[str, Any]:
    """The issue's datasets (all from one seeded generator, so each is the same in every run)."""
    import pandas as pd
    import scipy.sparse

    rng = np.random.default_rng(2016)
    counters = [np.cumsum(rng.integers(0, 5, ROWS)).astype("float64") for _ in range(10)]
    levels = [rng.random(16)[rng.integers(0, 16, ROWS)] for _ in range(10)]
    rounded = [np.round(rng.random(ROWS) * 100, 2) for _ in range(10)]
    mixed = np.column_stack(counters + levels + rounded)
    del counters, levels, rounded
    found: dict[str, Any] = {}
    if "F" in names:
        frame = pd.DataFrame(mixed, columns=[f"c{i:02d}" for i in range(COLUMNS)])
        words = np.array([f"category-{i:04d}" for i in range(1000)], dtype=object)
        frame["label"] = words[rng.integers(0, 1000, ROWS)]
        found["F"] = frame
    if "S" in names:
        rows, cols = rng.integers(0, 1_000_000, 10_000_000), rng.integers(0, 100_000, 10_000_000)
        found["S"] = scipy.sparse.csr_matrix((rng.random(10_000_000), (rows, cols)), shape=(1_000_000, 100_000))
    if "R" in names:
        found["R"] = rng.random((ROWS, COLUMNS))
    if "C" in names:
        found["C"] = mixed
    if "V" in names:
        found["V"] = np.minimum(rng.zipf(1.5, 20_000_000), 1000).astype("int64")
    return {name: found[name] for name in "RCVSF" if name in found}


def object_bytes(data: Any) -> int:
    """What an object holds in memory: array bytes, a sparse matrix's three arrays, a DataFrame's columns (deep)."""
    if hasattr(data, "memory_usage"):
        return int(data.memory_usage(deep=True).sum())
    if hasattr(data, "indptr"):
        return int(data.data.nbytes + data.indices.nbytes + data.indptr.nbytes)
    return int(data.nbytes)


def save_memory(name: str, folder: Path) -> dict[str, float]:
    """Peak memory that ``serialize.save`` adds, measured in a fresh process holding only dataset ``name``."""
    code = (
        "import json, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import serialize as bench; "
        "print(json.dumps(bench.measure_save_memory(sys.argv[3], sys.argv[4])))"
    )
    here = Path(__file__).resolve().parent
    found = subprocess.run([sys.executable, "-c", code, str(here.parent), str(here), name, str(folder)], capture_output=True, text=True, check=True)
    return json.loads(found.stdout.splitlines()[-1])


def measure_save_memory(name: str, folder: str) -> dict[str, float]:
    data = datasets(name)[name]
    path = Path(folder) / f"memory-{name}.h5"
    serialize.save(path, data[:10] if name != "F" else data.iloc[:10])  # libraries loaded: their code is not the save's memory
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_bytes("VmRSS")
    serialize.save(path, data)
    extra = _status_bytes("VmHWM") - before
    path.unlink()
    return {"object": object_bytes(data), "extra": extra}


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(key)


def fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def measure(write: Callable[[Path], None], read: Callable[[Path], Any], path: Path, repeat: int) -> dict[str, float]:
    best = {"write": float("inf"), "write_fsync": float("inf"), "read": float("inf")}
    for _ in range(repeat):
        if path.exists():
            path.unlink()
        os.sync()
        started = time.perf_counter()
        write(path)
        written = time.perf_counter()
        fsync(path)
        synced = time.perf_counter()
        read(path)  # warm
        started_read = time.perf_counter()
        read(path)
        best = {
            "write": min(best["write"], written - started),
            "write_fsync": min(best["write_fsync"], synced - started),
            "read": min(best["read"], time.perf_counter() - started_read),
        }
    return {**best, "size": path.stat().st_size}


def candidates(name: str, data: Any) -> dict[str, tuple[Callable[[Path], None], Callable[[Path], Any]]]:
    """The formats compared on dataset ``name``: fp's first, then the baselines."""
    fp = {
        "fp (lz4)": (lambda p: serialize.save(p, data), serialize.load),
        "fp (zstd)": (lambda p: serialize.save(p, data, codec="zstd"), serialize.load),
    }
    if name in ("R", "C", "V"):
        found = {**fp, "np.save": (lambda p: _to_file(p, np.save, data), lambda p: np.load(p))}
        if name == "C":
            found["np.savez_compressed"] = (lambda p: _to_file(p, lambda f, d: np.savez_compressed(f, a=d), data), lambda p: np.load(p)["a"])
        return found
    if name == "S":
        import scipy.sparse

        save_npz = (lambda p: _to_file(p, lambda f, d: scipy.sparse.save_npz(f, d, compressed=True), data), scipy.sparse.load_npz)
        return {**fp, "save_npz (compressed)": save_npz}
    import pandas as pd

    return {
        **fp,
        "to_hdf (blosc)": (lambda p: data.to_hdf(p, key="f", complib="blosc", complevel=9), lambda p: pd.read_hdf(p, "f")),
        "feather (zstd)": (lambda p: data.to_feather(p, compression="zstd"), pd.read_feather),
        "parquet (zstd)": (lambda p: data.to_parquet(p, compression="zstd"), pd.read_parquet),
    }


def _to_file(path: Path, write: Callable[[Any, Any], None], data: Any) -> None:
    """NumPy and SciPy add ".npy"/".npz" to a path; through a file object they write where told."""
    with open(path, "wb") as out:
        write(out, data)


TARGETS = [
    # dataset, format, measure, baseline format, baseline measure, ratio limit, "<=" or ">="
    ("C", "fp (lz4)", "size", "np.save", "size", 0.4, "<="),
    ("C", "fp (lz4)", "write_fsync", "np.save", "write_fsync", 1.5, "<="),
    ("C", "np.savez_compressed", "write", "fp (lz4)", "write", 10.0, ">="),
    ("C", "fp (zstd)", "size", "np.savez_compressed", "size", 1.0, "<="),
    ("C", "np.savez_compressed", "write", "fp (zstd)", "write", 3.0, ">="),
    ("R", "fp (lz4)", "write_fsync", "np.save", "write_fsync", 1.5, "<="),
    ("R", "fp (lz4)", "read", "np.save", "read", 1.5, "<="),
    ("R", "fp (lz4)", "size", "np.save", "size", 1.0, "<="),
    ("V", "fp (lz4)", "size", "np.save", "size", 0.15, "<="),
    ("V", "fp (lz4)", "write_fsync", "np.save", "write_fsync", 1.0, "<="),
    ("S", "save_npz (compressed)", "write", "fp (lz4)", "write", 20.0, ">="),
    ("S", "fp (lz4)", "size", "save_npz (compressed)", "size", 1.0, "<="),
    ("S", "fp (lz4)", "read", "save_npz (compressed)", "read", 0.5, "<="),
    ("F", "fp (lz4)", "write", "to_hdf (blosc)", "write", 0.5, "<="),
    ("F", "fp (lz4)", "write", "feather (zstd)", "write", 1.5, "<="),
    ("F", "fp (lz4)", "size", "parquet (zstd)", "size", 1.5, "<="),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="RCVSF", help="datasets to run (default: all, RCVSF)")
    parser.add_argument("--folder", type=Path, default=None, help="where the files are written (default: a temporary folder)")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of the results")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="fp-bench-serialize-"))
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, data in datasets(args.only).items():
        results[name] = {}
        for label, (write, read) in candidates(name, data).items():
            path = folder / f"{name}-{label.split()[0].replace('.', '_')}-{abs(hash(label)) % 1000}.bin"
            results[name][label] = measure(write, read, path, args.repeat)
            path.unlink()
            row = results[name][label]
            timings = f"write {row['write']:7.2f} s  +fsync {row['write_fsync']:7.2f} s  read {row['read']:7.2f} s"
            print(f"{name}  {label:24s} {timings}  size {row['size'] / 1e6:9.1f} MB", flush=True)
    print()
    met = 0
    for dataset, label, key, base_label, base_key, limit, sense in TARGETS:
        ratio = results[dataset][label][key] / results[dataset][base_label][base_key]
        ok = ratio <= limit if sense == "<=" else ratio >= limit
        met += ok
        print(f"{dataset}: {label} {key} / {base_label} {base_key} = {ratio:6.3f}  target {sense} {limit}  {'OK' if ok else 'MISSED'}")
    print()
    for name in results:
        memory = save_memory(name, folder)
        results[name]["fp (lz4)"]["save_extra_memory"] = memory["extra"]
        ratio = memory["extra"] / memory["object"]
        ok = ratio <= 0.2
        met += ok
        verdict = "OK" if ok else "MISSED"
        print(f"{name}: memory save adds {memory['extra'] / 1e6:.0f} MB to a {memory['object'] / 1e6:.0f} MB object = {ratio:.3f}x  target <= 0.2  {verdict}")
    print(f"\n{met} of {len(TARGETS) + len(results)} targets met")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)
    return 0 if met == len(TARGETS) + len(results) else 1


def plot(results: dict[str, dict[str, dict[str, float]]], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 4))
    for axis, (name, rows) in zip(axes, results.items(), strict=True):
        for label, row in rows.items():
            axis.scatter(row["write_fsync"], row["size"] / 1e6, label=label)
        axis.set_title(f"dataset {name}")
        axis.set_xlabel("write + fsync (s)")
        axis.set_ylabel("size (MB)")
        axis.set_xscale("log")
        axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(target, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
