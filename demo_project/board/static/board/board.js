// The demo page: live lists from instant_signals' collection(), who is online from presence(),
// and a log of every event received.
import { Instant } from "../instant_signals/instant.js";

const $ = (selector) => document.querySelector(selector);
// Of the channels get_token/ lists, this page follows the feed and the staff log; the
// collections below add their own channels (the user's tasks, the team).
const instant = new Instant({ endpoint: "/instant/", channels: ["feed", "$staff"] });
// For the browser test and for curious developers: every envelope this page received.
window.demo = { instant, events: [] };

// ---- live lists -------------------------------------------------------------------------------

// Notes: public, newest first. Tasks: the logged-in user's own ("{user}": their id).
const notes = instant.collection("feed", { model: "board.note", order: "-created" });
const tasks = instant.collection("$user:{user}", { model: "board.task", order: "created" });
window.demo.notes = notes;
window.demo.tasks = tasks;

// Keep a <ul> in the order of a collection's rows, one <li data-pk> per row, re-rendering
// only the rows that changed (and flashing them).
function renderList(list, collection, change, fill) {
  const changed = change.row ? String(change.row.pk) : null;
  const wanted = new Set();
  let previous = null;
  for (const row of collection.rows) {
    const pk = String(row.pk);
    wanted.add(pk);
    let li = list.querySelector(`:scope > li[data-pk="${pk}"]`);
    const created = !li;
    if (created) {
      li = document.createElement("li");
      li.dataset.pk = pk;
    }
    if (created || pk === changed || change.type === "reset") fill(li, row.fields);
    const next = previous ? previous.nextSibling : list.firstChild;
    if (next !== li) list.insertBefore(li, next);
    if (pk === changed) flash(li);
    previous = li;
  }
  for (const li of [...list.children]) if (!wanted.has(li.dataset.pk)) li.remove();
}

function flash(li) {
  li.classList.remove("flash");
  void li.offsetWidth; // restart the animation
  li.classList.add("flash");
}

function fillNote(li, fields) {
  li.innerHTML = '<span class="text"></span> <small class="author"></small>';
  li.querySelector(".text").textContent = fields.text;
  li.querySelector(".author").textContent = `— ${fields.author}`;
}

function fillTask(li, fields) {
  li.innerHTML = '<input type="checkbox"> <span class="title"></span>';
  li.querySelector(".title").textContent = fields.title;
  li.querySelector("input").checked = fields.done;
  li.classList.toggle("done", fields.done);
}

notes.onChange((change) => renderList($("#feed"), notes, change, fillNote));
tasks.onChange((change) => renderList($("#my-tasks"), tasks, change, fillTask));

// ---- the team and who is online (logged-in users only) ------------------------------------------

let team = null;
let online = null;

function fillMember(li, fields) {
  li.innerHTML = '<span class="online-dot"></span><span class="name"></span>';
  li.querySelector(".name").textContent = fields.username;
  if (fields.is_staff) li.insertAdjacentHTML("beforeend", '<span class="badge">staff</span>');
  const seen = document.createElement("small");
  seen.className = "muted";
  seen.textContent = fields.last_login ? ` · last login ${fields.last_login.slice(0, 16).replace("T", " ")}` : "";
  li.append(seen);
  li.classList.toggle("online", !!online && online.has(fields.id));
}

function renderOnline() {
  const users = online ? online.users : [];
  const box = $("#online");
  box.replaceChildren();
  for (const user of users) {
    const span = document.createElement("span");
    span.className = "user";
    span.dataset.user = user.user;
    const tabs = user.connections > 1 ? ` (${user.connections} tabs)` : "";
    span.textContent = `${(user.info && user.info.name) || "user " + user.user}${tabs}`;
    box.append(span);
  }
  if (!users.length) box.textContent = "nobody";
  for (const li of $("#team").children) li.classList.toggle("online", !!online && online.has(li.dataset.pk));
}

