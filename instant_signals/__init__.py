"""Live Django model changes in the browser, through Centrifugo."""

from .client import CentrifugoError
from .publishing import apublish, publish
from .registry import BroadcastRegistry, broadcast, disable_broadcasts
from .registry import registry as broadcast_registry

__all__ = [
    "BroadcastRegistry",
    "CentrifugoError",
    "apublish",
    "broadcast",
    "broadcast_registry",
    "disable_broadcasts",
    "publish",
]

__version__ = "0.1.0"
