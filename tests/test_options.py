"""The one list of ``@broadcast`` options (``instant_signals.options``) and what reads it: the
docs' table and definitions, ``declare()`` and the output formats, and the errors for names that are not options."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from instant_signals import declarations, formats, options
from instant_signals.options import BroadcastOptions

DOC = Path(__file__).resolve().parent.parent / "docs" / "reference" / "broadcast.md"


def test_the_docs_table_is_the_options_type():
    text = DOC.read_text()
    found = re.search(r"<!-- options-table[^>]*-->\n(.*?)<!-- /options-table -->", text, re.S)
    assert found, "docs/reference/broadcast.md lost its options-table markers"
    assert found.group(1).strip() == options.markdown_table().strip(), (
        "the table differs from instant_signals.options: paste options.markdown_table()")


def test_every_option_is_described_once_under_its_section():
    """Each option has one definition (a term line then ``:   ...``) under the heading its
    metadata names, and nothing else is described as an option."""
    described: dict[str, str] = {}
    section = ""
    lines = DOC.read_text().splitlines()
    for line, following in zip(lines, lines[1:] + [""]):
        if line.startswith("## "):
            section = line[3:].removesuffix(": one of")
        term = re.match(r"`(\w+)`", line)
        if term and following.startswith(":   "):
            assert term.group(1) not in described, f"{term.group(1)} described twice"
            described[term.group(1)] = section
    assert described == {name: options.option_of(name).section for name in options.NAMES}


def options_read_by(code) -> set[str]:
    tree = ast.parse(inspect.getsource(code))
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "options"}


def test_declare_and_the_formats_read_every_option():
    """An option field that neither ``declare`` nor an output format reads would be accepted and
    silently ignored; a format reads the options it says are its own (``Format.options``)."""
    read = options_read_by(declarations.declare) | options_read_by(formats.choose)
    for output in formats.FORMATS.values():
        own = options_read_by(type(output))
        assert set(output.options) <= own, f"{output.name} does not read all of its options"
        read |= own
    assert read == set(options.NAMES)


def test_options_are_frozen_and_keyword_only():
    given = BroadcastOptions(channels=["x"], fields=["name"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        given.fields = ["other"]  # type: ignore[misc]
    with pytest.raises(TypeError):
        BroadcastOptions(["x"])  # type: ignore[misc]
    assert options.REQUIRED == ("channels",)


@pytest.mark.parametrize("given, message", [
    ({"channels": ["x"], "colour": "red"},
     "unknown option 'colour'; the options are: channels, fields, exclude, serializer"),
    ({"channels": ["x"], "b": 1, "a": 2}, "unknown options 'a', 'b'; the options are: channels"),
    ({"fields": ["x"]}, "channels is required; the options are: channels"),
    # names that are keyword arguments of declare() but not options
    ({"channels": ["x"], "source": "settings"}, "unknown option 'source'"),
    ({"channels": ["x"], "model": "x"}, "unknown option 'model'"),
])
def test_names_that_are_not_options_are_refused_with_the_valid_ones(given, message):
    with pytest.raises(ImproperlyConfigured, match=f"^{re.escape(message)}"):
        options.parse(given)


def test_settings_import_errors_propagate_to_the_caller():
    with pytest.raises(ImportError):
        options.parse({"channels": ["x"], "condition": "no.such.function"}, from_settings=True)
