"""Typed events: ``manage.py instant_types`` writes ``.d.ts`` declarations that a real TypeScript
compiler accepts in ``--strict`` mode, with handlers written against them.

TypeScript (pinned below) and the pinned ``centrifuge`` client (its types: instant.d.ts imports
them) are installed once with npm into the instant_signals cache
(``$INSTANT_SIGNALS_CACHE`` or ``~/.cache/instant_signals/typescript/``). The browser module's own
JSDoc is compiled too (``--allowJs --checkJs --strict``), so instant.js and instant.d.ts agree.
And the documented setup is compiled as a user has it: a project folder outside the checkout
with ``npm install centrifuge@5 typescript``, the package installed with pip, the tsconfig.json
of docs/how-to/browser.md as written, ``tsc -p .`` with ``skipLibCheck`` off.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import models

from instant_signals import installer
from instant_signals.declarations import declare
from instant_signals.options import BroadcastOptions
from instant_signals.management.commands.instant_types import channel_pattern, field_type, generate
from tests.conftest import need
from tests.testapp.models import Item, Plain, Task

REPO = Path(__file__).resolve().parent.parent
STATIC = REPO / "instant_signals" / "static" / "instant_signals"
TYPESCRIPT = "7.0.2"
# The version the package vendors ("centrifuge 5.8.0" on the first line of VERSION).
CENTRIFUGE = (STATIC / "vendor" / "centrifuge" / "VERSION").read_text().split()[1]
TSC_FLAGS = ["--strict", "--noEmit", "--target", "ES2022", "--module", "ESNext",
             "--moduleResolution", "bundler", "--lib", "ES2022,DOM"]

DEMO_HANDLER = """\
// A handler written for the demo, against the declarations instant_types wrote for it.
import { Instant } from "./instant.js";
import type { BoardTaskEvent, ChannelEvent, Envelope, Models, RowOf } from "./demo-events";

const instant = new Instant({ endpoint: "/instant/", channels: ["feed", "$staff"] });

// A collection typed by its channel name: rows carry the fields of that view.
const notes = instant.collection<ChannelEvent<"feed">>("feed", {
  model: "board.note",
  order: "-created",
});
notes.onChange((change) => {
  const texts: string[] = notes.rows.map((row) => row.fields.text);
  const created: string | undefined = change.row?.fields.created;
  console.log(texts, created);
});
const tasks = instant.collection<BoardTaskEvent>("$user:{user}", { model: "board.task" });
const first: RowOf<BoardTaskEvent> | undefined = tasks.rows[0];
const owner: number | undefined = tasks.get(1)?.fields.owner_id;
console.log(first?.fields.done, owner);

// A handler narrowed by the `event` discriminant.
instant.on<BoardTaskEvent>("board.task", "*", (data, envelope) => {
  switch (data.event) {
    case "created": {
      const title: string = data.fields.title;
      console.log(title);
      break;
    }
    case "updated": {
      const done: boolean = data.fields.done;
      const was: boolean | undefined = data.changed.done;
      console.log(done, was);
      break;
    }
    case "deleted": {
      const last: string | undefined = data.fields?.title; // no fields: it left the channel
      console.log(last);
      break;
    }
  }
  const version: number = data.version;
  console.log(version, envelope.id);
});

export function team(envelope: Envelope<ChannelEvent<"$team:members">>): string {
  const data = envelope.data;
  const label: "auth.user" = envelope.bucket;
  if (data.event === "deleted") return label;
  const lastLogin: string | null = data.fields.last_login; // a nullable datetime
  return `${data.fields.username} ${data.fields.is_staff} ${lastLogin ?? "never"}`;
}

export function describe(event: Models["board.note"]): string {
  switch (event.event) {
    case "created": return "new";
    case "updated": return "changed";
    case "deleted": return "gone";
    default: {
      const exhaustive: never = event;
      return exhaustive;
    }
  }
}

const online = instant.presence("$team:members");
online.onChange(() => {
  console.log(online.users.map((u) => `${u.info.name} (${u.connections} tabs)`));
});
"""

# Each line must fail on its own: a field that does not exist, a wrong type, `changed` of a
# created event, a model label that is not the event's.
DEMO_MISTAKES = """\
import { Instant } from "./instant.js";
import type { BoardNoteEvent, BoardTaskEvent } from "./demo-events";

