"""Live camera: the top-3 classes and a heatmap for every webcam frame, one frame in flight at a time."""

import streamlit as st

from core import cams, live
from core.errors import CoreError
from dashboard import cache, widgets
from dashboard.components import live_camera

KEY = "live_camera"  # the component's value: the latest frame from the browser
ANSWER = "live_answer"  # our reply to it, kept so that a rerun for another reason does not compute it again

st.title("Live camera")
st.caption(
    "Every frame of your camera gets the top-3 classes and a heatmap of the top class; the browser sends the next "
    "frame as soon as the answer to the previous one is back. Browsers give a camera only to pages opened over "
    "**https://** or from **localhost** / 127.0.0.1: elsewhere, use the still photo."
)

choice = widgets.model_picker()
model = cache.model(choice.name, choice.device, choice.pretrained)  # loaded before the first frame arrives
offered = live.methods(model)  # the one-pass methods that apply: a transformer adds its attention methods
if st.session_state.get("live_method") not in offered:  # a method of the previous backbone that this one lacks
    st.session_state.pop("live_method", None)
left, middle, right = st.columns(3)
method = left.selectbox("CAM method (one-pass methods only)", offered, format_func=lambda m: cams.METHODS[m].title,
                        key="live_method",
                        help="Each runs on one forward and one backward pass per frame: the Grad-CAM family down to "
                        "the target layer, and on a transformer attention rollout, gradient-weighted rollout and "
                        "LeGrad through every block's attention.")
if not cams.METHODS[method].class_specific:
    left.caption(f"{cams.METHODS[method].title} is class-agnostic: the map is the same whatever the top class.")
opacity = middle.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="live_opacity")
mode = right.radio("Camera", ["Live video", "Still photo"], horizontal=True, key="live_mode",
                   help="Still photo: one picture at a time with Streamlit's camera input, when live video is "
                   "not possible (no camera access, or a slow connection).")
if not choice.pretrained:
    st.warning("Architecture only (random weights): the predictions are meaningless.")


def _caption(result: live.LiveResult) -> str:
    title = cams.METHODS[method].title
    if not cams.METHODS[method].class_specific:
        return f"{title} (class-agnostic); top class “{result.predictions[0].label}”"
    return f"{title} for “{result.predictions[0].label}”"


def _answer(frame: dict) -> dict:
    """The reply to one frame: overlay, top-3 and timings, or the error, tagged with the frame it answers."""
    number, fps = frame.get("frame"), frame.get("fps")  # from the browser: plain values only
    reply = {"session": str(frame.get("session"))[:32], "frame": number if isinstance(number, int) else None,
             "fps": float(fps) if isinstance(fps, int | float) else None}
    try:
        result = live.analyse(model, frame.get("image"), method=method, opacity=opacity)
    except CoreError as error:
        return reply | {"error": str(error)}
    t = result.timings
    return reply | {
        "overlay": result.overlay_data_uri,
        "top": [{"label": p.label, "prob": round(p.prob, 4)} for p in result.predictions],
        "caption": _caption(result),
        "server_ms": round(t.total_ms, 1),
        "stages": {"decode": t.decode_ms, "cam": t.cam_ms, "overlay": t.overlay_ms},
    }


def _still(key: str) -> None:
    shot = st.camera_input("Take a still photo", key=key)
    if shot is None:
        return
    try:  # caught here: a fragment's rerun does not pass through the entry point's `except CoreError`
        result = live.analyse(model, shot.getvalue(), method=method, opacity=opacity)
    except CoreError as error:
        st.error(str(error))
        return
    image, labels = st.columns([3, 2])
    image.image(result.overlay_jpeg, caption=_caption(result), width="stretch")
    for p in result.predictions:
        labels.markdown(f"**{p.label}** — {p.prob:.1%}")
        labels.progress(p.prob)
    labels.caption(f"{result.timings.total_ms:.0f} ms on the server")


@st.fragment
def _live() -> None:
    """Each frame reruns only this fragment: analyse the frame that arrived, then hand the answer to the component."""
    frame = st.session_state.get(KEY)
    answer = st.session_state.get(ANSWER)
    if isinstance(frame, dict) and "image" in frame and (
        answer is None or (answer["session"], answer["frame"]) != (str(frame.get("session"))[:32], frame.get("frame"))
    ):
        answer = st.session_state[ANSWER] = _answer(frame)
    live_camera(answer, key=KEY)
    if isinstance(frame, dict) and "error" in frame:
        st.warning(f"Live video is not available ({str(frame['error'])[:40]}): take a still photo instead.")
        _still("live_still_fallback")
        return
    if isinstance(frame, dict) and frame.get("stopped"):
        count = frame.get("frames") if type(frame.get("frames")) is int else 0  # a value from the browser
        st.caption(f"Camera stopped after {count} frame{'' if count == 1 else 's'}. Press Start camera for a new run.")
        return
    fps, ms, frames = st.columns(3)
    fps.metric("Frames per second (browser)", f"{answer['fps']:.1f}" if answer and answer.get("fps") else "–")
    ms.metric("Server time per frame", f"{answer['server_ms']:.0f} ms" if answer and "server_ms" in answer else "–")
    frames.metric("Frames answered", answer["frame"] if answer else 0)
    if answer and "stages" in answer:
        s = answer["stages"]
        backward = "+ backward for" if cams.METHODS[method].uses_gradients else "(no backward) for"
        st.caption(f"Server stages: decode and shrink {s['decode']:.0f} ms · one forward pass (top-3) {backward} "
                   f"{cams.METHODS[method].title} {s['cam']:.0f} ms · overlay and JPEG {s['overlay']:.0f} ms. "
                   "Frames per second counts the answers arriving in the browser over the last 3 s.")


if mode == "Live video":
    _live()
else:
    _still("live_still")
