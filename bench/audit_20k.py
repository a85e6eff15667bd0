"""Explain a 20,000-image folder plus its t-SNE against `python -m core embed` on the same folder, in one run.

    .venv/bin/python bench/audit_20k.py [--images 20000] [--limit N] [--size 96] [--repeats 1] [--threads 2]
                                        [--dir FOLDER] [--model efficientnet_lite0] [--responsive 2000]

The folder (class folders of generated 96-px shape PNGs) is made once and kept in --dir (default: a folder in
the temporary directory named by the image count), so later runs reuse it. Then, as subprocesses, one after the
other (each repeat runs both):

  (a) python -m core embed FOLDER --model M --image-size S --out embed.csv       (features, t-SNE, linear probe)
  (b) python -m core audit FOLDER --model M --image-size S --embed tsne --out DIR  (prediction, top-5, features,
      a Grad-CAM map and its statistics per image, then the t-SNE of the audit's features)

and prints, for each, the wall time and the peak RSS of the process (os.wait4's ru_maxrss of that child), then
the ratio (b) / (a) of the best times (target <= 1.5) and both peaks (target: (b) <= 2 GB). --threads N runs the
children on the first N cores (taskset), so they use N torch threads.

With --responsive N (default 2000; 0 skips it): a dashboard audit job (dashboard.jobs.audit_job, behind the
heavy-work queue, in a background thread as the page starts it) explains N images of the folder while the Model
page of the entry point (its default image's map cached after the first run: a light rerun) is rerun with Streamlit's AppTest in this process again and again; the
median and worst rerun times while the job runs are printed (target: median < 1 s), beside the same reruns with
no job running.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def make_folder(folder: Path, count: int, size: int) -> Path:
    """`count` shape PNGs of `size` px in class folders under `folder` (kept: made once per count and size)."""
    from core import datasets

    done = folder / ".complete"
    if done.exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    started = time.perf_counter()
    chunk = 1000
    for first in range(0, count, chunk):  # in chunks: the drawn images are not all kept at once
        part = datasets.shapes(seed=first, n=min(chunk, count - first), size=size)
        for picture, file in zip(part.images, part.files, strict=True):
            name, stem = file.split("/")
            target = folder / name / f"{first // chunk:03d}_{stem}"
            target.parent.mkdir(parents=True, exist_ok=True)
            picture.save(target, format="PNG")
    done.write_text(f"{count} images at {size} px\n")
    print(f"made {count} images in {folder} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def measured(command: list[str], threads: int | None, log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of `command` as a child process; its output goes to `log`."""
    if threads:
        command = ["taskset", "-c", f"0-{threads - 1}", *command]
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024 / 1024  # ru_maxrss is in KiB on Linux


def responsiveness(folder: Path, model_name: str, size: int, limit: int, reruns: int) -> None:
    """Median rerun time of a light page while a dashboard audit job runs, and without one."""
    from streamlit.testing.v1 import AppTest

    from core import datasets, models
    from dashboard import jobs

    dataset = datasets.load(str(folder), n=limit)
    pretrained = models.weights_available(model_name)

    def reruns_of(page: AppTest, count: int, until=None) -> list[float]:
        times = []
        for _ in range(count):
            if until is not None and until():
                break
            started = time.perf_counter()
            page.run(timeout=60)
            times.append(time.perf_counter() - started)
        return times

    page = AppTest.from_file(str(ROOT / "dashboard" / "streamlit_app.py"), default_timeout=120)
    page.run()  # first run: imports, the model, the default image's map (then cached: a rerun is light)
    if page.exception:
        raise SystemExit(f"the Explain page failed: {page.exception}")
    idle = reruns_of(page, 5)
    job = jobs.audit_job(model_name, "cpu", pretrained, dataset, "gradcam", "predicted", "auto", 32, size)
    started = time.perf_counter()
    busy = reruns_of(page, reruns, until=lambda: job.done)
    while not job.done:
        busy += reruns_of(page, 1)
    job_seconds = time.perf_counter() - started
    error = getattr(job, "error", None)
    print(f"(c) a light page (Explain, its map cached) rerun with AppTest in this process, {len(busy)} reruns while a "
          f"dashboard audit job explained {len(dataset)} images in the background ({job_seconds:.0f} s{', ' + repr(error) if error else ''})")
    print(f"    with the job: median {statistics.median(busy):.3f} s, worst {max(busy):.3f} s   target: median < 1 s")
    print(f"    no job:       median {statistics.median(idle):.3f} s, worst {max(idle):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=None, help="run both commands on a sample of this many")
    parser.add_argument("--size", type=int, default=96, help="image side, and the --image-size of both commands")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="cores for the children (default: all)")
    parser.add_argument("--dir", type=Path, default=None, help="where the generated folder is kept")
    parser.add_argument("--responsive", type=int, default=2000, help="images of the dashboard job (0: skip)")
    parser.add_argument("--reruns", type=int, default=15, help="light-page reruns while the job runs (at least)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.gettempdir()) / f"visionlens-bench-{args.images}-{args.size}px"
    make_folder(folder, args.images, args.size)
    python = sys.executable
    common = [str(folder), "--model", args.model, "--image-size", str(args.size)]
    if args.limit:
        common += ["--limit", str(args.limit)]
    shown = args.limit or args.images
    with tempfile.TemporaryDirectory(prefix="visionlens-audit20k-") as scratch:
        scratch = Path(scratch)
        runs: dict[str, list[tuple[float, float]]] = {"embed": [], "audit": []}
        for _ in range(args.repeats):
            runs["embed"].append(measured(
                [python, "-m", "core", "embed", *common, "--out", str(scratch / "embed.csv")],
                args.threads, scratch / "embed.log"))
            runs["audit"].append(measured(
                [python, "-m", "core", "audit", *common, "--embed", "tsne", "--out", str(scratch / "audit")],
                args.threads, scratch / "audit.log"))
        print(f"{shown} images of {folder} ({args.size} px), {args.model}, "
              f"{args.threads or os.cpu_count()} core(s), {args.repeats} repeat(s)")
        for name, title in (("embed", "(a) core embed (features + t-SNE + probe)"),
                            ("audit", "(b) core audit --embed tsne (maps + statistics + t-SNE)")):
            times = ", ".join(f"{s:.1f} s / {m:.2f} GB" for s, m in runs[name])
            print(f"{title}: {times}")
            said = [line.strip() for line in (scratch / f"{name}.log").read_text().replace("\r", "\n").splitlines()
                    if "points (" in line or "images/s" in line and "of" not in line.split()[:2]]
            print(f"    it said: {' | '.join(said[-2:])[:400]}")
        embed_s, audit_s = min(s for s, _ in runs["embed"]), min(s for s, _ in runs["audit"])
        embed_gb, audit_gb = max(m for _, m in runs["embed"]), max(m for _, m in runs["audit"])
        print(f"ratio audit+t-SNE / embed (best times): {audit_s / embed_s:.3f}   target <= 1.5")
        print(f"peak RSS: audit {audit_gb:.2f} GB (target <= 2 GB), embed {embed_gb:.2f} GB")
    if args.responsive:
        responsiveness(folder, args.model, args.size, args.responsive, args.reruns)


if __name__ == "__main__":
    main()
