"""Django signals sent by instant_signals."""

from django.dispatch import Signal

#: Sent when publications could not be delivered to Centrifugo.
#: Arguments: ``publications`` (list of the envelopes not delivered) and ``error`` (the exception).
broadcast_failed = Signal()
