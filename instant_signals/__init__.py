"""Live Django model changes in the browser, through Centrifugo.

The public API, re-exported: ``broadcast`` / ``broadcast_registry`` (declare models),
``publish`` / ``apublish`` (custom events), ``presence`` / ``apresence`` (who reads a channel
now), ``disable_broadcasts`` (the kill switch), ``broadcast_failed`` (the signal for
publications that could not be delivered) and ``CentrifugoError``.
"""

from .exceptions import CentrifugoError
from .publishing import apublish, publish
from .capture.switch import disable_broadcasts
from .registry import BroadcastRegistry, broadcast, broadcast_registry
from .reporting import broadcast_failed
from .streams import apresence, presence

__all__ = [
    "BroadcastRegistry",
    "CentrifugoError",
    "apresence",
    "apublish",
    "broadcast",
    "broadcast_failed",
    "broadcast_registry",
    "disable_broadcasts",
    "presence",
    "publish",
]

__version__ = "0.1.0"