function followTeam(loggedIn) {
  if (loggedIn && !team) {
    team = instant.collection("$team:members", { model: "auth.user", order: "username" });
    online = instant.presence("$team:members");
    team.onChange((change) => renderList($("#team"), team, change, fillMember));
    online.onChange(renderOnline);
  } else if (!loggedIn && team) {
    team.close();
    online.close();
    team = online = null;
    $("#team").replaceChildren();
    renderOnline();
  }
  window.demo.team = team;
  window.demo.online = online;
}

// ---- other events -------------------------------------------------------------------------------

function logEvent(envelope) {
  window.demo.events.push(envelope);
  const li = document.createElement("li");
  const data = envelope.data || {};
  li.textContent = `${envelope.channel}: ${envelope.bucket || "-"} ${envelope.event_class || ""} ` +
    `${data.pk !== undefined ? "#" + data.pk : ""} ${envelope.message || ""}`;
  $("#events").prepend(li);
}

instant.addListener("publication", logEvent);

// The staff log: every task change, as staff members see it in "$staff".
instant.on("board.task", "*", (data, envelope) => {
  if (envelope.channel !== "$staff") return;
  const li = document.createElement("li");
  const fields = data.fields || {};
  const changed = data.changed ? ` (was ${JSON.stringify(data.changed)})` : "";
  li.textContent = `task #${data.pk} of user ${fields.owner_id} ${data.event}: ` +
    `${fields.title || ""}${fields.done ? " ✓" : ""}${changed}`;
  $("#staff-log").prepend(li);
});

// Custom events sent with publish("feed", "Hello") show up in the event list only.

// ---- state, identity, forms ---------------------------------------------------------------------

function renderChannels() {
  const channels = instant.subscribedChannels();
  $("#channels").textContent = channels.join(", ") || "none";
  $("#staff-section").hidden = !channels.includes("$staff");
}

// The connection's state, from the "instant:state" event on document: a badge ("live",
// "reconnecting", "not allowed", ...) and, while something is wrong, the reason and its fix
// (the console says the same once). <html data-instant-state data-instant-cause> colours it
// (board.css).
const NOT_ALLOWED = ["origin_refused", "token_rejected"]; // Centrifugo refuses this page
const BADGE = { connecting: "connecting", connected: "live", reconnecting: "reconnecting",
  disconnected: "disconnected" };

document.addEventListener("instant:state", ({ detail }) => {
  $("#state").textContent = NOT_ALLOWED.includes(detail.cause) ? "not allowed" : BADGE[detail.state];
  document.body.dataset.state = detail.state;
  const problem = $("#problem");
  problem.hidden = !detail.reason;
  problem.textContent = detail.reason ? `${detail.reason}. Fix: ${detail.fix}.` : "";
});
instant.addListener("subscribed", renderChannels);
instant.addListener("unsubscribed", renderChannels);

// The user is whoever the session says (get_token/): after a login or logout here, in another
// tab, or in the admin.
instant.addListener("user", ({ user, info }) => {
  const name = user ? (info && info.name) || `user ${user}` : "";
  $("#who").textContent = name || "anonymous";
  document.body.dataset.user = name;
  $("#login-form").hidden = !!user;
  $("#logout-box").hidden = !user;
  $("#my-section").hidden = !user;
  $("#team-section").hidden = !user;
  $("#online-box").hidden = !user;
  $("#staff-log").replaceChildren();
  followTeam(!!user);
  renderChannels();
});

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": instant.csrfToken },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  $("#login-error").textContent = "";
  try {
    await instant.login(form.username.value, form.password.value);
    form.reset();
  } catch (error) {
    $("#login-error").textContent = error.status === 401 ? "wrong username or password" : String(error);
  }
});

$("#logout").addEventListener("click", () => instant.logout());

$("#note-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  await post("/notes/", { text: event.target.text.value });
  event.target.reset(); // the note itself arrives through Centrifugo, like everyone else's
});

$("#task-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  await post("/tasks/", { title: event.target.title.value });
  event.target.reset();
});

$("#my-tasks").addEventListener("change", async (event) => {
  const li = event.target.closest("li[data-pk]");
  if (li) await post(`/tasks/${li.dataset.pk}/toggle/`, {});
});

// Resolves once connected: while it cannot, the badge and #problem above say why.
instant.start().then(renderChannels);
