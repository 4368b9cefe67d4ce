"""The ``Format`` protocol: what a declaration's channels carry, in one object per declaration.

A declaration decides which channels see a row and what they see of it (``Publication``: one
event for one channel, with the channel's view); its format decides what is published for it
(``messages``: the ``data`` of each envelope), what ``manage.py instant_types`` declares for it
(``typescript``), which Centrifugo namespace options its channels need (``namespace_options``)
and how the admin describes it (``describe``). ``delivery.commands`` wraps each message in the
one envelope (``envelope.model_envelope``), so a format never builds, encodes or size-checks
one.

Adding a format is a class implementing this protocol (subclass it: the defaults below are the
JSON events' answers) and one line, ``formats.register(MyFormat())``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple, Protocol, Sequence

from .request_ids import current_request_id, request_tag

if TYPE_CHECKING:
    from django.db import models

    from ..options import BroadcastOptions

__all__ = ["Batch", "Changed", "Format", "Message", "Publication", "TypeNames"]


class Publication(NamedTuple):
    """One event for one channel, as the declaration sees it (its format decides what is sent)."""

    channel: str
    event: str
    fields: dict[str, Any] | None  # None: pk only (a row that left the channel)
    changed: dict[str, Any] | None = None


class Message(NamedTuple):
    """What a format publishes into one channel: the envelope's ``data`` and its ``event_class``.

    ``event_id`` is the envelope's ``id`` (Centrifugo's idempotency key): one per event, shared
    by the channels it goes to."""

    channel: str
    event: str
    data: dict[str, Any]
    event_id: str


class Changed(Protocol):
    """What a format reads of a change (``declarations.Change`` is one)."""

    @property
    def label(self) -> str: ...  # the model's label, "board.task"

    @property
    def pk(self) -> Any: ...  # JSON-safe

    @property
    def version(self) -> int: ...  # per row, increasing

    @property
    def before_view(self) -> dict[str, Any] | None: ...  # the view before, when it was visible


class Batch:
    """What the formats share over one batch of changes (a transaction's, after commit): the
    request tag, read once when a format asks for it, and a scratch dict per format (templates
    looked up once, channels already refreshed)."""

    __slots__ = ("_tag", "_tag_read", "scratch")

    def __init__(self) -> None:
        self._tag: str | None = None
        self._tag_read = False
        self.scratch: dict[str, Any] = {}

    @property
    def request_tag(self) -> str | None:
        """The ``request_tag`` of the request committing these changes (None: no request id)."""
        if not self._tag_read:
            self._tag, self._tag_read = request_tag(current_request_id()), True
        return self._tag


@dataclass(frozen=True)
class TypeNames:
    """What the type generator knows of one view of a model, for ``Format.typescript``."""

    label: str  # "board.task"
    label_type: str  # the label as a TypeScript string literal type: '"board.task"'
    pk_type: str  # the primary key's TypeScript type
    fields_name: str  # the name to give the view's fields type: "BoardTaskFields"
    fields_type: str  # the view's fields as a TypeScript type ("{ ... }" or "Record<...>")
    events: frozenset[str]  # the declared events
    shown: str  # the channels showing the view, for comments


class Format(Protocol):
    """An output format. One instance is registered (``formats.register``); ``configure`` makes
    the one a declaration carries (``Declaration.format``)."""

    #: The registry's key and the value of ``@broadcast(format=...)``.
    name: str
    #: What its channels carry, in messages: "JSON events", "HTML fragments".
    carries: str = ""
    #: The options that choose it without ``format=`` ("template= or render="); "" for none.
    chosen_by: str = ""
    #: The ``@broadcast`` options it reads; a declaration of another format refuses them.
    options: tuple[str, ...] = ()
    #: The default of ``skip_unchanged``: True when an unchanged view publishes the same thing.
    skip_unchanged: bool = False
    #: Whether saves through a migration's historical model can be published (False when
    #: publishing runs the project's code: templates, render callables).
    historical_models: bool = True
    #: Centrifugo namespace options the channels of this format need (``installws`` writes them
    #: into the config, ``manage.py check`` compares them with it).
    namespace_options: Mapping[str, Any] = MappingProxyType({})
    #: Whether each distinct view of a model gets its own TypeScript type (its fields are in the
    #: events), or one type serves every declaration of the model in this format.
    types_per_view: bool = False
    #: TypeScript declarations written once at the top of ``instant_types``' output.
    typescript_prelude: str = ""

    def claims(self, options: BroadcastOptions) -> bool:
        """Whether ``options`` ask for this format without ``format=``."""
        return False

    def configure(self, model: type[models.Model], options: BroadcastOptions,
                  view_keys: tuple[str, ...] | None) -> Format:
        """The format of one declaration, validated from its ``options`` (``ValueError``: the
        message ``declare()`` reports). ``view_keys``: the keys of the declaration's view (None
        with a serializer)."""
        return self

    def messages(self, change: Changed, publications: Sequence[Publication],
                 batch: Batch) -> Iterable[Message]:
        """What is published for ``change``, given the declaration's publications."""
        ...

    def typescript(self, names: TypeNames) -> tuple[list[str], list[str]]:
        """(declarations written before the model's event union, the union's members)."""
        return [], []

    def describe(self) -> str:
        """What its channels carry, for people (the admin's declarations page)."""
        return self.carries
