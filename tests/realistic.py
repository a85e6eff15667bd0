"""The shared realistic inputs (/work/shared/realistic/make_inputs.py: 12-MP phone photos with EXIF
orientations, HEIC and AVIF copies, class-folder zips made the ways people make them), built once.

Building takes about a minute on two busy cores, so the result is kept in pytest's cache folder, keyed on
the script's content, and reused by later runs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

MAKE_INPUTS = Path("/work/shared/realistic/make_inputs.py")
ROOT = Path(__file__).resolve().parents[1]


def inputs(config: pytest.Config) -> Path:
    """The built folder (phones/, zips/), or a skip when the script is not on this machine."""
    if not MAKE_INPUTS.is_file():
        pytest.skip(f"{MAKE_INPUTS} is not on this machine")
    key = hashlib.sha256(MAKE_INPUTS.read_bytes()).hexdigest()[:16]
    out = config.cache.mkdir(f"realistic-{key}")
    if not (out / ".done").exists():
        # pillow-heif is registered through core.images, so the script also writes its .heic copies
        code = ("import runpy, sys; import core.images; sys.argv = ['make_inputs', sys.argv[1]]; "
                f"runpy.run_path({str(MAKE_INPUTS)!r}, run_name='__main__')")
        subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, check=True, timeout=600,
                       capture_output=True)
        (out / ".done").write_text(key)
    return out
