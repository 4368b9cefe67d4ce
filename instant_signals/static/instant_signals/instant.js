// instant_signals browser module: live Django model events through Centrifugo v6.
//
// An ES module built on the official `centrifuge` client (v5, pinned and shipped with the
// package). The page maps the bare name "centrifuge" to that client with an import map:
// {% include "instant_signals/importmap.html" %} (or {% instant_importmap %}) writes it.
// Bundlers resolve "centrifuge" from node_modules instead; instant.d.ts, next to this file,
// declares the module for TypeScript (`manage.py instant_types` writes the model payloads).
//
//   import { Instant } from "/static/instant_signals/instant.js";
//   const instant = new Instant({ endpoint: "/instant/" });
//
//   // A live list: the rows of a declared channel, loaded with the stream position and kept
//   // current from its events (insert-or-update, remove, stale and repeated events ignored).
//   const notes = instant.collection("feed", { model: "board.note", order: "-created" });
//   notes.onChange(() => render(notes.rows));           // rows: [{model, pk, fields}, ...]
//   const mine = instant.collection("$user:{user}");    // "{user}": the logged-in user's id
//
//   // Who reads a channel now (declared with presence=True), one entry per user.
//   const online = instant.presence("$team:members");
//   online.onChange(() => show(online.users));          // [{user, info: {name}, connections}]
//
//   // Plain handlers, for model events and publish() events alike.
//   instant.on("board.task", "updated", (data, envelope) => console.log(data.fields, data.changed));
//
//   await instant.start();                  // get_token/, connect, subscribe the user's channels
//   await instant.login("alice", "secret"); // JSON login/ (when the site enables it)
//   instant.subscribe("$task:42");          // one more channel (token from subscribe/)
//
// Handlers get (data, envelope, ctx): for model events data is {model, pk, event, version,
// fields, changed}; for publish() events it is the `data` given (maybe undefined) and
// envelope.message holds the message. "*" matches any bucket or event class. The same model
// event sent to several channels reaches a handler once per channel, with one envelope.id.
//
// Identity follows the session: the user is whoever get_token/ says, at start and at every
// token refresh (centrifuge refreshes each token when the server says it expires). Any logout
// of the user (the site's own pages, the admin, logout/) disconnects this tab's connection with
// code 4501 (ACCESS_CHANGED), terminal for standard SDKs: this module then asks get_token/ for
// fresh tokens and reconnects itself as whoever the session now is (anonymous after a logout:
// public channels only). A channel refused by subscribe/ (403) or taken away by the server is
// asked for again at the next token refresh, or at once with instant.refresh().

import { Centrifuge, UnauthorizedError } from "centrifuge";
import {
  badWsUrl, describe, disconnectProblem, httpProblem, mixedContent, reachable, websocketProblem,
} from "./diagnosis.js";

const ANY = "*";
const SERVER_UNSUBSCRIBE = 2000; // Centrifugo's unsubscribe code for the server API's unsubscribe
// instant_signals.access.ACCESS_CHANGED: the server ended this user's connections (a logout).
// 4500-4999 are terminal codes for applications: centrifuge does not reconnect by itself.
const ACCESS_CHANGED = 4501;
const RETRY_DELAYS = [250, 1000, 2000, 5000, 10000]; // get_token/ after ACCESS_CHANGED failed
// ms before asking again after a failure nothing but a fix can end (a 404 of get_token/, a token
// Centrifugo rejects): the page comes back by itself once it is fixed, without hammering.
const FAILURE_DELAYS = [1000, 2000, 5000, 10000, 30000];
const STATE_EVENT = "instant:state"; // the DOM event on document
const SAME_USER_RECHECK = 2000; // ms: get_token/ once more when it still named the same user
const SEEN_IDS = 10000; // event ids a collection remembers, to drop a repeated event

/**
 * @typedef {import("centrifuge").Subscription} Subscription
 * @typedef {import("centrifuge").ClientInfo} ClientInfo
 *
 * @typedef {"created" | "updated" | "deleted"} EventName
 *
 * @typedef {string | number} Pk
 *
 * A model event (the `data` of an envelope; `manage.py instant_types` types it per model).
 * `fields` is absent on a `deleted` that only says the row left the channel.
 * @typedef {object} ModelEvent
 * @property {string} model          the model label, "app_label.model_name"
 * @property {Pk} pk
 * @property {EventName} event
 * @property {number} version        per-row, increasing: an event older than the row shown is stale
 * @property {Record<string, unknown>} [fields]   the declaration's view of the row
 * @property {Record<string, unknown>} [changed]  on `updated`: previous values of changed fields
 *
 * A publication of instant_signals (model event or publish()).
 * @typedef {object} Envelope
 * @property {string} channel
 * @property {string} [site]
 * @property {string} [message]
 * @property {string} [event_class]  the event name of model events
 * @property {string} [bucket]       the model label of model events
 * @property {any} [data]
 * @property {string} [id]           model events: one id per event, shared by its channels
 *
 * @typedef {object} Row
 * @property {string} model
 * @property {Pk} pk
 * @property {Record<string, any>} fields
 *
 * What changed in a collection: "reset" after a (re)load (`rows`), "insert" / "update" /
 * "remove" for an applied event (`row`, `previous`, `data`, `envelope`), "clear" when access
 * was lost or the user changed.
 * @typedef {object} CollectionChange
 * @property {"reset" | "insert" | "update" | "remove" | "clear"} type
 * @property {Row[]} [rows]
 * @property {Row} [row]
 * @property {Row} [previous]
 * @property {ModelEvent} [data]
 * @property {Envelope} [envelope]
 *
 * @typedef {"idle" | "loading" | "live" | "denied" | "error"} CollectionState
 * @typedef {"idle" | "loading" | "live" | "denied" | "error"} PresenceState
 *
 * @typedef {object} CollectionOptions
 * @property {string} [model]   only rows and events of this model label ("board.note")
 * @property {string | ((a: Row, b: Row) => number)} [order]  a field name ("title", "-created")
 *           or a comparator of rows; default: the server's order, new rows at the end
 *
 * @typedef {object} StreamPosition
 * @property {number} offset
 * @property {string} epoch
 *
 * @typedef {object} PresenceUser
 * @property {string} user        the user's id (anonymous connections are left out)
 * @property {any} info           the connection token's `info` (default {name})
 * @property {number} connections  tabs and connections of this user in the channel
 *
 * @typedef {object} InstantOptions
 * @property {string} [endpoint="/instant/"]  where instant_signals.urls is mounted
 * @property {string[]} [channels]  subscribe only to these of the channels get_token/ lists
 *           (default: all of them)
 * @property {string[]} [userChannels]  more channels of the logged-in user, "{user}" replaced by
 *           the user's id (kept for compatibility: get_token/ lists declared per-user channels)
 * @property {Record<string, unknown>} [centrifuge]  extra options for `new Centrifuge(...)`
 * @property {(detail: StateDetail) => void} [onState]  called at every state change (as
 *           addListener("state", ...))
 * @property {boolean} [debug=false]  log to the console
 *
 * @typedef {"disconnected" | "connecting" | "connected" | "reconnecting"} ConnectionState
 * @typedef {import("./diagnosis.js").Problem} Problem
 * @typedef {import("./diagnosis.js").Cause} Cause
 *
 * The detail of "state" events (addListener, onState) and of the DOM event "instant:state".
 * @typedef {object} StateDetail
 * @property {ConnectionState} state
 * @property {Cause | null} cause   why the page is not connected, if known
 * @property {string | null} reason what happened, in a sentence
 * @property {string | null} fix    what to do about it
 * @property {unknown} error        the underlying error, if any
 * @property {unknown} ctx          centrifuge's context of the change ({code, reason}), if any
 * @property {Instant} instant
 *
 * @typedef {object} TokenPayload  the answer of get_token/ and login/
 * @property {string} csrf_token
 * @property {string} ws_token
 * @property {string} ws_url
 * @property {{name: string, level: string, token: string}[]} channels
 *
 * @typedef {(data: any, envelope: Envelope, ctx: unknown) => void} Handler
 * @typedef {(detail: any) => void} Listener
 * @typedef {Collection | Presence} Follower
 */

