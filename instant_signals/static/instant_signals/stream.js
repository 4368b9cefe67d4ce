// <instant-stream>: server-rendered HTML from instant_signals, applied live to a Turbo 8 or an
// htmx 2 page.
//
//   {% include "instant_signals/importmap.html" %}  (maps centrifuge, @hotwired/turbo, htmx.org)
//   <script type="module" src="{% static 'instant_signals/stream.js' %}"></script>
//   <script type="module">import "@hotwired/turbo";</script>              (a Turbo page), or
//   <script type="module">import htmx from "htmx.org"; window.htmx = htmx;</script>  (htmx)
//
//   <instant-stream channel="tasks" format="turbo"></instant-stream>
//   <instant-stream channel="$user:{{ user.pk }}" format="htmx"></instant-stream>
//
// The element subscribes to `channel` with the app's tokens (instant.js: get_token/ and
// subscribe/ under `endpoint`, default "/instant/") and applies what @broadcast(template=...,
// or refresh=True) publishes there:
// - fragments, {action: append|prepend|replace|remove, target, html}: format="turbo" renders
//   them as a <turbo-stream> with Turbo.renderStreamMessage; format="htmx" as an htmx
//   out-of-band swap (hx-swap-oob) through htmx.swap. An append of an element already on the
//   page removes the old copy first, as Turbo does, so a tab that got its own change twice (its
//   response, the channel) shows it once; a fragment caused by this tab's own htmx request waits
//   for that request's response; on a Turbo page, one that arrives during a navigation or a form
//   submission is applied once its render is done. A target not on the page is left alone.
// - refresh signals: debounced (below), then the cancelable DOM event "instant:refresh"
//   (bubbles); with format="turbo" its default is a Turbo 8 page refresh (morphed with
//   <meta name="turbo-refresh-method" content="morph">); with htmx, listen to it, e.g.
//   <div hx-get="/tasks/" hx-trigger="instant:refresh from:body" hx-swap="outerHTML">.
//
// Debounce (per channel, for every process and transaction publishing there): a refresh starts
// `refresh-wait` ms (200) after a signal, at the latest `refresh-interval` ms (1000) after the
// first signal not yet refreshed, never sooner than `refresh-interval` after the previous
// refresh started, and never while the previous one is loading (its Turbo visit, or the htmx
// requests its event started) or a Turbo navigation runs; a signal that arrives during a refresh
// leads to one more. So the page always ends on a refresh that started after the last signal,
// and signals arriving over T ms cause at most ceil((T - wait) / interval) + 1 refreshes.
//
// Own changes: a signal carrying the tag of one of this tab's request ids is ignored: Turbo 8
// sends X-Turbo-Request-Id with its fetches (Turbo.session.recentRequests); this module adds
// X-Instant-Request-Id to every htmx request, and requestHeaders() gives one for your fetch().
// The server reads them with instant_signals.html.RequestIdMiddleware and publishes only their
// request_tag (a hash, below): other readers of the channel cannot replay it.
//
// Attributes: channel (required), format ("turbo" | "htmx", default "turbo"), endpoint,
// refresh-wait, refresh-interval. Reflected: state ("connecting", "subscribed", "denied",
// "unsubscribed", "error"). Events on the element: "instant:before-stream" (cancelable; detail
// {action, target, html, data}) before a fragment is applied, "instant:refresh" (cancelable;
// detail {channel}). element.stats: {publications, applied, signals, ignored, refreshes,
// firstSignal, lastSignal} of the element's channel on this page.

import { Instant } from "./instant.js";

export const REQUEST_ID_HEADER = "X-Instant-Request-Id";
const DEFAULT_ENDPOINT = "/instant/";
const DEFAULT_WAIT = 200;
const DEFAULT_INTERVAL = 1000;
const VISIT_TIMEOUT = 10000;
const SETTLE_TIMEOUT = 500; // an answer that swaps nothing never settles

// ---- request tags: what the server publishes of a request id --------------------------------
// instant_signals.fragments.request_tag: the first 32 hex digits of SHA-256("instant_signals
// request tag\0" + id), for ids of at least 16 characters. Readers of a channel see only tags;
// sending a tag back as a request id makes the server publish another tag, so nobody but the
// tab that made an id up can make that tab skip a change. Synchronous (no crypto.subtle, which
// needs a secure context and is async): a fragment is matched as soon as it arrives.

const TAG_PREFIX = "instant_signals request tag\u0000";
const MIN_TAGGED_ID = 16;

