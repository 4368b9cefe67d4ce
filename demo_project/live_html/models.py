"""The server-rendered side of the demo: HTML fragments and page refreshes over Centrifugo.

- ``Card``: a public board. Its fragment (``live_html/_card.html``) goes to ``cards`` as Turbo
  Stream actions / htmx swaps (the /html/turbo/ and /html/htmx/ pages), and a refresh signal goes
  to ``cards_refresh`` (the /html/refresh/... pages re-render themselves).
- ``Memo``: private. Its fragment goes to ``$memos:{owner_id}``, which only the owner may read;
  the fragment is rendered from ``fields=["id", "text"]`` only, never with a request or user.
"""

from django.conf import settings
from django.db import models

from instant_signals import broadcast


@broadcast(channels=["cards"], fields=["id", "title", "votes"], template="live_html/_card.html")
@broadcast(channels=["cards_refresh"], fields=["id", "title", "votes"], refresh=True)
class Card(models.Model):
    title = models.CharField(max_length=200)
    votes = models.IntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.title


@broadcast(channels=["$memos:{owner_id}"], fields=["id", "text"], authorize="owner",
           template="live_html/_memo.html")
class Memo(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="memos")
    text = models.CharField(max_length=200)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.text
