// Why the browser module cannot connect, in words a developer can act on.
//
// instant.js calls these when get_token/ fails, when the websocket does not open, or when
// Centrifugo ends the connection; each answer names the cause and its fix. The browser cannot
// see why a websocket handshake failed (no HTTP status), so `websocketProblem` asks first
// whether Centrifugo answers plain HTTP at that address (`reachable`): no answer means it is not
// running there; an answer means it refused this page's websocket, which is what Centrifugo
// does to an origin its client.allowed_origins does not list.

/**
 * @typedef {"offline" | "endpoint_not_found" | "django_unreachable" | "not_configured" | "server_error"
 *   | "http_error" | "bad_answer" | "centrifugo_unreachable" | "origin_refused"
 *   | "token_rejected" | "mixed_content" | "bad_ws_url" | "server_disconnected"} Cause
 *
 * What is wrong, and what to do about it.
 * @typedef {object} Problem
 * @property {Cause} cause    a stable name, for code (e.g. a CSS class or a badge)
 * @property {string} reason  what happened, in a sentence
 * @property {string} fix     what to do
 * @property {"error" | "warn"} level  "warn": may pass by itself (a restart, the network)
 * @property {unknown} [error] the underlying error, if any
 */

const PROBE_TIMEOUT = 5000; // ms: an address that neither answers nor refuses counts as down

/** @returns {boolean} whether the browser says it has no network */
export function offline() {
  return typeof navigator !== "undefined" && navigator.onLine === false;
}

/** @type {Problem} */
const OFFLINE = {
  cause: "offline", level: "warn",
  reason: "the browser is offline",
  fix: "none needed: the page reconnects by itself when the network is back",
};

/**
 * The Django side of a failed endpoint call (an InstantError from get_token/ and the like).
 * @param {string} endpoint  where the page expects instant_signals.urls ("/instant/")
 * @param {string} path      "get_token/"
 * @param {unknown} error
 * @returns {Problem}
 */
