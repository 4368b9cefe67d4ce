"""The Django admin: ``Channel`` rows, and what an operator looks at when delivery goes wrong.

* ``Channel`` rows (``channels``), with a read-only page of the ``@broadcast`` declarations;
* outbox rows (``outbox``): pending rows and dead letters, read-only except two actions on dead
  letters, retry and drop;
* the delivery page (``pages``): the backlog of every source in ``backlog.SOURCES`` per
  partition, and this process's counters and recent failures.
"""

from django.contrib import admin

from ..models import Channel, OutboxEntry
from .channels import ChannelAdmin
from .outbox import OutboxEntryAdmin

__all__ = ["ChannelAdmin", "OutboxEntryAdmin"]

admin.site.register(Channel, ChannelAdmin)
admin.site.register(OutboxEntry, OutboxEntryAdmin)
