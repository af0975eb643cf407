// Live calls: the page follows the server's event stream (snapshot, then updates) and ticks durations.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("live");
  if (!root || !window.EventSource) { return; }
  var list = document.getElementById("live-calls");
  var empty = document.getElementById("no-live-calls");
  var status = document.getElementById("live-status");
  var L = JSON.parse(root.dataset.labels);
  var admin = root.dataset.admin === "1";
  // Server time minus this browser's: durations count from the server's clock.
  var offset = Number(root.dataset.now) - Date.now() / 1000;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function two(n) { return (n < 10 ? "0" : "") + n; }

  function tick() {
    var now = Date.now() / 1000 + offset;
    list.querySelectorAll("article.live-call").forEach(function (card) {
      var since = Number(card.dataset.answeredAt);
      if (!card.dataset.answeredAt || card.classList.contains("ended")) { return; }
      var s = Math.max(0, Math.floor(now - since));
      card.querySelector("[data-duration]").textContent = two(Math.floor(s / 60)) + ":" + two(s % 60);
    });
    empty.hidden = list.querySelector("article.live-call") !== null;
  }

  function confirmEnd(event) {
    if (!window.confirm(L.confirm)) { event.preventDefault(); }
  }

  function card(call) {
    var node = el("article", "card live-call");
    node.dataset.callSid = call.call_sid;
    var head = el("div", "live-head");
    var state = el("span", "state");
    head.appendChild(state);
    var duration = el("span", "duration ltr");
    duration.setAttribute("data-duration", "");
    head.appendChild(duration);
    head.appendChild(el("span", "muted", L[call.direction] || call.direction));
    head.appendChild(el("span", "ltr number", call.number));
    if (admin) { head.appendChild(el("span", "muted business", L.names[call.business_id] || "")); }
    head.appendChild(el("span", "spacer"));
    var form = el("form", "end-call");
    form.method = "post";
    form.action = root.dataset.endUrl.replace("CALL_SID", encodeURIComponent(call.call_sid));
    var token = el("input");
    token.type = "hidden";
    token.name = "csrf_token";
    token.value = root.dataset.csrf;
    form.appendChild(token);
    var button = el("button", "danger", L.end_call);
    button.type = "submit";
    form.appendChild(button);
    form.addEventListener("submit", confirmEnd);
    head.appendChild(form);
    node.appendChild(head);
    node.appendChild(el("ol", "transcript"));
    list.appendChild(node);
    return node;
  }

  function addTurn(transcript, turn) {
    if (transcript.querySelector('[data-turn-id="' + turn.id + '"]')) { return; }
    var item = el("li", "turn turn-" + turn.speaker + (turn.interrupted ? " interrupted" : ""));
    item.dataset.turnId = String(turn.id);
    item.dataset.at = String(turn.at);
    item.appendChild(el("span", "who", L.speakers[turn.speaker] || turn.speaker));
    item.appendChild(el("span", "said", turn.text));
    // In the order said: a turn stored late goes before those said after it.
    var after = Array.prototype.find.call(transcript.children, function (other) {
      var at = Number(other.dataset.at);
      return at > turn.at || (at === turn.at && Number(other.dataset.turnId) > turn.id);
    });
    transcript.insertBefore(item, after || null);
  }

  function show(call) {
    var node = list.querySelector('article.live-call[data-call-sid="' + CSS.escape(call.call_sid) + '"]') || card(call);
    node.classList.remove("ended");
    node.dataset.answeredAt = call.answered_at === null ? "" : String(call.answered_at);
    var state = call.end_requested ? "ending" : (call.state || "greeting");
    var badge = node.querySelector(".state");
    badge.dataset.state = state;
    badge.textContent = L.states[state] || state;
    node.querySelector(".end-call button").disabled = call.end_requested;
    var transcript = node.querySelector(".transcript");
    call.turns.forEach(function (turn) { addTurn(transcript, turn); });
  }

  function ended(sid) {
    var node = list.querySelector('article.live-call[data-call-sid="' + CSS.escape(sid) + '"]');
    if (!node) { return; }
    node.classList.add("ended");
    var badge = node.querySelector(".state");
    badge.dataset.state = "ended";
    badge.textContent = L.ended;
    node.querySelector(".end-call button").disabled = true;
    setTimeout(function () { node.remove(); tick(); }, 10000);
  }

  function receive(event, snapshot) {
    var data = JSON.parse(event.data);
    offset = data.now - Date.now() / 1000;
    if (snapshot) {
      var live = {};
      data.calls.forEach(function (call) { live[call.call_sid] = true; });
      list.querySelectorAll("article.live-call").forEach(function (node) {
        if (!live[node.dataset.callSid]) { node.remove(); }
      });
    }
    data.calls.forEach(show);
    data.ended.forEach(ended);
    tick();
  }

  list.querySelectorAll("form.end-call").forEach(function (form) { form.addEventListener("submit", confirmEnd); });
  status.textContent = status.dataset.connecting;
  var source = new EventSource(root.dataset.events);
  source.addEventListener("open", function () {
    status.textContent = status.dataset.connected;
    status.dataset.live = "1";
  });
  source.addEventListener("error", function () {
    status.textContent = status.dataset.lost;
    status.dataset.live = "";
  });
  source.addEventListener("snapshot", function (event) { receive(event, true); });
  source.addEventListener("update", function (event) { receive(event, false); });
  setInterval(tick, 1000);
  tick();
});
