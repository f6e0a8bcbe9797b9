"""How fast an evaluation report's first page is usable in headless Chromium, and what it weighs per image.

    python -m benchmarks.bench_report --images 5000 --repeats 5

Writes a synthetic report (``synthetic_runs``: generated shapes scenes and pictures, captions taken from their
references or, for a share of the images, from another scene's, grounded and scored as an evaluation does, random
attention over 8 x 8 cells) and opens it from ``file://`` in headless Chromium: the time to the cards being in the
DOM is the page's own ``performance.now()`` when its first render ends (``data-first-render-ms``), measured from
the start of navigation; the process's wall time, browser start included, is printed beside it.
"""
import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from core.evaluation.grounding import caption_findings
from core.evaluation.metrics import per_image_scores
from core.inference.report import ReportRun, write_report
from core.shapes_world.captions import scene_captions
from core.shapes_world.render import render_scene, sample_scene

IMAGE_SIZE, CELLS = 64, 64
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def synthetic_runs(num_images, num_runs=1, seed=0, wrong_share=0.25):
    """``num_runs`` ReportRuns over the same ``num_images`` generated scenes, and the scenes' pictures (row ->
    uint8 (S, S, 3)). A run's caption of an image is one of its references, or for ``wrong_share`` of the images
    one of another scene's; findings and per-image scores are computed as an evaluation computes them."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, IMAGE_SIZE) for _ in range(num_images)]
    references = {row: scene_captions(scene, rng, IMAGE_SIZE) for row, scene in enumerate(scenes)}
    runs = []
    for k in range(num_runs):
        predictions = {}
        for row in range(num_images):
            source = int(rng.integers(num_images)) if rng.random() < wrong_share else row
            predictions[row] = references[source][int(rng.integers(5))]
        per_image = per_image_scores(predictions, references)
        for row, caption in predictions.items():
            per_image[row]["findings"] = caption_findings(caption, scenes[row]["objects"])
        attention = {row: rng.dirichlet(np.full(CELLS, 0.3), size=len(caption.split()) + 1).astype(np.float32)
                     for row, caption in predictions.items()}  # (T, R): each word's and <END>'s
        result = {"split": "test", "predictions": predictions, "references": references, "per_image": per_image,
                  "metrics": {"CIDEr": float(np.mean([p["CIDEr"] for p in per_image.values()]))},
                  "grounding": None, "attention_weights": attention}
        runs.append(ReportRun(f"synthetic run {k + 1}", {"model": "synthetic", "split": "test"}, result))
    pictures = {row: render_scene(scene, IMAGE_SIZE) for row, scene in enumerate(scenes)}
    return runs, pictures


def synthetic_report(out, num_images, num_runs=1, seed=0):
    """Write a synthetic report of ``num_images`` images into ``out``; returns the path of its index.html."""
    runs, pictures = synthetic_runs(num_images, num_runs, seed)
    return write_report(out, runs, pictures.get, f"synthetic report of {num_images} images", progress=False)


def find_chromium():
    """The path of a Chromium executable on PATH, or None."""
    return next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)


def run_chromium(chromium, url, *flags, timeout=60):
    """Run headless Chromium on ``url`` with ``flags`` (e.g. ``--dump-dom``) in a fresh profile: (stdout, the
    page's console lines from stderr)."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *flags, url],
                              capture_output=True, text=True, timeout=timeout, check=False)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def first_render_ms(dom):
    """The page's time to its first cards (``data-first-render-ms``) in a dumped DOM, or None."""
    found = re.search(r'data-first-render-ms="(\d+)"', dom)
    return None if found is None else int(found.group(1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000, help="images in the synthetic report (default 5000)")
    p.add_argument("--repeats", type=int, default=5, help="page loads measured (default 5)")
    p.add_argument("--out", default=None, help="where the report goes (default: a temporary folder)")
    args = p.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium on PATH: install Debian's chromium package")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "report")
        start = time.perf_counter()
        index = synthetic_report(out, args.images)
        print(f"wrote {index} ({args.images} images) in {time.perf_counter() - start:.1f} s")
        sizes = {path.relative_to(out).parts[0]: 0 for path in out.rglob("*") if path.is_file()}
        for path in out.rglob("*"):
            if path.is_file():
                sizes[path.relative_to(out).parts[0]] += path.stat().st_size
        for name, size in sorted(sizes.items()):
            print(f"  {name:<16} {size / 1e6:8.2f} MB  {size / args.images / 1e3:6.2f} kB per image")
        print(f"  {'total':<16} {sum(sizes.values()) / 1e6:8.2f} MB  "
              f"{sum(sizes.values()) / args.images / 1e3:6.2f} kB per image")
        renders, walls = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            dom, console = run_chromium(chromium, index.as_uri(), "--dump-dom")
            walls.append(time.perf_counter() - start)
            renders.append(first_render_ms(dom))
            if console or renders[-1] is None:
                raise SystemExit(f"the page did not render cleanly: {console[:3]}")
        print(f"first page's cards in the DOM: median {statistics.median(renders)} ms after navigation "
              f"(all: {renders}); Chromium's wall time, start included: median {statistics.median(walls):.2f} s")


if __name__ == "__main__":
    main()
