// TypeScript declarations of instant.js, the instant_signals browser module (they follow its
// JSDoc). The model payloads of a project come from `python manage.py instant_types`, e.g.
//
//   import { Instant } from "instant_signals/instant.js";
//   import type { BoardTaskEvent } from "./instant-events";
//   const instant = new Instant();
//   const tasks = instant.collection<BoardTaskEvent>("$user:{user}");
//   tasks.onChange(() => tasks.rows.forEach((row) => console.log(row.fields.title)));
//   instant.on<BoardTaskEvent>("board.task", "*", (data) => {
//     if (data.event === "updated") console.log(data.changed.title);
//   });

import type { Centrifuge } from "centrifuge";

export type EventName = "created" | "updated" | "deleted";

export type Pk = string | number;

/** What every model event has (`envelope.data`); the generated types refine it per model. */
export interface ModelEventBase {
  model: string;
  pk: Pk;
  event: string;
  version?: number;
}

/** A model event with untyped fields (the default when no generated type is given). */
export interface ModelEvent extends ModelEventBase {
  event: EventName;
  version: number;
  fields?: Record<string, unknown>;
  changed?: Record<string, unknown>;
}

/** A publication of instant_signals: a model event (`data`) or a publish() call. */
export interface Envelope<D = unknown> {
  channel: string;
  site?: string;
  message?: string;
  event_class?: string;
  bucket?: string;
  data?: D;
  /** Model events: one id per event, shared by the channels it was sent to. */
  id?: string;
}

/** A row of a collection. */
export interface Row<L extends string = string, P = Pk, F = Record<string, unknown>> {
  model: L;
  pk: P;
  fields: F;
}

/** The row type of a collection holding events `E` (the fields of its created/updated events). */
export type RowOf<E> = E extends { event: "deleted" }
  ? never
  : E extends { model: infer L; pk: infer P; fields: infer F }
    ? Row<L & string, P, F>
    : E extends ModelEventBase
      ? Row<E["model"], E["pk"], Record<string, unknown>>
      : never;

export type CollectionState = "idle" | "loading" | "live" | "denied" | "error";
export type PresenceState = "idle" | "loading" | "live" | "denied" | "error";

/** What changed in a collection: "reset" after a (re)load, "insert" / "update" / "remove" for an
 * applied event, "clear" when access was lost or the user changed. */
export interface CollectionChange<E extends ModelEventBase = ModelEvent> {
  type: "reset" | "insert" | "update" | "remove" | "clear";
  rows?: RowOf<E>[];
  row?: RowOf<E>;
  previous?: RowOf<E>;
  data?: E;
  envelope?: Envelope<E>;
}

export interface CollectionOptions<E extends ModelEventBase = ModelEvent> {
  /** Only rows and events of this model label. */
  model?: E["model"];
  /** A field name ("title", "-created", "pk") or a comparator of rows; default: the server's
   * order, new rows at the end. */
  order?: string | ((a: RowOf<E>, b: RowOf<E>) => number);
}

export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** A live list of the rows of one declared channel. Guarantee: every event committed after the
 * load is applied exactly once; stale (older version) and repeated (same id) events are
 * ignored; missed ones are recovered after a disconnect. Limit: the channel's history
 * (installws: 300 publications, 300 s); past it the rows are loaded again ("reset"). */
export declare class Collection<E extends ModelEventBase = ModelEvent> {
  readonly instant: Instant;
  readonly template: string;
  readonly model: string | null;
  /** The channel now ("{user}" filled in); null when there is none (anonymous visitor). */
  readonly channel: string | null;
  readonly state: CollectionState;
  readonly error: Error | null;
  readonly position: StreamPosition | null;
  readonly stats: { loads: number; applied: number; stale: number; repeated: number };
  readonly rows: RowOf<E>[];
  readonly size: number;
  get(pk: Pk, model?: string): RowOf<E> | undefined;
  onChange(callback: (change: CollectionChange<E>, collection: Collection<E>) => void): () => boolean;
  ready(timeout?: number): Promise<Collection<E>>;
  close(): void;
}

/** A user reading a channel, once however many tabs and connections. */
export interface PresenceUser<I = { name: string }> {
  user: string;
  /** The connection token's `info` (INSTANT_SIGNALS["USER_INFO"]; default {name}). */
  info: I;
  connections: number;
}

/** Who reads a channel now (declared with presence=True), kept current by join/leave. */
export declare class Presence<I = { name: string }> {
  readonly instant: Instant;
  readonly template: string;
  readonly channel: string | null;
  readonly state: PresenceState;
  readonly error: Error | null;
  readonly users: PresenceUser<I>[];
  has(user: string | number): boolean;
  onChange(callback: (change: { type: "presence"; users: PresenceUser<I>[] }, presence: Presence<I>) => void): () => boolean;
  close(): void;
}

/** The connection: "connecting" (the first attempt), "connected", "reconnecting" (trying again
 * after a failure or a drop), "disconnected" (not trying: before start(), after stop(), or
 * after a disconnect no retry can fix). */
