"""All methods page: faithfulness scoring waits in the heavy-work queue, Stop ends it, and it can start again."""

import threading
import time
from pathlib import Path

from streamlit import config
from streamlit.testing.v1 import AppTest

from core.errors import Cancelled
from tests.test_dashboard import _table
from tests.test_dashboard_queue import _Job

config.set_option("client.showErrorDetails", "full")
APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "streamlit_app.py")


def _settle(at: AppTest, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while "methods_watched" in at.session_state:  # as the page's polling fragment does in a browser
        assert time.monotonic() < deadline, "scoring did not finish"
        at.session_state["methods_watched"].wait(timeout=1)
        at.run()


def test_scoring_queues_behind_heavy_work_and_stop_ends_it(gate):
    release = threading.Event()
    holder = _Job(release)  # another session's heavy work holds the only slot
    try:
        assert holder.working.wait(30)
        at = AppTest.from_file(APP, default_timeout=240)
        at.run()
        at.switch_page("app_pages/methods.py").run()
        at.multiselect(key="methods_chosen").set_value(["gradcam"]).run()
        at.toggle(key="methods_score").set_value(True).run()
        assert not at.exception, at.exception
        job = at.session_state["methods_watched"]
        assert job.state == "queued" and any("Queued" in i.value for i in at.info)
        at.button(key="methods_score_stop").click().run()
        assert job.wait(30) and isinstance(job.error, Cancelled) and not job.ran
        at.run()
        assert any("stopped while queued" in i.value for i in at.info)
        assert "methods_watched" not in at.session_state
        captions = [c for img in at.get("image") for c in img.captions]
        assert captions and not any("faithfulness" in c for c in captions)  # the grid shows, unscored
    finally:
        release.set()
    at.button(key="methods_score_again").click().run()
    _settle(at)
    assert not at.exception, at.exception
    (caption,) = [c for img in at.get("image") for c in img.captions]
    assert "faithfulness +" in caption
    assert len(_table(at, "faithfulness ↑")) == 4  # Grad-CAM and the three baselines
