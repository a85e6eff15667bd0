"""`download NAME [NAME ...]`: fetch pretrained weights into the caches the models load from, with a progress bar
on stderr and a summary of sizes and places, so that a class can run offline later."""

import sys
import time
from dataclasses import dataclass

from core import downloads, records
from core.errors import WeightsUnavailableError

WIDTH = 30


@dataclass(frozen=True)
class Failed:
    name: str
    error: str


@dataclass(frozen=True)
class DownloadOutput:
    """`download --json`."""

    downloaded: tuple[downloads.Downloaded, ...]
    failed: tuple[Failed, ...]


class ProgressBar:
    """One line on stderr, redrawn at most ten times a second: name, bar, bytes done of the total."""

    def __init__(self, count: int) -> None:
        self.count, self.index, self.last = count, 0, 0.0

    def start(self, index: int) -> None:
        self.index, self.last = index, 0.0

    def __call__(self, name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if now - self.last < 0.1 and not finished:
            return
        self.last = now
        if total:
            filled = min(WIDTH, WIDTH * done // total)
            bar = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {downloads.size_text(done)} / {downloads.size_text(total)}"
        else:
            bar = downloads.size_text(done)
        sys.stderr.write(f"\r[{self.index}/{self.count}] {name} {bar}   " + ("\n" if finished else ""))
        sys.stderr.flush()


def run_download(args) -> None:
    names = list(dict.fromkeys(args.names))
    for name in names:
        downloads.source(name)  # every name resolves before anything is fetched
    bar, done, failed = ProgressBar(len(names)), [], []
    for index, name in enumerate(names, 1):
        bar.start(index)
        try:
            done.append(downloads.download(name, on_progress=bar))
        except WeightsUnavailableError as error:
            sys.stderr.write("\n")
            failed.append((name, " ".join(str(error).split())))
            if len(failed) == 1 and not done and "offline" in str(error):
                break  # offline: the other names would fail the same way
    if args.json:
        print(records.to_json(DownloadOutput(tuple(done), tuple(Failed(n, e) for n, e in failed))))
    else:
        for item in done:
            state = "already here" if item.already_here else "downloaded"
            print(f"{item.name:32s} {downloads.size_text(item.bytes):>9s}  {state:12s}  {item.path}")
        total = sum(item.bytes for item in done if not item.already_here)
        print(f"{len(done)} of {len(names)} ready ({downloads.size_text(total)} downloaded).")
    if failed:
        skipped = [n for n in names if n not in {d.name for d in done} | {f[0] for f in failed}]
        for name, error in failed:
            sys.stderr.write(f"error: {name}: {error}\n")
        if skipped:
            sys.stderr.write(f"error: not tried (offline): {', '.join(skipped)}\n")
        raise SystemExit(2)
