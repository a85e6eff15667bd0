"""Serve the dashboard and warm it up at start-up: `python -m streamlit run dashboard/serve.py`.

Streamlit runs an app script only when a browser connects, so nothing in dashboard/streamlit_app.py can
prepare the first visit. `st.App` (Streamlit's ASGI entry point, found by `streamlit run` in this file) has
a lifespan hook that runs when the server starts: it starts dashboard/warmup.py's background thread and
returns at once, so /_stcore/health answers as soon as the server listens. The app itself is unchanged:
dashboard/streamlit_app.py, with the same pages and options (`streamlit run dashboard/streamlit_app.py`
still works, without the warm-up).
"""

import sys
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # Streamlit only adds this file's folder; dashboard is a package of ROOT
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import warmup  # noqa: E402  (light: the heavy imports happen in its thread)


@asynccontextmanager
async def lifespan(_app):
    warmup.start()
    yield


app = st.App("streamlit_app.py", lifespan=lifespan)