function firstPrimes(count) {
  const primes = [];
  for (let n = 2; primes.length < count; n += 1) {
    if (primes.every((p) => n % p !== 0)) primes.push(n);
  }
  return primes;
}

// SHA-256's constants: the first 32 bits of the fractional parts of the square roots (initial
// hash) and cube roots (round constants) of the first primes.
const fraction32 = (x) => ((x - Math.floor(x)) * 4294967296) >>> 0;
const PRIMES = firstPrimes(64);
const ROUND = PRIMES.map((p) => fraction32(Math.cbrt(p)));
const INITIAL = PRIMES.slice(0, 8).map((p) => fraction32(Math.sqrt(p)));

/** SHA-256 of an ASCII/UTF-8 string, as lowercase hex. */
function sha256Hex(text) {
  const bytes = new TextEncoder().encode(text);
  const length = Math.ceil((bytes.length + 9) / 64) * 64;
  const padded = new Uint8Array(length);
  padded.set(bytes);
  padded[bytes.length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(length - 8, Math.floor((bytes.length * 8) / 4294967296));
  view.setUint32(length - 4, (bytes.length * 8) >>> 0);
  const hash = INITIAL.slice();
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let offset = 0; offset < length; offset += 64) {
    for (let i = 0; i < 16; i += 1) w[i] = view.getUint32(offset + i * 4);
    for (let i = 16; i < 64; i += 1) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, h] = hash;
    for (let i = 0; i < 64; i += 1) {
      const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + ROUND[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      [h, g, f, e, d, c, b, a] = [g, f, e, (d + t1) >>> 0, c, b, a, (t1 + t2) >>> 0];
    }
    const next = [a, b, c, d, e, f, g, h];
    for (let i = 0; i < 8; i += 1) hash[i] = (hash[i] + next[i]) >>> 0;
  }
  return hash.map((x) => x.toString(16).padStart(8, "0")).join("");
}

const tags = new Map(); // request id -> tag (Turbo's recent ids are asked again and again)

/** The tag the server publishes for request id `id` (null when it publishes none). */
export function requestTag(id) {
  if (typeof id !== "string" || id.length < MIN_TAGGED_ID) return null;
  let tag = tags.get(id);
  if (tag === undefined) {
    tag = sha256Hex(TAG_PREFIX + id).slice(0, 32);
    tags.set(id, tag);
    if (tags.size > 500) tags.delete(tags.keys().next().value);
  }
  return tag;
}

// ---- request ids of this tab ------------------------------------------------------------------

class LimitedSet extends Set {
  constructor(size) {
    super();
    this.size_ = size;
  }

  add(value) {
    if (this.size >= this.size_) this.delete(this.values().next().value);
    return super.add(value);
  }
}

const ownRequestTags = new LimitedSet(200);

// A request id is this tab's secret (only its tag is published): 122 random bits or more.
function randomId() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID(); // secure contexts
  if (globalThis.crypto && crypto.getRandomValues) {
    return Array.from(crypto.getRandomValues(new Uint32Array(4)), (x) => x.toString(16).padStart(8, "0")).join("-");
  }
  return Array.from({ length: 4 }, () => Math.random().toString(36).slice(2, 10)).join("-");
}

/** A fresh request id of this tab (refresh signals carrying its tag are ignored here). */
export function newRequestId() {
  const id = randomId();
  ownRequestTags.add(requestTag(id));
  return id;
}

/** Headers for your own fetch(): `fetch(url, {method: "POST", headers: requestHeaders()})`. */
export function requestHeaders(headers = {}) {
  return { ...headers, [REQUEST_ID_HEADER]: newRequestId() };
}

/** Whether a published request tag is one of this tab's requests (htmx/fetch, or Turbo's). */
export function isOwnRequest(tag) {
  if (!tag) return false;
  if (ownRequestTags.has(tag)) return true;
  const recent = window.Turbo && window.Turbo.session && window.Turbo.session.recentRequests;
  if (!recent || typeof recent[Symbol.iterator] !== "function") return false;
  for (const id of recent) if (requestTag(id) === tag) return true;
  return false;
}

// An htmx out-of-band insert of an element whose id is already on the page (this tab got its
// own change from its response and from the channel) replaces it, as Turbo's append/prepend do:
// the old element is removed first. Ids stay unique whichever copy comes first.
document.addEventListener("htmx:oobBeforeSwap", (event) => {
  const { fragment, target } = event.detail || {};
  if (!fragment || !target) return;
  for (const child of [...(fragment.children || [])]) {
    const existing = child.id && document.getElementById(child.id);
    if (existing && existing !== target && !existing.contains(target)) existing.remove();
  }
});