export type ConnectionState = "disconnected" | "connecting" | "connected" | "reconnecting";

/** Why the page is not connected (see the browser module reference for each). */
export type Cause =
  | "offline"
  | "endpoint_not_found"
  | "django_unreachable"
  | "not_configured"
  | "server_error"
  | "http_error"
  | "bad_answer"
  | "centrifugo_unreachable"
  | "origin_refused"
  | "token_rejected"
  | "mixed_content"
  | "bad_ws_url"
  | "server_disconnected";

/** What is wrong and what to do about it (written once to the console, until connected). */
export interface Problem {
  cause: Cause;
  reason: string;
  fix: string;
  /** "warn": may pass by itself (a restart, the network); "error": needs a fix. */
  level: "error" | "warn";
  error?: unknown;
}

/** The detail of "state" events (addListener, onState) and of the DOM event "instant:state". */
export interface StateDetail {
  state: ConnectionState;
  /** Why the page is not connected, when known; null otherwise (and when connected). */
  cause: Cause | null;
  reason: string | null;
  fix: string | null;
  error: unknown;
  /** centrifuge's context of the change ({code, reason}), if any. */
  ctx: unknown;
  instant: Instant;
}

declare global {
  interface DocumentEventMap {
    /** Dispatched on document at every state change of an Instant. */
    "instant:state": CustomEvent<StateDetail>;
  }
}

export interface InstantOptions {
  /** Where instant_signals.urls is mounted (default "/instant/"). */
  endpoint?: string;
  /** Subscribe only to these of the channels get_token/ lists (default: all). */
  channels?: string[];
  /** More channels of the logged-in user, "{user}" replaced by the user's id. */
  userChannels?: string[];
  /** Extra options for `new Centrifuge(...)`. */
  centrifuge?: Record<string, unknown>;
  /** Called at every state change, as addListener("state", ...). */
  onState?: (detail: StateDetail) => void;
  debug?: boolean;
}

export interface TokenPayload {
  csrf_token: string;
  ws_token: string;
  ws_url: string;
  channels: { name: string; level: string; token: string }[];
}

export type Handler<E> = (data: E, envelope: Envelope<E>, ctx: unknown) => void;

export declare class InstantError extends Error {
  constructor(message: string, status: number, body?: unknown);
  /** The HTTP status (0: no answer). */
  status: number;
  body: unknown;
}

export declare class Instant {
  constructor(options?: InstantOptions);
  readonly endpoint: string;
  /** The user's id ("" for an anonymous visitor). */
  readonly user: string;
  /** The connection token's `info` (e.g. {name}); null for anonymous visitors. */
  readonly info: { name: string; [key: string]: unknown } | null;
  readonly state: ConnectionState;
  /** Why the page is not connected now; null when connected (or the cause is not known yet). */
  readonly problem: Problem | null;
  readonly client: Centrifuge | null;
  readonly csrfToken: string | null;
  /** Channels refused or taken away, asked for again at the next token refresh. */
  readonly denied: Set<string>;

  /** Model events of `bucket` (a model label) and `eventClass` ("created", ... or "*"). */
  on<E extends ModelEventBase>(bucket: E["model"] | "*", eventClass: string, handler: Handler<E>): () => void;
  on(bucket: string, eventClass: string, handler: Handler<any>): () => void;
  on(bucket: string, handler: Handler<any>): () => void;

  addListener(type: "state", listener: (detail: StateDetail) => void): () => void;
  addListener(type: "user", listener: (detail: { user: string; info: Instant["info"] }) => void): () => void;
  addListener(type: "publication", listener: (envelope: Envelope<any>) => void): () => void;
  addListener(type: "subscribed" | "unsubscribed", listener: (detail: { channel: string; ctx: unknown }) => void): () => void;
  addListener(type: "denied", listener: (detail: { channel: string; error: InstantError }) => void): () => void;
  addListener(type: "error", listener: (detail: { channel?: string; error: unknown; problem?: Problem }) => void): () => void;

  /** A live list of a declared channel's rows ("{user}": the logged-in user's id). */
  collection<E extends ModelEventBase = ModelEvent>(channel: string, options?: CollectionOptions<E>): Collection<E>;
  /** Who reads `channel` now, one entry per user. */
  presence<I = { name: string }>(channel: string): Presence<I>;

  fetchTokens(): Promise<TokenPayload>;
  /** Resolves once connected; never rejects for a failure to connect (the module tries again
   * and says why: console, "state" events); stays pending meanwhile. */
  start(): Promise<Instant>;
  subscribe(name: string): unknown;
  unsubscribe(name: string): void;
  subscribedChannels(): string[];
  /** Ask get_token/ now (what every token refresh does): follow a login or logout made
   * elsewhere, subscribe newly listed channels, ask again for refused ones. */
  refresh(): Promise<Instant>;
  login(username: string, password: string): Promise<string>;
  logout(): Promise<void>;
  stop(): void;
}

export declare function connect(options?: InstantOptions): Promise<Instant>;
