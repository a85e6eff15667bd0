"""core.downloads against a real HTTP server on 127.0.0.1 (no internet here): a torchvision-style URL into the
torch hub folder, a Hugging Face hub layout into the hub cache, and interrupted downloads that must leave nothing
a loader would take for a good file, then succeed on a retry."""

import hashlib
import http.server
import json
import re
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from core import downloads, registry
from core.errors import WeightsUnavailableError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, body_too: bool) -> None:
        server = self.server
        server.requests.append((self.command, self.path, self.headers.get("Range")))
        data = server.files.get(self.path.split("?")[0])
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("X-Repo-Commit", COMMIT)
            self.end_headers()
            return
        if body_too and server.mode == "down":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if wanted and body_too:
            start = int(wanted.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')  # the hub's ETag of an LFS file
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not body_too:
            return
        body = data[start:]
        if server.mode == "cut":  # half the body, then the connection closes; the next GET finds the server down
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            server.mode = "down"
            return
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._send(False)

    def do_GET(self) -> None:
        self._send(True)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.mode = "ok"
        self.requests: list[tuple] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture()
def server(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    running = _Server()
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()


@pytest.fixture()
def torchvision_file(server, tmp_path, monkeypatch):
    """resnet18's weights URL pointed at the loopback server, torch.hub's folder at a tmp dir; the file's name
    carries its sha256 prefix as torchvision's do."""
    data = save_safetensors({"w": torch.arange(300_000, dtype=torch.float32)})
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    server.files[f"/models/{name}"] = data
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    spec = registry.get("resnet18")
    url = f"{server.url}/models/{name}"
    fake = registry.BackboneSpec(**{**spec.__dict__, "weights_url": url, "weights_file": registry.hub_weights_path(url)})
    monkeypatch.setitem(registry._SPECS, "resnet18", fake)
    return fake, data


def _progress():
    seen = []
    return seen, lambda name, done, total: seen.append((name, done, total))


def test_a_torchvision_url_lands_in_the_hub_folder_with_progress(torchvision_file):
    spec, data = torchvision_file
    assert spec.weights_file.parent == Path(torch.hub.get_dir()) / "checkpoints" and downloads.here("resnet18") is None
    seen, progress = _progress()
    got = downloads.download("resnet18", on_progress=progress)
    assert got.path == spec.weights_file and got.path.read_bytes() == data and not got.already_here
    assert got.bytes == len(data) and seen[-1] == ("resnet18", len(data), len(data)) and len(seen) >= 3
    assert downloads.here("resnet18") == spec.weights_file
    assert list(spec.weights_file.parent.iterdir()) == [spec.weights_file]  # no .partial left
    again = downloads.download("resnet18")
    assert again.already_here and again.path == got.path


def test_an_interrupted_url_download_keeps_nothing_and_a_retry_succeeds(server, torchvision_file):
    spec, data = torchvision_file
    server.mode = "cut"
    with pytest.raises(WeightsUnavailableError, match=r"stopped after [\d.]+ KB of [\d.]+ MB \(the connection closed early\)\. Nothing partial was kept"):
        downloads.download("resnet18")
    folder = spec.weights_file.parent
    assert not any(folder.iterdir()) and downloads.here("resnet18") is None
    server.mode = "ok"
    assert downloads.download("resnet18").path.read_bytes() == data


def test_a_file_whose_hash_is_not_its_names_is_refused(server, torchvision_file):
    spec, data = torchvision_file
    server.files[next(iter(server.files))] = data[:-4] + b"\x00\x00\x80\x7f"  # same size, other bytes
    with pytest.raises(WeightsUnavailableError, match="damaged: its sha256 starts"):
        downloads.download("resnet18")
    assert not any(spec.weights_file.parent.iterdir())
    spec.weights_file.write_bytes(b"not the weights")  # a bad file put there by hand is not 'here' either
    assert downloads.here("resnet18") is None


def test_offline_says_so_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    spec = registry.get("resnet18")
    url = "http://127.0.0.1:9/models/resnet18-f37072fd.pth"  # port 9 (discard): the connection is refused
    fake = registry.BackboneSpec(**{**spec.__dict__, "weights_url": url, "weights_file": registry.hub_weights_path(url)})
    monkeypatch.setitem(registry._SPECS, "resnet18", fake)
    with pytest.raises(WeightsUnavailableError, match=r"Cannot reach 127.0.0.1:9 .*looks offline.*"
                                                     r"python -m core download resnet18.*resnet18-f37072fd.pth"):
        downloads.download("resnet18")


@pytest.fixture()
def hub(server, tmp_path, monkeypatch):
    """The hub endpoint at the loopback server (as HF_ENDPOINT does) and its cache in a tmp dir (as HF_HOME does)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    data = save_safetensors({"w": torch.arange(200_000, dtype=torch.float32)})
    source = downloads.source("timm/vit_tiny_patch16_224")
    assert source.kind == "hub" and source.url == "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    server.files[f"/{source.url}/resolve/main/model.safetensors"] = data
    return tmp_path / "hub", data


def test_a_timm_name_lands_in_the_hub_cache_layout(hub):
    cache, data = hub
    assert downloads.here("timm/vit_tiny_patch16_224") is None
    seen, progress = _progress()
    got = downloads.download("timm/vit_tiny_patch16_224", on_progress=progress)
    repo = cache / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert got.path == repo / "snapshots" / COMMIT / "model.safetensors" and got.path.read_bytes() == data
    assert (repo / "blobs" / hashlib.sha256(data).hexdigest()).is_file() and (repo / "refs" / "main").read_text() == COMMIT
    assert seen[-1] == ("timm/vit_tiny_patch16_224", len(data), len(data))
    assert downloads.here("timm/vit_tiny_patch16_224") == got.path and downloads.download("timm/vit_tiny_patch16_224").already_here


def test_an_interrupted_hub_download_is_not_taken_for_the_file_and_a_retry_succeeds(server, hub, monkeypatch):
    import huggingface_hub.file_download as hf_download
    from huggingface_hub import try_to_load_from_cache

    monkeypatch.setattr(hf_download.time, "sleep", lambda seconds: None)  # the client's pause before it resumes
    cache, data = hub
    server.mode = "cut"
    with pytest.raises(WeightsUnavailableError):
        downloads.download("timm/vit_tiny_patch16_224")
    repo = cache / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert all(p.name.endswith(".incomplete") for p in (repo / "blobs").iterdir())  # the client's own partial, if kept
    assert not (repo / "snapshots").exists() or not any((repo / "snapshots").rglob("model.safetensors"))
    assert downloads.here("timm/vit_tiny_patch16_224") is None
    assert try_to_load_from_cache("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", "model.safetensors") is None
    server.mode = "ok"
    got = downloads.download("timm/vit_tiny_patch16_224")
    assert got.path.read_bytes() == data and [p.name for p in (repo / "blobs").iterdir()] == [got.path.resolve().name]


def test_hub_offline_says_so(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="looks offline.*python -m core download timm/vit_tiny_patch16_224"):
        downloads.download("timm/vit_tiny_patch16_224", timeout=2)


def test_names_are_resolved_before_anything_downloads():
    from core.errors import UnknownModelError

    with pytest.raises(UnknownModelError):
        downloads.download_all(["resnet18", "resnet9000"])
    with pytest.raises(UnknownModelError, match="Unknown model .timm/no_such_net."):
        downloads.source("timm/no_such_net")
    assert downloads.source("efficientnet_lite0").kind == "package"


def test_the_cli_prefetches_with_a_progress_bar_and_a_summary(torchvision_file, hub, capsys):
    from core.cli import main

    spec, data = torchvision_file
    assert main(["download", "resnet18", "timm/vit_tiny_patch16_224"]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"\[1/2\] resnet18 \[#{30}\] 1\.1 MB / 1\.1 MB", err)
    assert re.search(r"\[2/2\] timm/vit_tiny_patch16_224 \[#{30}\] 781\.\d KB / 781\.\d KB", err)
    assert re.search(rf"resnet18\s+1\.1 MB\s+downloaded\s+{re.escape(str(spec.weights_file))}", out)
    assert "2 of 2 ready (1.9 MB downloaded)." in out
    assert main(["download", "resnet18", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["downloaded"][0]["already_here"] and summary["failed"] == []


def test_the_cli_says_offline_once_and_exits_2(monkeypatch, tmp_path, capsys):
    from core.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    for name in ("resnet18", "resnet50"):
        spec = registry.get(name)
        url = f"http://127.0.0.1:9/models/{Path(spec.weights_url).name}"
        monkeypatch.setitem(registry._SPECS, name, registry.BackboneSpec(
            **{**spec.__dict__, "weights_url": url, "weights_file": registry.hub_weights_path(url)}))
    with pytest.raises(SystemExit) as stop:
        main(["download", "resnet18", "resnet50"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "error: resnet18: Cannot reach 127.0.0.1:9" in err
    assert "error: not tried (offline): resnet50" in err and not any(tmp_path.rglob("*.partial"))
