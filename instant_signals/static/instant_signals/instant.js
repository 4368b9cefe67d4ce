// instant_signals browser client: live Django model events through Centrifugo v6.
//
// An ES module built on the official `centrifuge` npm client (v5). The page maps the bare name
// "centrifuge" to the library's ESM build with an import map, e.g.
//   <script type="importmap">{"imports": {"centrifuge": "/static/centrifuge/index.mjs"}}</script>
// (the template include "instant_signals/importmap.html" writes it with {% static %}).
//
//   import { Instant } from "/static/instant_signals/instant.js";
//   const instant = new Instant({ endpoint: "/instant/", userChannels: ["$user:{user}"] });
//   instant.on("todo.task", "updated", (data, event) => console.log(data.fields, data.changed));
//   await instant.start();
//   await instant.login("alice", "secret");   // reconnects as alice, subscribes her channels
//   instant.subscribe("$task:42");            // a per-instance channel (token from subscribe/)
//
// Handlers get (data, envelope): for model events data is {model, pk, event, fields, changed};
// for publish() events it is the `data` given (maybe undefined) and envelope.message holds the
// message. "*" matches any bucket or event class.

import { Centrifuge, UnauthorizedError } from "centrifuge";

const ANY = "*";

export class InstantError extends Error {
  constructor(message, status, body) {
    super(message);
    this.name = "InstantError";
    this.status = status;
    this.body = body;
  }
}

function decodeSub(jwt) {
  // The user's id is the `sub` claim of the connection token ("" for anonymous visitors).
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    return JSON.parse(atob(padded)).sub || "";
  } catch (e) {
    return "";
  }
}

export class Instant {
  /**
   * @param {object} options
   * @param {string} [options.endpoint="/instant/"]  where instant_signals.urls is mounted
   * @param {string[]} [options.userChannels=[]]      channels of the logged-in user; "{user}" is
   *        replaced by the user's id, e.g. ["$user:{user}"]
   * @param {string[]} [options.channels]            subscribe only to these of the user's
   *        channels (default: every channel get_token/ lists)
   * @param {object} [options.centrifuge={}]         extra options for `new Centrifuge(...)`
   * @param {boolean} [options.debug=false]          log to the console
   */
  constructor(options = {}) {
    this.endpoint = (options.endpoint || "/instant/").replace(/\/?$/, "/");
    this.userChannels = options.userChannels || [];
    this.only = options.channels || null;
    this.centrifugeOptions = options.centrifuge || {};
    this.debug = !!options.debug;
    this.csrfToken = null;
    this.user = "";
    this.state = "disconnected";
    this.client = null;
    this.handlers = [];
    this.listeners = {};
    this.requested = new Set(); // per-instance channels asked for with subscribe()
  }

  // ---- events for the page ------------------------------------------------------------------

  /** Call handler(data, envelope) for events of `bucket` (model label) and `eventClass`. */
  on(bucket, eventClass, handler) {
    if (typeof eventClass === "function") {
      handler = eventClass;
      eventClass = ANY;
    }
    const entry = { bucket, eventClass, handler };
    this.handlers.push(entry);
    return () => {
      this.handlers = this.handlers.filter((h) => h !== entry);
    };
  }

  /** Status events: "state" ({state}), "user" ({user}), "subscribed" / "unsubscribed" /
   *  "denied" ({channel, ...}), "publication" (envelope), "error" ({error}). */
  addListener(type, listener) {
    (this.listeners[type] = this.listeners[type] || []).push(listener);
    return () => {
      this.listeners[type] = this.listeners[type].filter((l) => l !== listener);
    };
  }

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