const instant = new Instant();
instant.on<BoardTaskEvent>("board.task", "*", (data) => {
  if (data.event === "updated") console.log(data.fields.titel);
  if (data.event === "created") { const title: number = data.fields.title; console.log(title); }
  if (data.event === "created") console.log(data.changed);
});
instant.on<BoardNoteEvent>("board.task", "*", () => undefined);
"""

TESTAPP_HANDLER = """\
import type {
  AnyModelEvent, ChannelEvent, TestappItemFields, TestappTaskEvent,
} from "./testapp-events";

// What json_safe() makes of each kind of field.
export const item: TestappItemFields = {
  id: 1, uid: "7c9e6679-7425-40de-944b-e07fc1f90ae7", board: "main",
  when: "2026-01-02T03:04:05+00:00", day: null, price: "12.50", extra: { any: ["json"] },
  owner_id: null,
};
// Two views of one model: the public one has no owner.
export function owner(event: ChannelEvent<"$task:42">): number | null | undefined {
  return event.event === "deleted" ? event.fields?.owner_id : event.fields.owner_id;
}
export function title(event: ChannelEvent<"tasks">): string | undefined {
  return event.event === "deleted" ? undefined : event.fields.title;
}
export const labels: AnyModelEvent["model"][] = [
  "auth.user", "testapp.item", "testapp.note", "testapp.task",
];
export type T = TestappTaskEvent;
"""


@pytest.fixture(scope="module")
def tsc() -> Path:
    """The TypeScript compiler (and centrifuge's types), installed once into the cache."""
    need(shutil.which("npm") is not None, "npm")
    home = installer.cache_dir() / "typescript" / f"{TYPESCRIPT}-centrifuge-{CENTRIFUGE}"
    binary = home / "node_modules" / ".bin" / "tsc"
    if not binary.exists():
        partial = home.with_name(f"{home.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        result = subprocess.run(
            ["npm", "install", "--prefix", str(partial), "--no-save", "--no-audit", "--no-fund",
             "--ignore-scripts", f"typescript@{TYPESCRIPT}", f"centrifuge@{CENTRIFUGE}"],
            capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            pytest.fail(f"npm install typescript failed:\n{result.stdout}\n{result.stderr}")
        shutil.rmtree(home, ignore_errors=True)
        os.replace(partial, home)
    return binary


def project(tmp_path: Path, tsc: Path) -> Path:
    """A folder with instant.d.ts and the cached node_modules (centrifuge's types)."""
    folder = tmp_path / "ts"
    folder.mkdir()
    (folder / "node_modules").symlink_to(tsc.parent.parent)
    shutil.copy(STATIC / "instant.d.ts", folder / "instant.d.ts")
    return folder


def compile_ts(tsc: Path, folder: Path, *files: str,
               flags: tuple[str, ...] = ()) -> tuple[int, str]:
    result = subprocess.run([str(tsc), *TSC_FLAGS, *flags, *files], cwd=folder,
                            capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


def demo_types(path: Path) -> None:
    """``manage.py instant_types --output path`` of the demo, as a user would run it."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["DEMO_DATA_DIR"] = str(path.parent)  # no .centrifugo/ there: no keys needed
    result = subprocess.run([sys.executable, "demo_project/manage.py", "instant_types",
                             "--output", str(path)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Wrote the events of" in result.stderr


def test_demo_types_compile_with_a_handler_and_catch_its_mistakes(tsc, tmp_path):
    folder = project(tmp_path, tsc)
    demo_types(folder / "demo-events.d.ts")
    text = (folder / "demo-events.d.ts").read_text()
    assert ("export interface BoardTaskFields {\n  id: number;\n  title: string;\n"
            "  done: boolean;\n  owner_id: number;\n}") in text
    assert "last_login: string | null;" in text and "email" not in text
    assert 'C extends `$user:${string}` ? BoardTaskEvent :' in text

    (folder / "handler.ts").write_text(DEMO_HANDLER)
    code, output = compile_ts(tsc, folder, "handler.ts")
    assert code == 0, output

    (folder / "mistakes.ts").write_text(DEMO_MISTAKES)
    code, output = compile_ts(tsc, folder, "mistakes.ts")
    assert code != 0
    errors = re.findall(r"mistakes\.ts\((\d+),\d+\): error (TS\d+)", output)
    assert sorted({int(line) for line, _ in errors}) == [6, 7, 8, 10], output
    assert "titel" in output  # the field that does not exist is named


def test_test_app_types_follow_the_fields(tsc, tmp_path):
    folder = project(tmp_path, tsc)
    call_command("instant_types", output=folder / "testapp-events.d.ts")
    text = (folder / "testapp-events.d.ts").read_text()
    # fields="__all__" leaves secret-looking fields out of the events, and so of the types
    assert "api_key" not in text and "password" not in text and "reset_token" not in text
    assert "  price: string | null;\n  extra: unknown;\n  owner_id: number | null;\n" in text
    (folder / "handler.ts").write_text(TESTAPP_HANDLER)
    code, output = compile_ts(tsc, folder, "handler.ts")
    assert code == 0, output


def test_the_browser_module_jsdoc_compiles_strictly(tsc, tmp_path):
    folder = project(tmp_path, tsc)
    for name in ("instant.js", "diagnosis.js"):  # diagnosis.js: instant.js imports it
        shutil.copy(STATIC / name, folder / name)
    code, output = compile_ts(tsc, folder, "instant.js", flags=("--allowJs", "--checkJs"))
    assert code == 0, output


# The connection's state, as a page follows it: the DOM event, the callback, the listener.
STATE_HANDLER = """\
import { Instant } from "./instant.js";
import type { Cause, ConnectionState, StateDetail } from "./instant.js";

const badge = (state: ConnectionState, cause: Cause | null): string =>
  cause === "origin_refused" || cause === "token_rejected" ? "not allowed"
    : state === "connected" ? "live" : state;
const instant = new Instant({ onState: (detail) => console.log(badge(detail.state, detail.cause)) });
document.addEventListener("instant:state", (event) => {
  const fix: string | null = event.detail.fix;
  console.log(event.detail.reason, fix, event.detail.instant === instant);
});
instant.addListener("state", (detail: StateDetail) => console.log(detail.ctx));
const reason: string | undefined = instant.problem?.reason;
console.log(reason, instant.state === "reconnecting");
"""

STATE_MISTAKES = """\
import { Instant } from "./instant.js";

const instant = new Instant();
document.addEventListener("instant:state", (event) => console.log(event.detail.state === "online"));
console.log(instant.problem?.cause === "no_such_cause");
"""


def test_the_state_events_are_typed(tsc, tmp_path):
    folder = project(tmp_path, tsc)
    (folder / "state.ts").write_text(STATE_HANDLER)
    code, output = compile_ts(tsc, folder, "state.ts")
    assert code == 0, output
    (folder / "mistakes.ts").write_text(STATE_MISTAKES)
    code, output = compile_ts(tsc, folder, "mistakes.ts")
    errors = re.findall(r"mistakes\.ts\((\d+),\d+\): error (TS\d+)", output)
    assert sorted({int(line) for line, _ in errors}) == [4, 5], output


@pytest.mark.parametrize(("field", "expected"), [
    (models.IntegerField(), "number"),
    (models.BigAutoField(primary_key=True), "number"),
    (models.FloatField(null=True), "number | null"),
    (models.DecimalField(max_digits=5, decimal_places=2), "string"),
    (models.UUIDField(), "string"),
    (models.DateField(), "string"),
    (models.DateTimeField(null=True), "string | null"),
    (models.TimeField(), "string"),
    (models.DurationField(), "string"),
    (models.BooleanField(), "boolean"),
    (models.BooleanField(null=True), "boolean | null"),
    (models.JSONField(null=True), "unknown"),
    (models.BinaryField(), "string"),
    (models.CharField(max_length=5), "string"),
    (models.FileField(), "string"),
])
def test_field_types(field, expected):
    assert field_type(field) == expected


def test_foreign_keys_serializers_and_channel_names():
    assert field_type(Task._meta.get_field("owner")) == "number | null"  # the target's pk type
    assert field_type(Item._meta.get_field("uid")) == "string"
    serialized = declare(Plain, BroadcastOptions(channels=["plain"],
                                                 serializer=lambda instance: {}))
    text = generate((serialized,))
    assert "export type TestappPlainFields = Record<string, unknown>;" in text
    limited = declare(Plain, BroadcastOptions(channels=["$plain:{code}"], fields=["name"],
                                              events=["deleted"],
                                              authorize=lambda user, **params: True))
    text = generate((limited,))
    assert "export type TestappPlainEvent =\n  | Deleted<" in text
    assert "Created<\"testapp" not in text
    assert channel_pattern("$task:{pk}") == "`$task:${string}`"
    assert channel_pattern("$a:{x}:b:{y}") == "`$a:${string}:b:${string}`"
    assert channel_pattern('feed"') == '"feed\\""'


# -- the documented setup, as a user has it: npm's centrifuge, the package from pip ------------------

USER_HANDLER = """\
import { Instant } from "instant_signals/instant.js";
import type { BoardTaskEvent } from "./instant-events";

const instant = new Instant();
instant.on<BoardTaskEvent>("board.task", "*", (data) => {
  if (data.event === "updated") console.log(data.fields.title, data.changed.done);
});
const tasks = instant.collection<BoardTaskEvent>("$user:7", { model: "board.task" });
tasks.onChange(() => tasks.rows.forEach((row) => console.log(row.fields.done)));
instant.start();
console.log(instant.client?.state);  // centrifuge's own types, from the project's node_modules
"""


def documented_tsconfig() -> str:
    """The tsconfig.json block of docs/how-to/browser.md, as written."""
    text = (REPO / "docs" / "how-to" / "browser.md").read_text()
    found = re.search(r"```json\n(\{\n  \"compilerOptions\".*?)```", text, re.S)
    assert found, "browser.md shows no tsconfig.json"
    return found.group(1)


@pytest.fixture(scope="module")
def user_node_modules() -> Path:
    """``npm install centrifuge@5 typescript`` in a project folder, done once into the cache."""
    need(shutil.which("npm") is not None, "npm")
    home = installer.cache_dir() / "typescript" / f"user-project-centrifuge5-typescript{TYPESCRIPT}"
    if not (home / "node_modules" / ".bin" / "tsc").exists():
        partial = home.with_name(f"{home.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        (partial / "package.json").write_text('{"name": "site", "private": true}\n')
        result = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "centrifuge@5",
             f"typescript@{TYPESCRIPT}"], cwd=partial, capture_output=True, text=True,
            timeout=600)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            pytest.fail(f"npm install failed:\n{result.stdout}\n{result.stderr}")
        shutil.rmtree(home, ignore_errors=True)
        os.replace(partial, home)
    return home / "node_modules"


@pytest.fixture(scope="module")
def installed_static(tmp_path_factory) -> Path:
    """The package installed with pip (not the checkout): its static folder in site-packages."""
    target = tmp_path_factory.mktemp("site-packages")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                             "--target", str(target), str(REPO)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    static = target / "instant_signals" / "static" / "instant_signals"
    assert (static / "instant.d.ts").exists() and not static.is_relative_to(REPO)
    return static


def user_project(tmp_path: Path, node_modules: Path, static: Path, tsconfig: str) -> Path:
    folder = tmp_path / "site"
    (folder / "src").mkdir(parents=True)
    shutil.copytree(node_modules, folder / "node_modules", symlinks=True)
    (folder / "tsconfig.json").write_text(tsconfig.replace("/path/printed/above", str(static)))
    call_command("instant_types", output=folder / "src" / "instant-events.d.ts",
                 stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
    return folder


def tsc_project(folder: Path) -> tuple[int, str]:
    result = subprocess.run([str(folder / "node_modules" / ".bin" / "tsc"), "-p", "."],
                            cwd=folder, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


def test_the_documented_tsconfig_compiles_strictly_with_npm_centrifuge_and_pip_package(
        tmp_path, user_node_modules, installed_static):
    tsconfig = documented_tsconfig()
    assert "skipLibCheck" not in tsconfig  # off: the d.ts files are checked too
    folder = user_project(tmp_path, user_node_modules, installed_static, tsconfig)
    handler = USER_HANDLER.replace("BoardTaskEvent", "TestappTaskEvent").replace(
        "board.task", "testapp.task")
    (folder / "src" / "main.ts").write_text(handler)
    code, output = tsc_project(folder)
    assert code == 0, output

    # A handler that reads a field the events do not have fails, naming it.
    (folder / "src" / "main.ts").write_text(handler.replace("data.fields.title", "data.fields.titel"))
    code, output = tsc_project(folder)
    assert code != 0 and "titel" in output and "TS2307" not in output, output

    # Without the documented "centrifuge" line: the failure users hit.
    (folder / "src" / "main.ts").write_text(handler)
    (folder / "tsconfig.json").write_text(re.sub(r',\n\s*"centrifuge": \[[^\]]*\]', "",
                                                 (folder / "tsconfig.json").read_text()))
    code, output = tsc_project(folder)
    assert code != 0 and "TS2307" in output and "'centrifuge'" in output, output