export class InstantError extends Error {
  /**
   * @param {string} message
   * @param {number} status  the HTTP status (0: no answer)
   * @param {unknown} [body] the JSON answer, if any
   */
  constructor(message, status, body) {
    super(message);
    this.name = "InstantError";
    this.status = status;
    this.body = body;
  }
}

/**
 * The claims of a JWT (not verified: the server does that).
 * @param {string} jwt
 * @returns {{sub?: string, info?: any}}
 */
function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const text = decodeURIComponent(
      Array.from(atob(padded), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    return JSON.parse(text) || {};
  } catch (e) {
    return {};
  }
}

/** @param {string} jwt */
const userOf = (jwt) => String(claims(jwt).sub || "");

/** @param {string} name */
const isPrivate = (name) => name.startsWith("$");

/**
 * Order of user ids as instant_signals.presence() gives them: numeric ids numerically.
 * @param {string} a
 * @param {string} b
 */
function byUserId(a, b) {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/**
 * @param {string | ((a: Row, b: Row) => number) | undefined} order
 * @returns {((a: Row, b: Row) => number) | null}
 */
function comparator(order) {
  if (!order) return null;
  if (typeof order === "function") return order;
  const descending = order.startsWith("-");
  const name = descending ? order.slice(1) : order;
  const sign = descending ? -1 : 1;
  return (a, b) => {
    const x = name === "pk" ? a.pk : a.fields[name];
    const y = name === "pk" ? b.pk : b.fields[name];
    if (x === y) return sign * (a.pk < b.pk ? -1 : a.pk > b.pk ? 1 : 0);
    if (x === null || x === undefined) return 1; // missing values last
    if (y === null || y === undefined) return -1;
    return sign * (x < y ? -1 : 1);
  };
}

/**
 * @param {string} model
 * @param {Pk} pk
 */
function key(model, pk) {
  return `${model}#${pk}`;
}

/**
 * Emits change callbacks; a throwing callback is logged, never breaks the others.
 * @template C  the change
 */
class Emitter {
  constructor() {
    /** @type {Set<(change: C, emitter: any) => void>} */
    this._callbacks = new Set();
  }

  /**
   * Call `callback(change, this)` after every change; returns a function that stops it.
   * @param {(change: C, emitter: any) => void} callback
   * @returns {() => boolean}
   */
  onChange(callback) {
    this._callbacks.add(callback);
    return () => this._callbacks.delete(callback);
  }

  /** @param {C} change */
  _changed(change) {
    for (const callback of [...this._callbacks]) {
      try {
        callback(change, this);
      } catch (e) {
        console.error(e);
      }
    }
  }
}

/**
 * A live list of the rows of one declared channel (see Instant#collection).
 *
 * Guarantee: it loads `collection/` (the stream position, then the rows) inside the
 * subscription's getState and subscribes from that position, so every event committed after
 * the load is applied exactly once, in addition to what the load showed; after a disconnect
 * the client recovers the publications it missed. Stale events (a `version` not above the one
 * of the row shown, or of its removal) and repeated ones (same envelope id) are ignored. Limit:
 * the channel's history (installws: 300 publications kept 300 s by default). Past it the
 * recovery fails and getState loads the rows again (a "reset" change).
 * @extends {Emitter<CollectionChange>}
 */
export class Collection extends Emitter {
  /**
   * @param {Instant} instant
   * @param {string} template  a channel name, "{user}" replaced by the user's id
   * @param {CollectionOptions} [options]
   */
  constructor(instant, template, options = {}) {
    super();
    this.instant = instant;
    this.template = template;
    this.model = options.model || null;
    this._compare = comparator(options.order);
    /** @type {string | null} the channel now ("{user}" filled in); null: none (anonymous) */
    this.channel = null;
    /** @type {CollectionState} */
    this.state = "idle";
    /** @type {Error | null} why the state is "denied" or "error" */
    this.error = null;
    /** @type {Map<string, Row>} */
    this._rows = new Map();
    /** @type {Row[] | null} */
    this._sorted = null;
    /** @type {Map<string, number>} newest version seen per row, removed rows included */
    this._versions = new Map();
    /** @type {Set<string>} */
    this._seen = new Set();
    /** Counters, e.g. for tests: loads (getState calls answered), applied, stale, repeated. */
    this.stats = { loads: 0, applied: 0, stale: 0, repeated: 0 };
    /** @type {StreamPosition | null} the stream position of the last load */
    this.position = null;
    /** @type {{promise: Promise<Collection>, resolve: (c: Collection) => void} | null} */
    this._live = null;
    this._fresh = true; // its rows were never loaded for this channel
  }

  /** The rows, in `order` (or the server's order, new rows at the end). @returns {Row[]} */
  get rows() {
    if (this._sorted === null) {
      this._sorted = [...this._rows.values()];
      if (this._compare) this._sorted.sort(this._compare);
    }
    return this._sorted;
  }

  /** Number of rows. */
  get size() {
    return this._rows.size;
  }

  /**
   * The row of `pk` (of `model`, by default the collection's model or any), or undefined.
   * @param {Pk} pk
   * @param {string} [model]
   * @returns {Row | undefined}
   */
  get(pk, model) {
    const label = model || this.model;
    if (label) return this._rows.get(key(label, pk));
    for (const row of this._rows.values()) if (String(row.pk) === String(pk)) return row;
    return undefined;
  }

  /**
   * Resolves once the collection is live (loaded and subscribed).
   * @param {number} [timeout]  milliseconds; then it rejects
   * @returns {Promise<Collection>}
   */
  ready(timeout) {
    if (this.state === "live") return Promise.resolve(this);
    if (!this._live) {
      /** @type {(c: Collection) => void} */
      let resolve = () => {};
      const promise = new Promise((done) => (resolve = done));
      this._live = { promise, resolve };
    }
    if (!timeout) return this._live.promise;
    return Promise.race([
      this._live.promise,
      new Promise((_, reject) => {
        const error = new InstantError(`${this.template}: not live after ${timeout} ms`, 0);
        setTimeout(() => reject(error), timeout);
      }),
    ]);
  }

  /** Stop following the channel (its subscription stays if something else uses it). */
  close() {
    this.instant._forget(this);
  }

  /**
   * @param {CollectionState} state
   * @param {Error | null} [error]
   */
  _setState(state, error = null) {
    this.state = state;
    this.error = error;
    if (state === "live" && this._live) {
      this._live.resolve(this);
      this._live = null;
    }
  }

  /**
   * The rows of a collection/ answer (called in getState, before the subscription).
   * @param {Row[]} rows
   * @param {StreamPosition} position
   */
  _reset(rows, position) {
    this.position = position;
    this._rows = new Map();
    for (const row of rows) {
      if (this.model && row.model !== this.model) continue;
      this._rows.set(key(row.model, row.pk), { model: row.model, pk: row.pk, fields: row.fields || {} });
    }
    // Versions stay: what was applied before is older than (or as old as) what was just loaded.
    this._sorted = null;
    this.stats.loads += 1;
    this._setState("loading");
    this._changed({ type: "reset", rows: this.rows });
  }

  /**
   * Empty the list (the user changed, or may no longer read the channel).
   * @param {CollectionState} state
   * @param {Error | null} [error]
   */
  _clear(state, error = null) {
    this._rows = new Map();
    this._versions = new Map();
    this._seen = new Set();
    this._sorted = null;
    this._setState(state, error);
    this._changed({ type: "clear", rows: [] });
  }

  /**
   * Apply one publication of the channel.
   * @param {Envelope} envelope
   */
  _apply(envelope) {
    /** @type {ModelEvent | undefined} */
    const data = envelope && envelope.data;
    if (!data || typeof data !== "object" || typeof data.model !== "string" || data.pk === undefined) {
      return; // not a model event (a publish() on the same channel)
    }
    if (this.model && data.model !== this.model) return;
    if (envelope.id) {
      if (this._seen.has(envelope.id)) {
        this.stats.repeated += 1;
        return;
      }
      this._seen.add(envelope.id);
      if (this._seen.size > SEEN_IDS) this._seen.delete(this._seen.values().next().value || "");
    }
    const k = key(data.model, data.pk);
    const version = typeof data.version === "number" ? data.version : null;
    const known = this._versions.get(k);
    if (version !== null && known !== undefined && version <= known) {
      this.stats.stale += 1;
      return;
    }
    if (version !== null) this._versions.set(k, version);
    const previous = this._rows.get(k);
    this.stats.applied += 1;
    if (data.event === "deleted") {
      if (!previous) return; // not shown: nothing to remove (its tombstone version is kept)
      this._rows.delete(k);
      this._sorted = null;
      this._changed({ type: "remove", previous, data, envelope });
      return;
    }
    if (!data.fields) return;
    // created or updated: insert or update (an update of a row not shown yet inserts it)
    const row = { model: data.model, pk: data.pk, fields: data.fields };
    this._rows.set(k, row);
    this._sorted = null;
    this._changed({ type: previous ? "update" : "insert", row, previous, data, envelope });
  }
}

/**
 * Who reads one channel now, one entry per user however many tabs and connections (see
 * Instant#presence). Loaded with a presence call when the subscription starts, then kept
 * current from join/leave events; anonymous connections are left out. Only the channel's
 * readers see it: Centrifugo refuses the others. A tab that closes leaves at once; a browser
 * that vanishes without closing its websocket leaves when Centrifugo misses its pong
 * (ping_interval + pong_timeout: 25 s + 8 s by default).
 * @extends {Emitter<{type: "presence", users: PresenceUser[]}>}
 */
export class Presence extends Emitter {
  /**
   * @param {Instant} instant
   * @param {string} template  a channel name, "{user}" replaced by the user's id
   */
  constructor(instant, template) {
    super();
    this.instant = instant;
    this.template = template;
    /** @type {string | null} */
    this.channel = null;
    /** @type {PresenceState} */
    this.state = "idle";
    /** @type {Error | null} */
    this.error = null;
    /** @type {Map<string, {user: string, info: any}>} by client id */
    this._clients = new Map();
    /** @type {[boolean, ClientInfo][] | null} join/leave events that came during a load */
    this._buffer = null;
    /** @type {PresenceUser[] | null} */
    this._users = null;
    this._load = 0;
    this._fresh = true;
  }

  /** The users present, ordered by id. @returns {PresenceUser[]} */
  get users() {
    if (this._users === null) {
      /** @type {Map<string, PresenceUser>} */
      const users = new Map();
      for (const { user, info } of this._clients.values()) {
        if (!user) continue;
        const found = users.get(user);
        if (found) found.connections += 1;
        else users.set(user, { user, info, connections: 1 });
      }
      this._users = [...users.values()].sort((a, b) => byUserId(a.user, b.user));
    }
    return this._users;
  }

  /**
   * Whether the user with this id is present.
   * @param {string | number} user
   */
  has(user) {
    return this.users.some((u) => u.user === String(user));
  }

  /** Stop following the channel's presence. */
  close() {
    this.instant._forget(this);
  }

  /**
   * @param {PresenceState} state
   * @param {Error | null} [error]
   */
  _setState(state, error = null) {
    this.state = state;
    this.error = error;
  }

  /**
   * The subscription is (again) subscribed: load the presence, then apply the buffered events.
   * @param {Subscription} sub
   */
  _subscribed(sub) {
    const load = ++this._load;
    this._buffer = [];
    this.state = "loading";
    sub.presence().then(
      (result) => {
        if (load !== this._load) return;
        this._clients = new Map();
        for (const [client, info] of Object.entries(result.clients || {})) {
          this._clients.set(client, { user: info.user || "", info: info.connInfo });
        }
        const buffered = this._buffer || [];
        this._buffer = null;
        for (const [join, info] of buffered) this._event(join, info, false);
        this._setState("live");
        this._update();
      },
      (error) => {
        if (load !== this._load) return;
        this._buffer = null;
        this._setState("error", error);
        this.instant._emit("error", { channel: this.channel, error });
        this._update();
      },
    );
  }

  /**
   * @param {boolean} join
   * @param {ClientInfo} info
   * @param {boolean} [notify]
   */
  _event(join, info, notify = true) {
    if (this._buffer) {
      this._buffer.push([join, info]);
      return;
    }
    if (join) this._clients.set(info.client, { user: info.user || "", info: info.connInfo });
    else this._clients.delete(info.client);
    if (notify) this._update();
  }

  /**
   * @param {PresenceState} state
   * @param {Error | null} [error]
   */
  _clear(state, error = null) {
    this._load += 1;
    this._buffer = null;
    this._clients = new Map();
    this._setState(state, error);
    this._update();
  }

  _update() {
    this._users = null;
    this._changed({ type: "presence", users: this.users });
  }
}

export class Instant {
  /** @param {InstantOptions} [options] */
  constructor(options = {}) {
    this.endpoint = (options.endpoint || "/instant/").replace(/\/?$/, "/");
    this.userChannels = options.userChannels || [];
    this.only = options.channels || null;
    this.centrifugeOptions = options.centrifuge || {};
    this.debug = !!options.debug;
    /** @type {string | null} */
    this.csrfToken = null;
    /** @type {string} the user's id ("" for an anonymous visitor) */
    this.user = "";
    /** @type {any} the connection token's `info` (e.g. {name}); null for anonymous visitors */
    this.info = null;
    /** @type {ConnectionState} */
    this.state = "disconnected";
    /** @type {Problem | null} why the page is not connected now (null when connected) */
    this.problem = null;
    /** @type {Centrifuge | null} */
    this.client = null;
    /** @type {{bucket: string, eventClass: string, handler: Handler}[]} */
    this.handlers = [];
    /** @type {Record<string, Listener[]>} */
    this.listeners = {};
    /** @type {Set<string>} channels asked for with subscribe() (kept across logins) */
    this.requested = new Set();
    /** @type {Set<string>} channels refused (403) or taken away; asked again at the next refresh */
    this.denied = new Set();
    /** @type {Map<string, string | undefined>} channels get_token/ listed, with their tokens */
    this._listed = new Map();
    /** @type {Map<string, {sub: Subscription, withState: boolean}>} */
    this._subs = new Map();
    /** @type {Set<Collection>} */
    this._collections = new Set();
    /** @type {Set<Presence>} */
    this._presences = new Set();
    this._identity = 0; // changes whenever the user changes
    this._known = false; // whether get_token/ answered once
    this._stopped = false; // stop() called: no reconnect after ACCESS_CHANGED
    this._tried = false; // connected once, or failed once: the next attempt is "reconnecting"
    /** @type {Set<Cause>} causes written to the console since the last "connected" */
    this._logged = new Set();
    this._failures = 0; // consecutive attempts that ended in a problem (for FAILURE_DELAYS)
    this._probes = 0; // the websocket failure a reachability probe answers
    /** @type {(() => void)[]} resolved at the next "connected" */
    this._waiters = [];
    this._wsUrl = ""; // the websocket URL of the client
    if (options.onState) this.addListener("state", /** @type {Listener} */ (options.onState));
  }

  // ---- events for the page ------------------------------------------------------------------

  /**
   * Call `handler(data, envelope, ctx)` for events of `bucket` (model label) and `eventClass`.
   * @param {string} bucket
   * @param {string | Handler} eventClass
   * @param {Handler} [handler]
   * @returns {() => void} a function that removes the handler
   */
  on(bucket, eventClass, handler) {
    if (typeof eventClass === "function") {
      handler = eventClass;
      eventClass = ANY;
    }
    if (!handler) throw new TypeError("instant.on(bucket, eventClass, handler): no handler");
    const entry = { bucket, eventClass, handler };
    this.handlers.push(entry);
    return () => {
      this.handlers = this.handlers.filter((h) => h !== entry);
    };
  }

  /**
   * Status events: "state" ({state}), "user" ({user, info}), "subscribed" / "unsubscribed" /
   * "denied" ({channel, ...}), "publication" (envelope), "error" ({error}).
   * @param {string} type
   * @param {Listener} listener
   * @returns {() => void}
   */
  addListener(type, listener) {
    (this.listeners[type] = this.listeners[type] || []).push(listener);
    return () => {
      this.listeners[type] = this.listeners[type].filter((l) => l !== listener);
    };
  }

  /**
   * The connection's state, and why it is not connected. Tells the page ("state" listeners,
   * the DOM event "instant:state" on document, data-instant-state and data-instant-cause on
   * <html>) when the state or its cause changed; writes a problem to the console once, until
   * the page is connected again.
   * @param {ConnectionState} state
   * @param {Problem | null} [problem]  null: keep the one known (cleared when connected)
   * @param {unknown} [ctx]  centrifuge's context
   */
  _setState(state, problem = null, ctx = undefined) {
    const before = this.state;
    const cause = this.problem && this.problem.cause;
    if (state === "connected" || state === "disconnected" && !problem) this.problem = null;
    if (problem) this.problem = problem;
    if (problem) this._log(problem);
    if (state === "connected") {
      if (this._logged.size) console.info(`instant_signals: connected to ${this._wsUrl}.`);
      this._logged.clear();
      this._failures = 0;
      this._tried = true;
    }
    this.state = state;
    const now = this.problem;
    if (before === state && cause === (now && now.cause)) return;
    /** @type {StateDetail} */
    const detail = {
      state, cause: now ? now.cause : null, reason: now ? now.reason : null, fix: now ? now.fix : null,
      error: now ? now.error : undefined, ctx, instant: this,
    };
    if (typeof document !== "undefined") {
      const root = document.documentElement;
      root.dataset.instantState = state;
      if (detail.cause) root.dataset.instantCause = detail.cause;
      else delete root.dataset.instantCause;
      document.dispatchEvent(new CustomEvent(STATE_EVENT, { detail }));
    }
    this._emit("state", detail);
    if (state === "connected") for (const resolve of this._waiters.splice(0)) resolve();
  }

  /**
   * Write a problem to the console, once per cause until connected again.
   * @param {Problem} problem
   */
  _log(problem) {
    if (this._logged.has(problem.cause)) return;
    this._logged.add(problem.cause);
    if (problem.level === "warn") console.warn(describe(problem));
    else console.error(describe(problem));
  }

  /**
   * A problem while not connected: "reconnecting" (the module tries again), or the state given.
   * @param {Problem} problem
   * @param {ConnectionState} [state]
   */
  _failed(problem, state = "reconnecting") {
    this._tried = true;
    this._emit("error", { error: problem.error || new InstantError(problem.reason, 0), problem });
    if (this.state === "connected") this._log(problem); // a token refresh: still connected
    else this._setState(state, problem);
  }

  /**
   * Resolves at the next "connected" (at once when connected); with `timeout` (ms) it rejects
   * with an InstantError naming the problem.
   * @param {number} [timeout]
   * @returns {Promise<void>}
   */
  _connected(timeout) {
    if (this.state === "connected") return Promise.resolve();
    return new Promise((resolve, reject) => {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this._waiters.push(done);
      if (timeout) {
        timer = setTimeout(() => {
          this._waiters = this._waiters.filter((w) => w !== done);
          const why = this.problem ? `: ${this.problem.reason}` : "";
          reject(new InstantError(`not connected after ${timeout} ms${why}`, 0));
        }, timeout);
      }
    });
  }

  /**
   * @param {string} type
   * @param {unknown} detail
   */
  _emit(type, detail) {
    if (this.debug) console.debug("[instant]", type, detail);
    for (const listener of this.listeners[type] || []) {
      try {
        listener(detail);
      } catch (e) {
        console.error(e);
      }
    }
  }

  /**
   * @param {string} name
   * @param {{data: any}} ctx  centrifuge's publication context
   */
  _dispatch(name, ctx) {
    /** @type {Envelope} */
    const envelope = ctx.data;
    if (!envelope || typeof envelope !== "object") return;
    for (const collection of this._collections) {
      if (collection.channel === name) collection._apply(envelope);
    }
    this._emit("publication", envelope);
    const bucket = envelope.bucket || "";
    const eventClass = envelope.event_class || "";
    for (const { bucket: b, eventClass: e, handler } of this.handlers) {
      if ((b === ANY || b === bucket) && (e === ANY || e === eventClass)) {
        try {
          handler(envelope.data, envelope, ctx);
        } catch (err) {
          console.error(err);
        }
      }
    }
  }

  // ---- live lists and presence ----------------------------------------------------------------

  /**
   * A live list of the rows of a channel declared with @broadcast: loaded from `collection/`
   * with the channel's stream position, then kept current from its events. "{user}" in the
   * name is the logged-in user's id (e.g. "$user:{user}"); for an anonymous visitor such a
   * collection stays empty ("idle"). See Collection for the guarantee and its limit.
   * @param {string} channel
   * @param {CollectionOptions} [options]
   * @returns {Collection}
   */
  collection(channel, options = {}) {
    const collection = new Collection(this, channel, options);
    this._collections.add(collection);
    this._bind(collection);
    this._sync();
    return collection;
  }

  /**
   * Who reads `channel` now (a channel declared with presence=True), kept current: a list of
   * {user, info, connections}, one entry per user across tabs and connections. "{user}" as in
   * collection(). Only the channel's readers may see its presence.
   * @param {string} channel
   * @returns {Presence}
   */
  presence(channel) {
    const presence = new Presence(this, channel);
    this._presences.add(presence);
    this._bind(presence);
    this._sync();
    const entry = presence.channel ? this._subs.get(presence.channel) : undefined;
    if (entry && entry.sub.state === "subscribed") presence._subscribed(entry.sub);
    return presence;
  }

  /** @param {Follower} follower */
  _forget(follower) {
    if (follower instanceof Collection) this._collections.delete(follower);
    else this._presences.delete(follower);
    this._sync();
  }

  /**
   * Fill "{user}" of a collection's or presence's channel; empty it when the channel changed.
   * @param {Follower} follower
   */
  _bind(follower) {
    const name = this._resolve(follower.template);
    if (name === follower.channel) return;
    follower.channel = name;
    follower._fresh = true;
    follower._clear(name ? "loading" : "idle");
  }

  /**
   * @param {string} template
   * @returns {string | null}
   */
  _resolve(template) {
    if (!template.includes("{user}")) return template;
    return this.user ? template.replace(/\{user\}/g, this.user) : null;
  }

  /** @param {string} name */
  _followers(name) {
    /** @type {Follower[]} */
    const found = [];
    for (const follower of [...this._collections, ...this._presences]) {
      if (follower.channel === name) found.push(follower);
    }
    return found;
  }

  // ---- HTTP endpoints ------------------------------------------------------------------------

  /**
   * @param {string} path
   * @param {unknown} [body]  JSON to POST (GET without)
   * @returns {Promise<any>}
   */
  async _request(path, body) {
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    /** @type {RequestInit} */
    const init = { credentials: "same-origin", headers };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      if (this.csrfToken) headers["X-CSRFToken"] = this.csrfToken;
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(this.endpoint + path, init);
    } catch (e) {
      throw new InstantError(`${path}: ${e}`, 0, null);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const detail = (data && (data.detail || data.error)) || response.statusText;
      throw new InstantError(`${path}: ${detail}`, response.status, data);
    }
    return data;
  }

  /**
   * GET get_token/: the connection token, the websocket URL and the user's channels.
   * @returns {Promise<TokenPayload>}
   */
  async fetchTokens() {
    const payload = await this._request("get_token/");
    if (!payload || typeof payload !== "object" || !payload.ws_token || !payload.ws_url) {
      throw new InstantError("get_token/: the answer has no ws_token and ws_url", 200, payload);
    }
    this.csrfToken = payload.csrf_token || this.csrfToken;
    return payload;
  }

  /**
   * centrifuge's getToken of a private channel: subscribe/ (a refusal waits for a refresh).
   * @param {string} name
   * @returns {Promise<string>}
   */
  async _subscriptionToken(name) {
    try {
      const answer = await this._request("subscribe/", { channel: name });
      return answer.token;
    } catch (e) {
      if (e instanceof InstantError && [400, 403, 404].includes(e.status)) {
        this._deny(name, e);
        throw new UnauthorizedError(e.message); // this subscription stops until the next refresh
      }
      throw e; // temporary (network, 5xx): centrifuge retries
    }
  }

  /**
   * centrifuge's getState of a channel with collections: collection/ gives the stream position
   * (read first, on the server) and the rows; the subscription then recovers from there.
   * @param {string} name
   * @param {() => Subscription} sub  the subscription asking
   * @returns {Promise<StreamPosition>}
   */
  async _loadState(name, sub) {
    let answer;
    try {
      // The models its collections keep: collection/ answers 400 if one does not publish there.
      const models = new Set([...this._collections].filter((c) => c.channel === name && c.model)
        .map((c) => `&model=${encodeURIComponent(String(c.model))}`));
      answer = await this._request(`collection/?channel=${encodeURIComponent(name)}${[...models].join("")}`);
    } catch (e) {
      const current = this._subs.get(name)?.sub === sub();
      if (current && e instanceof InstantError && [400, 403, 404].includes(e.status)) {
        if (e.status === 403) this._deny(name, e);
        else this._fail(name, e);
        sub().unsubscribe(); // no retry with backoff: a 403 waits for the next token refresh
      }
      throw e; // others are temporary: centrifuge calls getState again after a backoff
    }
    /** @type {StreamPosition} */
    const position = { offset: answer.offset || 0, epoch: answer.epoch || "" };
    if (this._subs.get(name)?.sub !== sub()) throw new Error(`${name}: subscription replaced`);
    for (const collection of this._collections) {
      if (collection.channel === name) collection._reset(answer.rows || [], position);
    }
    return position;
  }

  /**
   * @param {string} name
   * @param {Error} error
   */
  _deny(name, error) {
    this.denied.add(name);
    for (const follower of this._followers(name)) follower._clear("denied", error);
    this._emit("denied", { channel: name, error });
  }

  /**
   * @param {string} name
   * @param {Error} error
   */
  _fail(name, error) {
    for (const follower of this._followers(name)) follower._clear("error", error);
    this._emit("error", { channel: name, error });
  }

  // ---- connection ----------------------------------------------------------------------------

  /**
   * Fetch tokens, connect and subscribe to the user's channels. Resolves once connected. It
   * never rejects for a failure to connect: the module tries again (get_token/ and the
   * websocket, with a growing delay) and says why in the console and in "state" events; the
   * promise stays pending meanwhile.
   * @returns {Promise<Instant>}
   */
  async start() {
    this._stopped = false;
    if (this.state === "connected") return this;
    if (this.state === "disconnected") this._setState(this._tried ? "reconnecting" : "connecting");
    const payload = await this._tokensOnceAnswered();
    const state = /** @type {ConnectionState} */ (this.state); // it changed meanwhile, maybe
    if (payload && state !== "connected") {
      let client = this.client;
      try {
        client = client || this._createClient(payload);
        this._adopt(payload);
        client.connect();
      } catch (error) {
        this._failed(badWsUrl(payload.ws_url, error), "disconnected"); // no retry can fix it
      }
    }
    await this._connected();
    return this;
  }

  /**
   * get_token/'s answer, asked again after a growing delay while it fails (each failure is a
   * "reconnecting" state with its cause); null when stop() was called meanwhile.
   * @returns {Promise<TokenPayload | null>}
   */
  async _tokensOnceAnswered() {
    for (;;) {
      if (this._stopped) return null;
      try {
        return await this.fetchTokens();
      } catch (error) {
        if (this._stopped) return null;
        this._failed(httpProblem(this.endpoint, "get_token/", error));
        await this._pause();
      }
    }
  }

  /** Wait before the next attempt after a failure (FAILURE_DELAYS, growing). */
  _pause() {
    const delay = FAILURE_DELAYS[Math.min(this._failures, FAILURE_DELAYS.length - 1)];
    this._failures += 1;
    return new Promise((resolve) => setTimeout(resolve, delay));
  }

  /**
   * @param {TokenPayload} payload
   * @returns {Centrifuge}
   */
  _createClient(payload) {
    const client = new Centrifuge(payload.ws_url, {
      ...this.centrifugeOptions,
      token: payload.ws_token,
      getToken: () => this._connectionToken(),
    });
    this.client = client;
    this._wsUrl = payload.ws_url;
    client.on("connecting", (ctx) => {
      if (this.client !== client) return;
      this._setState(this._tried ? "reconnecting" : "connecting", null, ctx);
    });
    client.on("connected", (ctx) => {
      if (this.client === client) this._setState("connected", null, ctx);
    });
    client.on("disconnected", (ctx) => {
      if (this.client !== client) return;
      const problem = this._stopped ? null : disconnectProblem(ctx);
      if (problem && problem.cause === "token_rejected") {
        this._failed(problem); // "reconnecting": with a fresh token, after a pause
        this._afterRejection(client);
      } else if (problem) {
        this._failed(problem, "disconnected");
      } else {
        this._setState("disconnected", null, ctx);
        if (ctx.code === ACCESS_CHANGED) this._afterAccessChange(client);
      }
    });
    client.on("error", (ctx) => {
      this._emit("error", { error: ctx.error });
      if (ctx.type === "transport" && this.client === client) this._diagnoseWebsocket(client);
    });
    return client;
  }

  /**
   * The websocket did not open: find out whether Centrifugo runs there (then it refused this
   * page's origin) and report that, unless the client connected or failed again meanwhile.
   * @param {Centrifuge} client
   */
  async _diagnoseWebsocket(client) {
    const probe = ++this._probes;
    const url = this._wsUrl;
    const page = typeof location === "undefined" ? { protocol: "", origin: "" } : location;
    const mixed = mixedContent(url, page.protocol);
    const answers = mixed ? false : await reachable(url);
    if (probe !== this._probes || this.client !== client || this.state === "connected" || this._stopped) return;
    const problem = mixed || websocketProblem(url, answers, page.origin);
    this._failed(problem, this.state === "disconnected" ? "disconnected" : "reconnecting");
  }

  /**
   * Centrifugo rejected the connection token (3500, terminal for centrifuge): after a pause,
   * fresh tokens from get_token/ and another attempt, so the page comes back once the keys
   * match again.
   * @param {Centrifuge} client
   */
  async _afterRejection(client) {
    await this._pause();
    const current = () => this.client === client && !this._stopped && client.state === "disconnected";
    if (!current()) return;
    const payload = await this._tokensOnceAnswered();
    if (!payload || !current()) return;
    this._adopt(payload);
    client.setToken(payload.ws_token);
    try {
      client.connect();
    } catch (error) {
      this._failed(badWsUrl(payload.ws_url, error), "disconnected");
    }
  }

  /**
   * The server ended the connection because the user's access changed (ACCESS_CHANGED): the
   * tokens held are the old session's. Ask get_token/ for fresh ones and connect again as
   * whoever the session is now, unless login()/logout()/stop() took over meanwhile.
   * @param {Centrifuge} client
   */
  async _afterAccessChange(client) {
    for (let attempt = 0; ; attempt += 1) {
      const current = () => this.client === client && !this._stopped && client.state === "disconnected";
      if (!current()) return;
      let payload;
      try {
        payload = await this.fetchTokens();
      } catch (error) {
        if (current()) this._failed(httpProblem(this.endpoint, "get_token/", error));
        const delay = RETRY_DELAYS[Math.min(attempt, RETRY_DELAYS.length - 1)];
        await new Promise((resolve) => setTimeout(resolve, delay));
        continue;
      }
      if (!current()) return;
      const user = this.user;
      this._adopt(payload);
      client.setToken(payload.ws_token);
      try {
        client.connect();
      } catch (error) {
        this._failed(badWsUrl(payload.ws_url, error), "disconnected");
        return;
      }
      if (this.user === user && user) {
        // Still this user: logged in in another session, or a session kept in a cookie
        // (signed_cookies) that the logout's answer had not replaced yet. Ask once more.
        setTimeout(() => {
          if (this.client === client && !this._stopped && this.user === user) {
            this.refresh().catch((error) => this._emit("error", { error }));
          }
        }, SAME_USER_RECHECK);
      }
      return;
    }
  }

  /**
   * centrifuge's getToken: at every connection token refresh (and at a reconnect with an
   * expired token).
   * @returns {Promise<string>}
   */
  async _connectionToken() {
    const identity = this._identity;
    let payload;
    try {
      payload = await this.fetchTokens();
    } catch (error) {
      this._failed(httpProblem(this.endpoint, "get_token/", error)); // centrifuge retries
      throw error;
    }
    if (identity !== this._identity) return payload.ws_token; // an attempt login()/logout() ended
    const reconnecting = this._adopt(payload);
    this._retryDenied();
    if (reconnecting) throw new Error("the user changed: reconnecting"); // the old connection's refresh
    return payload.ws_token;
  }

  /**
   * Take the identity and channels of a get_token/ (or login/) answer. When the user changed
   * while connected, the connection is started again as the new user; returns true then.
   * @param {TokenPayload} payload
   * @returns {boolean}
   */
  _adopt(payload) {
    const client = this.client;
    const sub = userOf(payload.ws_token);
    const changed = this._known && sub !== this.user;
    const reconnect = !!client && changed && client.state === "connected";
    if (client && reconnect) client.disconnect(); // before any subscription of the new user
    this._known = true;
    this._listed = new Map();
    for (const channel of payload.channels || []) {
      if (this.only && !this.only.includes(channel.name)) continue;
      this._listed.set(channel.name, channel.token);
    }
    if (changed || this._identity === 0) {
      this._identity += 1;
      this.user = sub;
      this.info = sub ? claims(payload.ws_token).info || null : null;
      this.denied.clear();
      // Private subscriptions carry the previous user's tokens: start them again.
      for (const name of [...this._subs.keys()]) if (isPrivate(name)) this._drop(name);
      for (const follower of [...this._collections, ...this._presences]) {
        if (follower.channel && isPrivate(follower.channel)) follower._clear("loading");
        this._bind(follower);
      }
      this._emit("user", { user: this.user, info: this.info });
    }
    this._sync();
    if (client && reconnect) {
      client.setToken(payload.ws_token);
      client.connect();
    }
    return reconnect;
  }

  /** Ask again for the channels that were refused or taken away. */
  _retryDenied() {
    for (const name of [...this.denied]) {
      this.denied.delete(name);
      const entry = this._subs.get(name);
      if (entry && entry.sub.state === "unsubscribed") {
        for (const follower of this._followers(name)) follower._setState("loading");
        entry.sub.subscribe();
      }
    }
  }

  /**
   * The channels this page wants now, with the tokens get_token/ gave.
   * @returns {Map<string, string | undefined>}
   */
  _wanted() {
    const wanted = new Map(this._listed);
    /** @param {string | null} name */
    const add = (name) => {
      if (name && !wanted.has(name)) wanted.set(name, undefined);
    };
    if (this.user) for (const template of this.userChannels) add(this._resolve(template));
    for (const name of this.requested) add(name);
    for (const follower of [...this._collections, ...this._presences]) add(follower.channel);
    return wanted;
  }

  /** Make the subscriptions match _wanted(). */
  _sync() {
    if (!this.client) return;
    const wanted = this._wanted();
    for (const name of [...this._subs.keys()]) if (!wanted.has(name)) this._drop(name);
    for (const [name, token] of wanted) {
      const collections = [...this._collections].filter((c) => c.channel === name);
      // A collection new to the channel needs a load aligned with the stream: the subscription
      // starts again, with getState (which reloads every collection of the channel).
      if (this._subs.has(name) && collections.some((c) => c._fresh)) this._drop(name);
      if (!this._subs.has(name)) {
        for (const collection of collections) collection._fresh = false;
        this._create(this.client, name, token, collections.length > 0);
      }
    }
  }

  /** @param {string} name */
  _drop(name) {
    const entry = this._subs.get(name);
    if (!entry || !this.client) return;
    this._subs.delete(name);
    entry.sub.removeAllListeners();
    this.client.removeSubscription(entry.sub);
    this._emit("unsubscribed", { channel: name, ctx: { code: 0, reason: "not wanted" } });
  }

  /**
   * @param {Centrifuge} client
   * @param {string} name
   * @param {string | undefined} token  a subscription token get_token/ gave, if any
   * @param {boolean} withState  whether collections follow the channel (getState)
   * @returns {Subscription}
   */
  _create(client, name, token, withState) {
    /** @type {import("centrifuge").SubscriptionOptions} */
    const options = {};
    if (isPrivate(name)) {
      // Private channel: Centrifugo wants a subscription token, refreshed through subscribe/.
      if (token) options.token = token;
      options.getToken = () => this._subscriptionToken(name);
    }
    /** @type {Subscription | null} */
    let created = null;
    const sub = () => /** @type {Subscription} */ (created);
    if (withState) options.getState = () => this._loadState(name, sub);
    created = client.newSubscription(name, options);
    this._subs.set(name, { sub: created, withState });
    created.on("publication", (ctx) => this._dispatch(name, ctx));
    created.on("subscribed", (ctx) => {
      this.denied.delete(name);
      for (const collection of this._collections) {
        if (collection.channel === name) collection._setState("live");
      }
      for (const presence of this._presences) {
        if (presence.channel === name) presence._subscribed(sub());
      }
      this._emit("subscribed", { channel: name, ctx });
    });
    created.on("unsubscribed", (ctx) => {
      if (ctx.code === SERVER_UNSUBSCRIBE && this._subs.get(name)?.sub === sub()) {
        // Access taken away (e.g. the row changed owner): asked again at the next refresh.
        this._deny(name, new InstantError(`${name}: ${ctx.reason || "unsubscribed by the server"}`, 403));
      }
      for (const presence of this._presences) {
        if (presence.channel === name && presence.state !== "denied") presence._clear("idle");
      }
      this._emit("unsubscribed", { channel: name, ctx });
    });
    created.on("join", (ctx) => this._presenceEvent(name, true, ctx.info));
    created.on("leave", (ctx) => this._presenceEvent(name, false, ctx.info));
    created.on("error", (ctx) => this._emit("error", { channel: name, error: ctx.error }));
    created.subscribe();
    return created;
  }

  /**
   * @param {string} name
   * @param {boolean} join
   * @param {ClientInfo} info
   */
  _presenceEvent(name, join, info) {
    for (const presence of this._presences) {
      if (presence.channel === name) presence._event(join, info);
    }
  }

  /**
   * Subscribe to one more channel (e.g. "$task:42"); kept across logins. A refusal is asked
   * again at the next token refresh.
   * @param {string} name
   * @returns {Subscription | null}
   */
  subscribe(name) {
    this.requested.add(name);
    this._sync();
    const entry = this._subs.get(name);
    return entry ? entry.sub : null;
  }

  /** @param {string} name */
  unsubscribe(name) {
    this.requested.delete(name);
    this._sync();
  }

  /** Names of the channels currently subscribed to. @returns {string[]} */
  subscribedChannels() {
    const names = [];
    for (const [name, entry] of this._subs) if (entry.sub.state === "subscribed") names.push(name);
    return names.sort();
  }

  /**
   * Ask get_token/ now: follow a login or logout made elsewhere, subscribe newly listed
   * channels and ask again for refused ones (what every token refresh does).
   * @returns {Promise<Instant>}
   */
  async refresh() {
    const payload = await this.fetchTokens();
    const client = this.client || this._createClient(payload);
    const user = this.user;
    this._adopt(payload);
    this._retryDenied();
    if (user !== this.user && client.state === "disconnected") client.connect();
    return this;
  }

  // ---- login / logout ------------------------------------------------------------------------

  /**
   * POST login/ (the JSON login, when the site enables it); go on as that user.
   * @param {string} username
   * @param {string} password
   * @returns {Promise<string>} the user's id
   */
  async login(username, password) {
    if (!this.csrfToken) await this.fetchTokens();
    const payload = await this._request("login/", { username, password });
    this.csrfToken = payload.csrf_token || this.csrfToken;
    await this._become(payload);
    return this.user;
  }

  /**
   * POST logout/; go on as an anonymous visitor (every tab of the user follows: the server
   * disconnects them with ACCESS_CHANGED and they reconnect with fresh tokens).
   * @returns {Promise<void>}
   */
  async logout() {
    if (!this.csrfToken) await this.fetchTokens();
    await this._request("logout/", {});
    await this._become(await this.fetchTokens());
  }

  /** @param {TokenPayload} payload */
  async _become(payload) {
    let client = this.client;
    if (!client) {
      client = this._createClient(payload);
      this._adopt(payload);
      client.connect();
    } else if (userOf(payload.ws_token) !== this.user) {
      client.disconnect(); // ends an attempt in progress with the old session's token
      this._adopt(payload);
      client.setToken(payload.ws_token);
      client.connect();
    } else {
      this._adopt(payload);
    }
    await this._connected(10000);
  }

  /** Close the connection (state "disconnected"; start() connects again). */
  stop() {
    this._stopped = true;
    if (this.client) this.client.disconnect();
    if (this.state !== "disconnected") this._setState("disconnected");
  }
}

/**
 * Shortcut: `const instant = await connect({endpoint: "/instant/"})`.
 * @param {InstantOptions} [options]
 * @returns {Promise<Instant>}
 */
export async function connect(options) {
  return new Instant(options).start();
}