// htmx requests of this tab: tag -> a promise settled once the response was swapped in. A
// fragment caused by one of them waits for it, so the tab's own response (say, an out-of-band
// delete) is applied first and the channel's copy of the change finds the page already updated.
const ownHtmxRequests = new Map();
const OWN_REQUEST_TIMEOUT = 10000;

document.addEventListener("htmx:configRequest", (event) => {
  const detail = event.detail;
  if (!detail || !detail.headers) return;
  const id = newRequestId();
  detail.headers[REQUEST_ID_HEADER] = id;
  const elt = detail.elt;
  if (!elt) return;
  let finish;
  const done = new Promise((resolve) => {
    finish = resolve;
  });
  const timer = setTimeout(() => finish(), OWN_REQUEST_TIMEOUT);
  // On the element itself: it may have left the document by then (a deleted row's button).
  const listener = (after) => {
    const config = after.detail && after.detail.requestConfig;
    if (config && config.headers && config.headers[REQUEST_ID_HEADER] !== id) return;
    elt.removeEventListener("htmx:afterRequest", listener);
    clearTimeout(timer);
    finish();
  };
  elt.addEventListener("htmx:afterRequest", listener);
  ownHtmxRequests.set(requestTag(id), done);
  if (ownHtmxRequests.size > 200) ownHtmxRequests.delete(ownHtmxRequests.keys().next().value);
});

// ---- Turbo and htmx ---------------------------------------------------------------------------

async function turbo() {
  if (window.Turbo) return window.Turbo;
  await import("@hotwired/turbo"); // sets window.Turbo
  return window.Turbo;
}

async function htmxLibrary() {
  if (window.htmx) return window.htmx;
  const module = await import("htmx.org");
  window.htmx = window.htmx || module.default;
  return window.htmx;
}

const BUSY_SUBMISSION = ["requesting", "waiting", "receiving"];

function turboBusy(Turbo) {
  const navigator = Turbo.navigator || (Turbo.session && Turbo.session.navigator);
  if (!navigator) return false;
  const visit = navigator.currentVisit;
  const submission = navigator.formSubmission;
  return !!((visit && visit.state === "started") ||
    (submission && BUSY_SUBMISSION.includes(submission.state)));
}

function nextEvent(types, timeout) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const type of types) document.removeEventListener(type, done);
      resolve();
    };
    const timer = setTimeout(done, timeout);
    for (const type of types) document.addEventListener(type, done);
  });
}

/** Turbo, once no navigation or form submission is running: their render will replace the
 *  page with what the server had when they fetched it, so a change must come after it. */
async function turboIdle() {
  const Turbo = await turbo();
  for (let i = 0; i < 10 && turboBusy(Turbo); i++) {
    await nextEvent(["turbo:load", "turbo:submit-end"], VISIT_TIMEOUT);
    await new Promise((resolve) => setTimeout(resolve, 50)); // a form's visit starts after it
  }
  return Turbo;
}

/** A Turbo 8 page refresh (what <turbo-stream action="refresh"> does, without its debounce),
 *  resolved when the page has been rendered again. It waits for a navigation or a form
 *  submission in progress first: a refresh must not cut them short. */
async function turboRefresh() {
  const Turbo = await turboIdle();
  const loaded = nextEvent(["turbo:load"], VISIT_TIMEOUT);
  Turbo.visit(window.location.href, { action: "replace", shouldCacheSnapshot: false });
  await loaded;
}

function applyTurbo(Turbo, data) {
  const stream = document.createElement("turbo-stream");
  stream.setAttribute("action", data.action);
  stream.setAttribute("target", data.target);
  if (data.html != null) {
    const template = document.createElement("template");
    template.innerHTML = data.html;
    stream.append(template);
  }
  Turbo.renderStreamMessage(stream.outerHTML);
}

