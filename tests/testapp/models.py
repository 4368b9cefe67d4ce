"""Models of the test project, declared the ways users declare theirs."""

import uuid

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models
from model_utils import FieldTracker

from instant_signals import broadcast
from instant_signals.bulk import BroadcastManager


def owner_may_read(user, owner_id):
    return str(user.pk) == owner_id


def staff_may_read(user, board):
    return user.is_staff


# Full data on the task's own channel (owner only) and the owner's feed; a redacted view in public.
@broadcast(channels=["$task:{pk}"], fields=["id", "title", "done", "owner"], authorize="owner")
@broadcast(channels=["$user:{owner_id}"], fields=["id", "title", "done", "owner"],
           authorize="owner")
@broadcast(channels=["tasks"], fields=["id", "title", "done"])
class Task(models.Model):
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.CASCADE)
    notes = models.TextField(blank=True)

    tracker = FieldTracker()
    objects = BroadcastManager()


@broadcast(channels=["notes"], fields=["id", "title", "done"])
class Note(models.Model):
    """Like Task but without a FieldTracker: the app keeps its own snapshot."""

    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)

    objects = BroadcastManager()


@broadcast(channels=["items"], fields="__all__")
@broadcast(channels=["$board:{board}"], fields="__all__", authorize=staff_may_read)
class Item(models.Model):
    """Every kind of value the serializer must make JSON-safe, and fields that must stay secret."""

    uid = models.UUIDField(default=uuid.uuid4)
    board = models.CharField(max_length=50, default="main")
    when = models.DateTimeField(null=True)
    day = models.DateField(null=True)
    price = models.DecimalField(max_digits=8, decimal_places=2, null=True)
    extra = models.JSONField(default=dict)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    api_key = models.CharField(max_length=50, blank=True)
    password = models.CharField(max_length=128, blank=True)
    reset_token = models.CharField(max_length=50, blank=True)


class Member(AbstractBaseUser):
    """A custom user model with no is_staff, is_superuser or groups."""

    email = models.EmailField(unique=True)
    USERNAME_FIELD = "email"


class Plain(models.Model):
    """Never registered by a decorator: the registry tests register it at run time."""

    name = models.CharField(max_length=50)
    code = models.IntegerField(default=0)
    secret = models.CharField(max_length=50, blank=True)


class Doc(models.Model):
    """Never registered by a decorator: the security property tests declare it at run time in
    generated ways. ``pin`` looks secret; ``slug`` is unique; (status, title) unique together."""

    title = models.CharField(max_length=50)
    body = models.TextField(blank=True)
    status = models.CharField(max_length=10, default="a")
    score = models.IntegerField(default=0)
    published = models.BooleanField(default=False)
    pin = models.CharField(max_length=10, blank=True)
    slug = models.CharField(max_length=50, unique=True, null=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                              related_name="docs")

    class Meta:
        unique_together = [("status", "title")]


# -- write paths (tests/test_write_paths.py): expressions, proxies, multi-table inheritance,
# -- loaddata, data migrations, on_delete=SET_NULL / SET_DEFAULT / SET(...). Registered by that
# -- test file (so other tests' channel lists stay as they are); proxies and children are
# -- defined before their parents are registered, as with INSTANT_SIGNALS["MODELS"].

class Counter(models.Model):
    title = models.CharField(max_length=50)
    count = models.IntegerField(default=0)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="counters")

    objects = BroadcastManager()


class QuietCounter(Counter):
    """A proxy without declarations of its own: writes publish Counter's."""

    class Meta:
        proxy = True


class LoudCounter(Counter):
    """A proxy with a declaration of its own (channel "loud"), besides Counter's."""

    class Meta:
        proxy = True


class Place(models.Model):
    name = models.CharField(max_length=50)

    objects = BroadcastManager()


class Restaurant(Place):
    """A multi-table child with a declaration of its own."""

    pizza = models.BooleanField(default=False)


class Bar(Place):
    """A multi-table child without declarations: its rows publish Place's."""

    beers = models.IntegerField(default=0)


class Shelf(models.Model):
    """Not registered: deleting one updates the books that refer to it."""

    name = models.CharField(max_length=50)


DEFAULT_SHELF, LOST_AND_FOUND = 1001, 1000  # rows the tests create, on either database


class Book(models.Model):
    title = models.CharField(max_length=50)
    shelf = models.ForeignKey(Shelf, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="books")
    spare = models.ForeignKey(Shelf, null=True, blank=True, default=DEFAULT_SHELF,
                              on_delete=models.SET_DEFAULT, related_name="spare_books")
    fallback = models.ForeignKey(Shelf, null=True, blank=True, on_delete=models.SET(LOST_AND_FOUND),
                                 related_name="fallback_books")

    objects = BroadcastManager()


# -- readers declared by relation (tests/test_readers.py) -----------------------------------------

class Project(models.Model):
    """A project whose members read its tasks (an auto-created many-to-many)."""

    name = models.CharField(max_length=50)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="projects",
                                     blank=True)


@broadcast(channels=["$project:{project_id}"], readers="project__members",
           fields=["id", "title", "done", "project"], presence=True)
@broadcast(channels=["$ptask:{pk}"], readers="project__members", fields=["id", "title"])
class ProjectTask(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)


class Team(models.Model):
    """A team whose membership rows (with a role) say who reads its notes."""

    name = models.CharField(max_length=50)


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="memberships")
    role = models.CharField(max_length=20, default="member")


@broadcast(channels=["$team:{team_id}"], readers="team__memberships__user",
           fields=["id", "text", "team"])
class TeamNote(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="notes")
    text = models.CharField(max_length=200)