export function httpProblem(endpoint, path, error) {
  const url = endpoint + path;
  const status = error && typeof error === "object" && "status" in error ? Number(error.status) : 0;
  const body = error && typeof error === "object" && "body" in error ? error.body : null;
  const detail = body && typeof body === "object" && "detail" in body ? String(body.detail) : "";
  const code = body && typeof body === "object" && "error" in body ? String(body.error) : "";
  const said = detail ? `: ${detail}` : "";
  if (status === 404) {
    const prefix = endpoint.replace(/^\//, "");
    return {
      cause: "endpoint_not_found", level: "error", error,
      reason: `GET ${url} answered 404: instant_signals.urls is not mounted at ${endpoint}`,
      fix: `add path("${prefix}", include("instant_signals.urls")) to the urlpatterns of the ` +
        "project's urls.py, or give new Instant({endpoint}) the prefix where it is mounted",
    };
  }
  if (status === 0 && offline()) return { ...OFFLINE, error };
  if (status === 0) {
    return {
      cause: "django_unreachable", level: "warn", error,
      reason: `GET ${url} got no answer: the site is not running, or the network is down`,
      fix: "start the site (python manage.py runserver) and check the network; the page " +
        "retries by itself",
    };
  }
  if (code === "not_configured") {
    return {
      cause: "not_configured", level: "error", error,
      reason: `GET ${url} answered ${status}${said}`,
      fix: "set the CENTRIFUGO_* settings (python manage.py installws --write-settings FILE " +
        "writes them for the config it makes), then restart the site",
    };
  }
  if (status >= 200 && status < 300) {
    return {
      cause: "bad_answer", level: "error", error,
      reason: `GET ${url} did not answer with tokens: something else than instant_signals' ` +
        "get_token view answers there",
      fix: "give new Instant({endpoint}) the prefix where instant_signals.urls is mounted",
    };
  }
  if (status >= 500) {
    return {
      cause: "server_error", level: "warn", error,
      reason: `GET ${url} answered ${status}${said}`,
      fix: "see the site's log (runserver's output) for the traceback; the page retries by itself",
    };
  }
  return {
    cause: "http_error", level: "error", error,
    reason: `GET ${url} answered ${status}${said}`,
    fix: "get_token/ must answer every visitor, anonymous ones too: check what answers it " +
      "(a login-required middleware, a proxy)",
  };
}

/**
 * Whether something answers plain HTTP where the websocket URL points.
 * @param {string} wsUrl
 * @returns {Promise<boolean>}
 */
export async function reachable(wsUrl) {
  if (offline()) return false;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), PROBE_TIMEOUT);
  try {
    // no-cors: the answer stays opaque (its status is not readable), but it came.
    await fetch(wsUrl.replace(/^ws/, "http"), {
      mode: "no-cors", cache: "no-store", credentials: "omit", signal: controller.signal,
    });
    return true;
  } catch (e) {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A websocket to `wsUrl` that did not open.
 * @param {string} wsUrl
 * @param {boolean} answers  what reachable(wsUrl) said
 * @param {string} origin    the page's origin
 * @returns {Problem}
 */
export function websocketProblem(wsUrl, answers, origin) {
  if (offline()) return OFFLINE;
  if (!answers) {
    return {
      cause: "centrifugo_unreachable", level: "warn",
      reason: `Centrifugo does not answer at ${wsUrl}`,
      fix: "start it (python manage.py runws, or its service), and check that CENTRIFUGO_WS_URL " +
        "points at it; the page connects by itself once it answers",
    };
  }
  return {
    cause: "origin_refused", level: "error",
    reason: `Centrifugo answers at ${wsUrl} but refused this page's websocket: this page's ` +
      `origin ${origin} is most likely not in the config's client.allowed_origins`,
    fix: `add it (python manage.py installws --origin ${origin}, or edit client.allowed_origins ` +
      "in the config), then restart Centrifugo",
  };
}

/**
 * A page served over https cannot open a ws:// websocket (mixed content): null when it can.
 * @param {string} wsUrl
 * @param {string} protocol  the page's location.protocol
 * @returns {Problem | null}
 */
export function mixedContent(wsUrl, protocol) {
  if (protocol !== "https:" || !wsUrl.startsWith("ws:")) return null;
  return {
    cause: "mixed_content", level: "error",
    reason: `this https page may not open the unencrypted websocket ${wsUrl}`,
    fix: "serve Centrifugo over TLS and set CENTRIFUGO_WS_URL to its wss:// URL",
  };
}

/**
 * A websocket URL the client refuses before trying (`new Centrifuge` or `connect()` threw).
 * @param {string} wsUrl
 * @param {unknown} error
 * @returns {Problem}
 */
export function badWsUrl(wsUrl, error) {
  return {
    cause: "bad_ws_url", level: "error", error,
    reason: `cannot connect to the websocket URL ${JSON.stringify(wsUrl)}: ${error}`,
    fix: "set CENTRIFUGO_WS_URL to Centrifugo's websocket URL " +
      "(ws://host:port/connection/websocket), then restart the site",
  };
}

/**
 * A disconnect by Centrifugo that standard clients do not come back from (codes 3500-3999),
 * or null for one that is not a problem. 4500-4999 are the application's own (instant.js
 * handles 4501, the user's access changed).
 * @param {{code: number, reason: string}} ctx  centrifuge's "disconnected" context
 * @returns {Problem | null}
 */
export function disconnectProblem(ctx) {
  if (ctx.code === 3500) {
    return {
      cause: "token_rejected", level: "error",
      reason: "Centrifugo rejected the connection token (disconnect 3500, invalid token): the " +
        "site signs tokens with a CENTRIFUGO_HMAC_KEY that is not the config's " +
        "client.token.hmac_secret_key (a stale .env?)",
      fix: "make them the same (python manage.py check names the mismatch: " +
        "instant_signals.W016), then restart the site; the page retries by itself",
    };
  }
  if (ctx.code >= 3500 && ctx.code < 4000) {
    return {
      cause: "server_disconnected", level: "error",
      reason: `Centrifugo ended the connection for good (disconnect ${ctx.code}, ${ctx.reason})`,
      fix: "see Centrifugo's log for why; reload the page once it is fixed",
    };
  }
  return null;
}

/**
 * One console line of a problem: the cause, then its fix.
 * @param {Problem} problem
 */
export function describe(problem) {
  return `instant_signals: ${problem.reason}. Fix: ${problem.fix}.`;
}