function applyHtmx(htmx, data) {
  // Like Turbo: a row or list this page does not show (or already removed) is left alone.
  if (!document.getElementById(data.target)) return;
  const template = document.createElement("template");
  template.innerHTML = data.html || "";
  const root = template.content.firstElementChild;
  const action = data.action;
  const selector = "#" + CSS.escape(data.target);
  let oob;
  if (action === "remove") {
    oob = document.createElement("div");
    oob.setAttribute("hx-swap-oob", "delete:" + selector);
  } else if (action === "replace") {
    if (!root) return;
    root.setAttribute("hx-swap-oob", "outerHTML:" + selector);
    oob = root;
  } else {
    oob = document.createElement("div");
    const style = action === "prepend" ? "afterbegin:" : "beforeend:";
    oob.setAttribute("hx-swap-oob", style + selector);
    oob.append(template.content);
  }
  const fragment = document.createDocumentFragment();
  fragment.append(oob);
  htmx.swap(document.body, fragment, { swapStyle: "none", ignoreTitle: true });
}

// ---- connections and channels (module-wide: they outlive Turbo renders of the elements) -----

const connections = new Map(); // endpoint -> Connection

class Connection {
  constructor(endpoint) {
    this.channels = new Map(); // name -> Channel
    this.instant = new Instant({ endpoint });
    this.instant.addListener("publication", (envelope) => {
      const channel = envelope && this.channels.get(envelope.channel);
      if (channel) channel.receive(envelope);
    });
    // Status events of instant.js, for the element's `state` attribute (a refusal stays
    // "denied" through the "unsubscribed" that follows it).
    for (const [type, state] of [["subscribed", "subscribed"], ["denied", "denied"],
      ["unsubscribed", "unsubscribed"]]) {
      this.instant.addListener(type, (detail) => {
        const channel = detail && this.channels.get(detail.channel);
        if (channel && !(state === "unsubscribed" && channel.state === "denied")) {
          channel.setState(state);
        }
      });
    }
    // While the connection fails (instant.js says why in the console and in "instant:state"
    // events), the elements not subscribed show "error"; they come back with "subscribed".
    this.instant.addListener("state", ({ state, cause }) => {
      for (const channel of this.channels.values()) {
        if (cause && channel.state !== "denied") channel.setState("error");
        else if (state === "connected" && channel.state === "error") channel.setState("connecting");
      }
    });
    this.ready = this.instant.start(); // resolves once connected (it never rejects)
  }

  channel(name) {
    let found = this.channels.get(name);
    if (!found) {
      found = new Channel(this, name);
      this.channels.set(name, found);
      this.ready.then(
        () => this.instant.subscribe(name),
        (error) => {
          console.error("instant-stream: cannot connect", error);
          found.setState("error");
        });
    }
    return found;
  }
}

class Channel {
  constructor(connection, name) {
    this.connection = connection;
    this.name = name;
    this.elements = new Set();
    this.queue = Promise.resolve(); // fragments are applied one after the other
    this.state = "connecting";
    // firstSignal / lastSignal: performance.now() of the first and latest refresh signal
    this.stats = { publications: 0, applied: 0, signals: 0, ignored: 0, refreshes: 0,
      firstSignal: null, lastSignal: null };
    // refresh scheduling
    this.pending = false;
    this.firstPending = 0;
    this.lastStart = -Infinity;
    this.timer = null;
    this.running = false;
  }

  get element() {
    for (const element of this.elements) if (element.isConnected) return element;
    return null;
  }

  setState(state) {
    this.state = state;
    for (const element of this.elements) element.setAttribute("state", state);
  }

  receive(envelope) {
    const element = this.element;
    if (!element) return; // no element on this page (Turbo navigated away): nothing to update
    this.stats.publications += 1;
    const data = envelope.data || {};
    if (data.action === "refresh") {
      this.stats.signals += 1;
      this.stats.lastSignal = performance.now();
      if (this.stats.firstSignal === null) this.stats.firstSignal = this.stats.lastSignal;
      if (isOwnRequest(data.request_tag)) {
        this.stats.ignored += 1;
        return;
      }
      this.signal();
    } else if (data.action && data.target) {
      // In order. On a Turbo page, after a navigation or form submission that is running (its
      // render would bring back what it fetched before); one caused by this tab's own htmx
      // request after that request's response.
      const own = data.request_tag && ownHtmxRequests.get(data.request_tag);
      this.queue = this.queue
        .then(() => (element.format === "turbo" ? turboIdle() : own))
        .then(() => (this.element || element).applyFragment(data))
        .catch((error) => console.error("instant-stream:", error));
    }
  }

  // A refresh signal: schedule one refresh (see the debounce rules at the top).
  signal() {
    this.pending = true;
    if (!this.firstPending) this.firstPending = performance.now();
    this.schedule();
  }

