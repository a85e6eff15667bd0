"""VisionLens dashboard entry point: `python -m streamlit run dashboard/streamlit_app.py`."""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning OpenMP threads
os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's progress bars would fill the server log

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # Streamlit only adds the script's folder; core lives beside dashboard
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core.errors import CoreError  # noqa: E402  (light: torch is imported by the pages, after their title)

# Icons: Material Symbols, which Streamlit serves from its own static files (emoji need an emoji font, which many
# classroom Linux machines lack). Not for the favicon: the browser would fetch a ":material/...:" favicon from
# Google's font server, so it is a local file.
st.set_page_config(page_title="VisionLens", page_icon=str(ROOT / "assets" / "favicon.png"), layout="wide")

page = st.navigation([  # paths are relative to this file
    st.Page("app_pages/explain.py", title="Explain", icon=":material/local_fire_department:", default=True),
    st.Page("app_pages/methods.py", title="All methods", icon=":material/science:"),
    st.Page("app_pages/compare.py", title="Compare backbones", icon=":material/balance:"),
    st.Page("app_pages/concepts.py", title="Concepts", icon=":material/psychology:"),
    st.Page("app_pages/depth.py", title="Through depth", icon=":material/stairs:"),
    st.Page("app_pages/present.py", title="Presenter mode", icon=":material/slideshow:"),
    st.Page("app_pages/live.py", title="Live camera", icon=":material/videocam:"),
    st.Page("app_pages/learn.py", title="Learn", icon=":material/school:"),
    st.Page("app_pages/batch.py", title="Batch", icon=":material/folder_copy:"),
    st.Page("app_pages/datasets.py", title="Datasets", icon=":material/scatter_plot:"),
    st.Page("app_pages/training.py", title="Transfer learning", icon=":material/model_training:"),
    st.Page("app_pages/benchmarks.py", title="Benchmarks", icon=":material/timer:"),
    st.Page("app_pages/features.py", title="Feature maps", icon=":material/grid_view:"),
    st.Page("app_pages/architecture.py", title="Architecture", icon=":material/account_tree:"),
])

try:
    page.run()
except CoreError as error:  # core's messages are written for people
    st.error(str(error))