  _dispatch(envelope, ctx) {
    if (!envelope || typeof envelope !== "object") return;
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

  // ---- HTTP endpoints ------------------------------------------------------------------------

  async _request(path, body) {
    const init = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      if (this.csrfToken) init.headers["X-CSRFToken"] = this.csrfToken;
      init.body = JSON.stringify(body);
    }
    const response = await fetch(this.endpoint + path, init);
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

  /** GET get_token/: the connection token, the websocket URL and the user's channels. */
  async fetchTokens() {
    const payload = await this._request("get_token/");
    this.csrfToken = payload.csrf_token || this.csrfToken;
    return payload;
  }

  async _subscriptionToken(channel) {
    try {
      const answer = await this._request("subscribe/", { channel });
      return answer.token;
    } catch (e) {
      if (e instanceof InstantError && (e.status === 403 || e.status === 400)) {
        this._emit("denied", { channel, error: e });
        throw new UnauthorizedError(e.message); // final: centrifuge stops retrying
      }
      throw e;
    }
  }

  // ---- connection ----------------------------------------------------------------------------

  /** Fetch tokens, connect and subscribe to the user's channels. Resolves once connected. */
  async start() {
    const payload = await this.fetchTokens();
    this._connect(payload);
    await this.client.ready(10000);
    return this;
  }

  _connect(payload) {
    if (this.client) {
      this.client.disconnect();
      this.client.removeAllListeners();
    }
    const previous = this.user;
    this.user = decodeSub(payload.ws_token);
    if (previous !== this.user) this._emit("user", { user: this.user });
    const client = new Centrifuge(payload.ws_url, {
      ...this.centrifugeOptions,
      token: payload.ws_token,
      getToken: async () => {
        const fresh = await this.fetchTokens();
        if (decodeSub(fresh.ws_token) !== this.user) {
          // Logged in or out elsewhere (another tab): start over with the new identity.
          setTimeout(() => this._connect(fresh), 0);
          throw new UnauthorizedError("the user changed");
        }
        return fresh.ws_token;
      },
    });
    this.client = client;
    for (const state of ["connecting", "connected", "disconnected"]) {
      client.on(state, (ctx) => {
        if (this.client !== client) return;
        this.state = state;
        this._emit("state", { state, ctx });
      });
    }
    client.on("error", (ctx) => this._emit("error", { error: ctx.error }));

    for (const channel of payload.channels || []) {
      if (this.only && !this.only.includes(channel.name)) continue;
      this._subscribe(channel.name, channel.token);
    }
    if (this.user) {
      for (const template of this.userChannels) {
        this._subscribe(template.replace(/\{user\}/g, this.user));
      }
    }
    for (const name of this.requested) this._subscribe(name);
    client.connect();
  }

  _subscribe(name, token) {
    const client = this.client;
    if (!client || client.getSubscription(name)) return client && client.getSubscription(name);
    const options = {};
    if (name.startsWith("$")) {
      // Private channel: Centrifugo wants a subscription token, refreshed through subscribe/.
      if (token) options.token = token;
      options.getToken = () => this._subscriptionToken(name);
    }
    const sub = client.newSubscription(name, options);
    sub.on("publication", (ctx) => this._dispatch(ctx.data, ctx));
    sub.on("subscribed", (ctx) => this._emit("subscribed", { channel: name, ctx }));
    sub.on("unsubscribed", (ctx) => this._emit("unsubscribed", { channel: name, ctx }));
    sub.on("error", (ctx) => this._emit("error", { channel: name, error: ctx.error }));
    sub.subscribe();
    return sub;
  }

  /** Subscribe to one more channel (e.g. "$task:42"); kept across logins. */
  subscribe(name) {
    this.requested.add(name);
    return this._subscribe(name);
  }

  unsubscribe(name) {
    this.requested.delete(name);
    const sub = this.client && this.client.getSubscription(name);
    if (sub) {
      sub.unsubscribe();
      this.client.removeSubscription(sub);
    }
  }

  /** Names of the channels currently subscribed to. */
  subscribedChannels() {
    if (!this.client) return [];
    return Object.values(this.client.subscriptions())
      .filter((sub) => sub.state === "subscribed")
      .map((sub) => sub.channel)
      .sort();
  }

  // ---- login / logout ------------------------------------------------------------------------

  /** POST login/; on success reconnect as that user (their channels and userChannels). */
  async login(username, password) {
    if (!this.csrfToken) await this.fetchTokens();
    const payload = await this._request("login/", { username, password });
    this.csrfToken = payload.csrf_token || this.csrfToken;
    this._connect(payload);
    await this.client.ready(10000);
    return this.user;
  }

  /** POST logout/; reconnect as an anonymous visitor. */
  async logout() {
    if (!this.csrfToken) await this.fetchTokens();
    await this._request("logout/", {});
    const payload = await this.fetchTokens();
    this._connect(payload);
    await this.client.ready(10000);
  }

  /** Close the connection. */
  stop() {
    if (this.client) this.client.disconnect();
  }
}

/** Shortcut: `const instant = await connect({endpoint: "/instant/"})`. */
export async function connect(options) {
  return new Instant(options).start();
}