  schedule() {
    if (this.running || !this.pending) return;
    const element = this.element;
    const wait = element ? element.refreshWait : DEFAULT_WAIT;
    const interval = element ? element.refreshInterval : DEFAULT_INTERVAL;
    const now = performance.now();
    const at = Math.max(this.lastStart + interval,
      Math.min(now + wait, this.firstPending + interval));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fire(), Math.max(0, at - now));
  }

  async fire() {
    this.timer = null;
    if (this.running || !this.pending) return;
    const element = this.element;
    this.pending = false;
    this.firstPending = 0;
    if (!element) return;
    this.running = true;
    this.lastStart = performance.now();
    try {
      this.stats.refreshes += 1;
      await element.refresh();
    } catch (error) {
      console.error("instant-stream: refresh failed", error);
    } finally {
      this.running = false;
      this.schedule(); // signals that came during the refresh
    }
  }
}

// ---- the element ------------------------------------------------------------------------------

export class InstantStream extends HTMLElement {
  connectedCallback() {
    const name = this.getAttribute("channel");
    if (!name) {
      console.error("<instant-stream> needs a channel attribute");
      return;
    }
    if (this.format === "htmx") htmxLibrary(); // load it early when the page did not
    const endpoint = (this.getAttribute("endpoint") || DEFAULT_ENDPOINT).replace(/\/?$/, "/");
    let connection = connections.get(endpoint);
    if (!connection) {
      connection = new Connection(endpoint);
      connections.set(endpoint, connection);
    }
    this.channel_ = connection.channel(name);
    this.channel_.elements.add(this);
    this.setAttribute("state", this.channel_.state);
    this.channel_.schedule(); // a refresh that waited for this page
  }

  disconnectedCallback() {
    if (this.channel_) this.channel_.elements.delete(this);
  }

  get format() {
    return this.getAttribute("format") === "htmx" ? "htmx" : "turbo";
  }

  get refreshWait() {
    return numberAttribute(this, "refresh-wait", DEFAULT_WAIT);
  }

  get refreshInterval() {
    return numberAttribute(this, "refresh-interval", DEFAULT_INTERVAL);
  }

  /** Counters of this element's channel on this page (kept across Turbo renders). */
  get stats() {
    return this.channel_ ? { ...this.channel_.stats } : null;
  }

  async applyFragment(data) {
    const event = new CustomEvent("instant:before-stream", {
      bubbles: true, cancelable: true,
      detail: { action: data.action, target: data.target, html: data.html, data },
    });
    if (!this.dispatchEvent(event)) return;
    if (this.format === "htmx") applyHtmx(await htmxLibrary(), data);
    else applyTurbo(await turbo(), data);
    if (this.channel_) this.channel_.stats.applied += 1;
  }

  async refresh() {
    const event = new CustomEvent("instant:refresh", {
      bubbles: true, cancelable: true, detail: { channel: this.getAttribute("channel") },
    });
    if (this.format === "turbo") {
      if (this.dispatchEvent(event)) await turboRefresh();
    } else {
      // The htmx requests the event starts: the refresh lasts until they are answered, so the
      // next one never lands on a request in flight (htmx would queue it on an element the
      // answer may replace, and drop it).
      await htmxRequestsDuring(() => this.dispatchEvent(event));
    }
  }
}

/** Run fn(); resolve when the htmx requests it started synchronously have been answered and
 *  their content settled (htmx processes new elements, e.g. a new hx-trigger, at settle). */
function htmxRequestsDuring(fn) {
  const answered = [];
  const started = (event) => {
    const elt = event.target;
    const xhr = event.detail && event.detail.xhr;
    answered.push(new Promise((resolve) => {
      const timer = setTimeout(done, VISIT_TIMEOUT);
      function done(after) {
        if (after && after.detail && after.detail.xhr !== xhr) return;
        clearTimeout(timer);
        elt.removeEventListener("htmx:afterRequest", done);
        nextEvent(["htmx:afterSettle"], SETTLE_TIMEOUT).then(resolve);
      }
      elt.addEventListener("htmx:afterRequest", done); // on the element: it may be swapped out
    }));
  };
  document.addEventListener("htmx:beforeRequest", started);
  try {
    fn();
  } finally {
    document.removeEventListener("htmx:beforeRequest", started);
  }
  return Promise.all(answered);
}

function numberAttribute(element, name, fallback) {
  const value = Number(element.getAttribute(name));
  return element.hasAttribute(name) && Number.isFinite(value) && value >= 0 ? value : fallback;
}

if (!customElements.get("instant-stream")) customElements.define("instant-stream", InstantStream);
