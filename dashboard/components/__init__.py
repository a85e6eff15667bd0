"""Custom Streamlit components written in plain HTML and JavaScript: no build step, nothing fetched from outside."""

from pathlib import Path

import streamlit.components.v1 as components

_live_camera = components.declare_component("live_camera", path=str(Path(__file__).parent / "live_camera"))


def live_camera(answer: dict | None, *, key: str) -> dict | None:
    """The browser's camera, one frame in flight at a time.

    `answer` is the reply to the last frame received (shown by the component, which then sends the next one):
    {"session", "frame", "overlay" (data URI), "top" ([{"label", "prob"}]), "caption", "server_ms", "error"}.
    Returns the latest frame, {"session", "frame", "image" (base64 JPEG), "fps", "width", "height"}, or
    {"error", "message"} when the camera cannot start; None before the first frame.
    """
    return _live_camera(answer=answer, key=key, default=None)
