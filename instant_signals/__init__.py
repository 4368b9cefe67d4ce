"""Live Django model changes in the browser, through Centrifugo."""

from .client import CentrifugoError
from .publishing import apublish, publish
from .registry import BroadcastRegistry, broadcast, disable_broadcasts, registry

__all__ = [
    "BroadcastRegistry",
    "CentrifugoError",
    "apublish",
    "broadcast",
    "disable_broadcasts",
    "publish",
    "registry",
]

__version__ = "0.1.0"
