"""Grid feature reads: random minibatches through ``LazyGrid`` from a grid file of several GB.

Writes a float16 grid file of --gb GB of COCO-sized maps (196 cells x 512 channels, 200 KB a row) into a
temporary folder under --dir, drops it from the page cache (so reads come from the disk, as they do from a
file bigger than memory), reads --batches minibatches of --batch-size random rows, and reports the read time
per minibatch and the peak RSS against the file's size. The file is deleted at the end, whatever happens.

    python -m benchmarks.bench_grid_io [--gb 4] [--dir /tmp] [--batch-size 128] [--batches 50]
"""
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import print_rows
from core.data.grid import GRID_DTYPE, open_grid, write_grid_h5
from core.data.layout import grid_file
from core.runtime.cli import ArgumentParser, positive_float, positive_int, run

BLOCK_ROWS = 256  # rows written at a time: bounds the writer's memory to one block


def write_file(path, rows, cells, channels):
    """A grid file of ``rows`` rows; one random block, row-shifted, fills it (the values do not matter)."""
    block = np.random.default_rng(0).random((BLOCK_ROWS, cells, channels), dtype=np.float32).astype(GRID_DTYPE)

    def fill(dataset):
        for start in range(0, rows, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, rows)
            dataset[start:stop] = np.roll(block, start, axis=0)[:stop - start]
    write_grid_h5(path, (rows, cells, channels), fill)


def drop_page_cache(path):
    """Ask the kernel to forget the file's cached pages (no root needed); whether it could."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KB


def time_reads(grid, batch_size, batches, rng):
    """Seconds of each minibatch read (the first one opens the file)."""
    seconds = []
    for _ in range(batches):
        index = rng.integers(0, len(grid), batch_size)
        start = time.perf_counter()
        grid[index]
        seconds.append(time.perf_counter() - start)
    return np.array(seconds)


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=positive_float, default=4.0, help="size of the grid file in GB (default 4)")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                   help="folder to write the file under (default: the system's temporary folder)")
    p.add_argument("--cells", type=positive_int, default=196, help="cells R of a map, a square (default 196)")
    p.add_argument("--channels", type=positive_int, default=512, help="channels C of a map (default 512)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="rows a minibatch reads (default 128)")
    p.add_argument("--batches", type=positive_int, default=50, help="minibatches read (default 50)")
    args = p.parse_args(argv)
    row_bytes = args.cells * args.channels * np.dtype(GRID_DTYPE).itemsize
    rows = max(args.batch_size, int(args.gb * 1e9 / row_bytes))
    folder = Path(tempfile.mkdtemp(prefix="bench_grid_io.", dir=args.dir))
    try:
        path = folder / grid_file("train")
        start = time.perf_counter()
        # In a child process, so this one's peak RSS is the reads' alone.
        writer = multiprocessing.get_context("fork").Process(target=write_file,
                                                             args=(path, rows, args.cells, args.channels))
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            raise RuntimeError(f"writing {path} failed (exit code {writer.exitcode})")
        write_seconds = time.perf_counter() - start
        dropped = drop_page_cache(path)
        rss_before = peak_rss_mb()
        with open_grid(path, rows=rows) as grid:
            seconds = time_reads(grid, args.batch_size, args.batches, np.random.default_rng(1))
        size_mb = path.stat().st_size / 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    batch_mb = args.batch_size * row_bytes / 1e6
    warm = seconds[1:] if len(seconds) > 1 else seconds
    print_rows(f"LazyGrid: {args.batches} minibatches of {args.batch_size} random rows from {rows} rows of "
               f"({args.cells}, {args.channels}) float16" + ("" if dropped else " (page cache not dropped)"), [
                   ("file size", f"{size_mb:.0f} MB (written in {write_seconds:.1f} s)"),
                   ("minibatch on disk / as float32", f"{batch_mb:.1f} MB / {2 * batch_mb:.1f} MB"),
                   ("first read (opens the file)", f"{seconds[0] * 1e3:.1f} ms"),
                   ("read per minibatch, median", f"{np.median(warm) * 1e3:.1f} ms"),
                   ("read per minibatch, 90th percentile", f"{np.percentile(warm, 90) * 1e3:.1f} ms"),
                   ("throughput, median", f"{batch_mb / np.median(warm):.0f} MB/s of float16 rows"),
                   ("peak RSS before the reads / after them", f"{rss_before:.0f} MB / {peak_rss_mb():.0f} MB"),
                   ("peak RSS / file size", f"{peak_rss_mb() / size_mb:.3f}")])
    return 0


if __name__ == "__main__":
    run(main)
