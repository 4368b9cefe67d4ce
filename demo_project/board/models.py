"""The demo's models: a public feed, private per-user tasks, and a staff channel.

- ``Note``: published into ``feed`` (no "$": every visitor sees it).
- ``Task``: published into its owner's ``$user:{owner_id}`` channel, which only the owner may
  read (``authorize="owner"``), and into ``$staff``, which staff members read (``level``).
- ``auth.User`` (not ours, so declared in settings, ``INSTANT_SIGNALS["MODELS"]``): the team
  roster in ``$team:members``, read by logged-in users, with presence (who is online).

The page lists them with ``instant.collection(...)`` (``board/static/board/board.js``).
"""

from django.conf import settings
from django.db import models

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


@broadcast(channels=["$user:{owner_id}"], fields=["id", "title", "done", "owner"],
           authorize="owner")
@broadcast(channels=["$staff"], fields=["id", "title", "done", "owner"], level="staff")
class Task(models.Model):
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="tasks")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self):
        return self.title
