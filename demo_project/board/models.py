"""The demo's models: a public feed, private per-user tasks, and a staff channel.

- ``Note``: published into ``feed`` (a public ``Channel`` row): every visitor sees it.
- ``Task``: published into its owner's ``$user:{owner_id}`` channel, which only the owner may
  read (the ``authorize`` rule), and into ``$staff`` (a ``Channel`` row of level staff).
"""

from django.conf import settings
from django.db import models
from model_utils import FieldTracker

from instant_signals import broadcast


@broadcast(channels=["feed"], fields=["id", "text", "author", "created"])
class Note(models.Model):
    text = models.CharField(max_length=280)
    author = models.CharField(max_length=150, default="anonymous")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return self.text


def owner_may_read(user, owner_id):
    """Who may subscribe to ``$user:<owner_id>``: that user only."""
    return str(user.pk) == owner_id


@broadcast(channels=["$user:{owner_id}"], fields=["id", "title", "done", "owner"],
           authorize=owner_may_read)
@broadcast(channels=["$staff"], fields=["id", "title", "done", "owner"])
class Task(models.Model):
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="tasks")
    created = models.DateTimeField(auto_now_add=True)

    tracker = FieldTracker()  # gives `changed` its previous values

    class Meta:
        ordering = ["created", "id"]

    def __str__(self):
        return self.title
