"""``{% load instant_signals %}{% instant_importmap %}``: the import map for instant.js.

The same output as ``{% include "instant_signals/importmap.html" %}``; ``nonce=`` adds a CSP
nonce attribute (default: Django 6's ``csp_nonce`` context variable, when present).
"""

from typing import Any

from django import template

register = template.Library()


@register.inclusion_tag("instant_signals/importmap.html", takes_context=True)
def instant_importmap(context: template.Context, nonce: str | None = None) -> dict[str, Any]:
    """The ``<script type="importmap">`` that maps ``centrifuge`` (and Turbo/htmx) to the
    vendored files; ``nonce`` for a Content-Security-Policy."""
    return {"nonce": nonce if nonce is not None else context.get("csp_nonce", "")}
