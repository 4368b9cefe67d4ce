"""Database capture (``INSTANT_SIGNALS["CAPTURE"] = "database"``): triggers record every write.

Each declared table gets triggers that insert the row's images (before and after, JSON) into
the change table (``ChangeEntry``, ``instant_signals_change``) in the writing transaction, what
ever wrote: the ORM, raw SQL, ``psql``, another program, a migration, ``loaddata``, cascades. A
rolled-back transaction or savepoint takes its change rows with it. ``manage.py relay_outbox``
turns the rows into the publications signal mode makes (``relay.ChangeSource``).

One module per job:

* ``sqlite`` / ``postgresql``: the trigger SQL of each vendor, and how to read what is installed;
* ``triggers``: keeping the installed triggers in step with the declarations (install, drop,
  drift), whichever vendor;
* ``flag``: ``disable_broadcasts()`` and ``ENABLED=False`` reach the triggers (a per-connection
  mark the trigger reads);
* ``images``: a row image back into a model instance;
* ``relay``: change rows → ``Change`` objects → outbox rows.

Which declarations the triggers capture (``captured()``): those of concrete models whose fields
all live in their own table. A proxy's own declarations (they depend on the class that wrote)
and a multi-table child's own declarations (their view spans several tables) stay with the
signal hooks; the declarations of a child's parent are captured on the parent's table, which
every write through the child touches.
"""

from __future__ import annotations

from django.db import models

from ... import conf

DATABASE = "database"
VENDORS = ("sqlite", "postgresql")


def enabled() -> bool:
    """Whether ``INSTANT_SIGNALS["CAPTURE"]`` is ``"database"``."""
    return bool(conf.app_setting("CAPTURE") == DATABASE)


def captured(model: type[models.Model]) -> bool:
    """Whether triggers capture the declarations of ``model`` (in database mode)."""
    meta = model._meta
    return not (meta.proxy or meta.parents or meta.abstract) and \
        getattr(meta.pk, "column", None) is not None
