// The demo page: renders live events from instant_signals into the DOM.
import { Instant } from "../instant_signals/instant.js";

const $ = (selector) => document.querySelector(selector);
const instant = new Instant({ endpoint: "/instant/", userChannels: ["$user:{user}"] });
// For the browser test and for curious developers: every envelope this page received.
window.demo = { instant, events: [] };

function item(list, pk) {
  let li = list.querySelector(`li[data-pk="${pk}"]`);
  const created = !li;
  if (created) {
    li = document.createElement("li");
    li.dataset.pk = pk;
  }
  return [li, created];
}

function flash(li) {
  li.classList.remove("flash");
  void li.offsetWidth; // restart the animation
  li.classList.add("flash");
}

function showNote(fields) {
  const [li, created] = item($("#feed"), fields.id);
  li.innerHTML = '<span class="text"></span> <small class="author"></small>';
  li.querySelector(".text").textContent = fields.text;
  li.querySelector(".author").textContent = `— ${fields.author}`;
  if (created) $("#feed").prepend(li);
  flash(li);
}

function showTask(fields) {
  const list = $("#my-tasks");
  const [li, created] = item(list, fields.id);
  li.innerHTML = '<input type="checkbox"> <span class="title"></span>';
  li.querySelector(".title").textContent = fields.title;
  li.querySelector("input").checked = fields.done;
  li.classList.toggle("done", fields.done);
  if (created) list.append(li);
  flash(li);
}

function remove(list, pk) {
  const li = list.querySelector(`li[data-pk="${pk}"]`);
  if (li) li.remove();
}

function logEvent(envelope) {
  window.demo.events.push(envelope);
  const li = document.createElement("li");
  const data = envelope.data || {};
  li.textContent = `${envelope.channel}: ${envelope.bucket || "-"} ${envelope.event_class || ""} ` +
    `${data.pk !== undefined ? "#" + data.pk : ""} ${envelope.message || ""}`;
  $("#events").prepend(li);
}

instant.addListener("publication", logEvent);

instant.on("board.note", "*", (data) => {
  if (data.event === "deleted") remove($("#feed"), data.pk);
  else showNote(data.fields);
});

instant.on("board.task", "*", (data, envelope) => {
  if (envelope.channel === "$staff") {
    const li = document.createElement("li");
    const changed = data.changed ? ` (was ${JSON.stringify(data.changed)})` : "";
    li.textContent = `task #${data.pk} of user ${data.fields.owner_id} ${data.event}: ` +
      `${data.fields.title}${data.fields.done ? " ✓" : ""}${changed}`;
    $("#staff-log").prepend(li);
    return;
  }
  if (data.event === "deleted") remove($("#my-tasks"), data.pk);
  else showTask(data.fields);
});

// Custom events sent with publish("feed", "Hello") show up in the event list only.

function renderChannels() {
  $("#channels").textContent = instant.subscribedChannels().join(", ") || "none";
  $("#staff-section").hidden = !instant.subscribedChannels().includes("$staff");
}

instant.addListener("state", ({ state }) => {
  $("#state").textContent = state;
  document.body.dataset.state = state;
});
instant.addListener("subscribed", renderChannels);
instant.addListener("unsubscribed", renderChannels);

async function showIdentity(username) {
  $("#who").textContent = username || "anonymous";
  document.body.dataset.user = username || "";
  $("#login-form").hidden = !!username;
  $("#logout-box").hidden = !username;
  $("#my-section").hidden = !username;
  $("#my-tasks").replaceChildren();
  $("#staff-log").replaceChildren();
  if (username) {
    const answer = await fetch("/tasks/", { credentials: "same-origin" }).then((r) => r.json());
    for (const task of answer.tasks || []) showTask(task);
  }
  renderChannels();
}

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
  const username = form.username.value;
  try {
    await instant.login(username, form.password.value);
    form.reset();
    await showIdentity(username);
  } catch (error) {
    $("#login-error").textContent = error.status === 401 ? "wrong username or password" : String(error);
  }
});

$("#logout").addEventListener("click", async () => {
  await instant.logout();
  await showIdentity("");
});

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

instant.start().then(renderChannels, (error) => {
  $("#state").textContent = `failed: ${error}`;
});
