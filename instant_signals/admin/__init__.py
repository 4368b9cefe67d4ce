"""The Django admin: ``Channel`` rows, and what an operator looks at when delivery goes wrong.

* ``Channel`` rows (``channels``), with a read-only page of the ``@broadcast`` declarations;
* outbox rows (``outbox``): pending rows and dead letters, read-only except two actions on dead
  letters, retry and drop;
* captured changes (``changes``, database capture): pending rows and dead letters, read-only
  except retrying dead letters;
* the delivery page (``pages``): the backlog of every source in ``backlog.SOURCES`` per
  partition, and this process's counters and recent failures.
"""

from django.contrib import admin

from ..models import ChangeEntry, Channel, OutboxEntry
from .changes import ChangeEntryAdmin
from .channels import ChannelAdmin
from .outbox import OutboxEntryAdmin

__all__ = ["ChangeEntryAdmin", "ChannelAdmin", "OutboxEntryAdmin"]

admin.site.register(Channel, ChannelAdmin)
admin.site.register(OutboxEntry, OutboxEntryAdmin)
admin.site.register(ChangeEntry, ChangeEntryAdmin)
