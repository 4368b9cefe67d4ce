"""The admin's two read-only pages: delivery (backlog, counters, failures) and declarations.

Permissions (the admin's own login and ``is_staff`` come first):

* delivery: ``view`` (or ``change``) permission on the model of at least one source of
  ``backlog.SOURCES``; a source is shown only to those who may view its model;
* declarations: ``view`` (or ``change``) permission on ``Channel``: the declarations are the
  code's counterpart of ``Channel`` rows (who may read which channel), so whoever may see those
  rows sees them too; superusers have every permission.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, models
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _

from .. import backlog, conf, reporting
from ..registry import broadcast_registry
from .declared import describe_all


def may_view(user: Any, model: type[models.Model]) -> bool:
    meta = model._meta
    return bool(user.has_perm(f"{meta.app_label}.view_{meta.model_name}") or
                user.has_perm(f"{meta.app_label}.change_{meta.model_name}"))


def rows_url(model_admin: Any, model: type[models.Model]) -> str | None:
    """The admin list of ``model``'s rows, if the site registers it."""
    meta = model._meta
    try:
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist",
                       current_app=model_admin.admin_site.name)
    except NoReverseMatch:
        return None


def measured(model_admin: Any, source: backlog.BacklogSource, now: datetime,
             max_age: int) -> dict[str, Any]:
    """What the page shows of one source."""
    section: dict[str, Any] = {"label": source.label,
                               "rows_url": rows_url(model_admin, source.model)}
    try:
        found = source.measure()
    except DatabaseError as exc:  # e.g. its migration is not applied yet
        section["error"] = str(exc)
        return section
    late = now - timedelta(seconds=max_age)
    section.update(
        backlog=found, late=found.oldest is not None and found.oldest < late,
        partitions=[{"p": p, "late": p.oldest is not None and p.oldest < late}
                    for p in found.partitions])
    return section


def delivery(model_admin: Any, request: Any, *, now: datetime) -> TemplateResponse:
    """The backlog of every source the user may view, and this process's counters."""
    sources = [s for s in backlog.SOURCES if may_view(request.user, s.model)]
    if not sources:
        raise PermissionDenied
    max_age = int(conf.app_setting("OUTBOX_MAX_AGE"))
    since = datetime.fromtimestamp(reporting.stats.since, tz=dt_timezone.utc)
    failures = [{"at": datetime.fromtimestamp(f.at, tz=dt_timezone.utc), "count": f.publications,
                 "channels": ", ".join(f.channels), "error": f.error}
                for f in reporting.recent_failures()]
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Delivery"), "opts": model_admin.opts,
        "mode": conf.app_setting("DELIVERY"), "max_age": max_age, "now": now,
        "sections": [measured(model_admin, s, now, max_age) for s in sources],
        "counters": reporting.stats.snapshot(), "pid": os.getpid(), "since": since,
        "failures": failures,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/instant_signals/delivery.html", context)


def declarations(model_admin: Any, request: Any) -> TemplateResponse:
    """Every ``@broadcast`` declaration: model, channels and readers, fields, format."""
    if not may_view(request.user, model_admin.model):
        raise PermissionDenied
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Declarations"), "opts": model_admin.opts,
        "rows": describe_all(broadcast_registry.declarations()),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/instant_signals/declarations.html", context)
