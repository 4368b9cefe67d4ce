"""Server-rendered pages kept live by <instant-stream> (instant_signals/stream.js).

Forms post here from both kinds of page: a Turbo page gets a 303 redirect back (Turbo renders
it); an htmx request gets the change as an out-of-band swap (``htmx_oob``) for its own tab. The
other tabs get the same fragments from Centrifugo. Every view runs under ``capture_request_id``
(a project would rather add ``instant_signals.html.RequestIdMiddleware``), so the tab that made a
change does not refresh itself.
"""

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from instant_signals.html import capture_request_id, htmx_oob, render_row

from .models import Card, Memo


def _htmx(request):
    return request.headers.get("HX-Request") == "true"


def _back(request):
    """Turbo: 303 See Other to the page the form was on."""
    url = request.headers.get("Referer") or reverse("live_html:turbo")
    if not url_has_allowed_host_and_scheme(url, {request.get_host()}):
        url = reverse("live_html:turbo")
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


def _page(request, template, **context):
    memos = request.user.memos.all() if request.user.is_authenticated else []
    return render(request, template, {
        "cards": [render_row(card) for card in Card.objects.all()],
        "memos": [render_row(memo) for memo in memos],
        **context,
    })


def index(request):
    return render(request, "live_html/index.html")


@capture_request_id
def turbo_page(request):
    return _page(request, "live_html/turbo.html")


@capture_request_id
def htmx_page(request):
    return _page(request, "live_html/htmx.html")


def _board():
    cards = list(Card.objects.all())
    return {"board": cards, "total": sum(card.votes for card in cards)}


@capture_request_id
def refresh_turbo(request):
    return render(request, "live_html/refresh_turbo.html", _board())


@capture_request_id
def refresh_htmx(request):
    return render(request, "live_html/refresh_htmx.html", _board())


@capture_request_id
def htmx_board(request):
    return render(request, "live_html/_board.html", _board())


def _after(request, oob):
    """The answer to a change: the board for the htmx refresh page, the swap for other htmx
    requests, a redirect for Turbo."""
    if request.headers.get("HX-Target") == "board":
        return render(request, "live_html/_board.html", _board())
    if _htmx(request):
        return HttpResponse(oob)
    return _back(request)


@require_POST
@capture_request_id
def card_create(request):
    title = request.POST.get("title", "").strip()[:200]
    if not title:
        return HttpResponseBadRequest("title is required")
    card = Card.objects.create(title=title)
    return _after(request, htmx_oob("append", "card_list", render_row(card, event="created")))


@require_POST
@capture_request_id
def card_vote(request, pk):
    card = get_object_or_404(Card, pk=pk)
    card.votes += 1
    card.save(update_fields=["votes"])
    return _after(request, htmx_oob("replace", f"card_{card.pk}", render_row(card)))


@require_POST
@capture_request_id
def card_delete(request, pk):
    card = get_object_or_404(Card, pk=pk)
    card.delete()
    return _after(request, htmx_oob("remove", f"card_{pk}"))


@require_POST
@capture_request_id
def vote_all(request):
    """One vote for every card, in one transaction: many fragments, one refresh signal."""
    with transaction.atomic():
        for card in Card.objects.select_for_update():
            card.votes += 1
            card.save(update_fields=["votes"])
    return _after(request, "")


@require_POST
@login_required
@capture_request_id
def memo_create(request):
    text = request.POST.get("text", "").strip()[:200]
    if not text:
        return HttpResponseBadRequest("text is required")
    memo = Memo.objects.create(owner=request.user, text=text)
    return _after(request, htmx_oob("append", "memo_list", render_row(memo, event="created")))
