"""Errors raised by core on purpose. Their messages are written for people and shown as they are."""

from collections.abc import Iterable
from difflib import get_close_matches


class CoreError(Exception):
    """Base class for every error core raises on purpose. Catch it once, at the edge of the app."""


class UnknownModelError(CoreError, LookupError):
    """A backbone name that is not in the registry."""


class UnknownMethodError(CoreError, LookupError):
    """A CAM method name that is not in cams.METHODS."""


class LayerNotFoundError(CoreError, LookupError):
    """A dotted layer path that does not exist in the model, or cannot be explained."""


class InvalidInputError(CoreError, ValueError):
    """A value of the right type that cannot be used: unreadable image, class index out of range..."""


class WeightsUnavailableError(CoreError, RuntimeError):
    """Pretrained weights are not on this machine and could not be downloaded."""


class DeviceError(CoreError, RuntimeError):
    """The chosen device cannot run the work (no CUDA, out of GPU memory)."""


class Cancelled(CoreError):
    """Work stopped on request (a Stop button) before it finished; nothing partial was kept."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest known name, or '' if nothing is close."""
    matches = get_close_matches(str(name), list(known), n=1)
    return f" Did you mean '{matches[0]}'?" if matches else ""
