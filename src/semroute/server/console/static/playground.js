// Playground: re-render the decision as the query is typed (a server-rendered fragment), and
// send the query through the gateway on request (with the page's CSRF token).
"use strict";
(function () {
  var form = document.getElementById("query-form");
  var box = document.getElementById("decision");
  var answer = document.getElementById("answer");
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var timer = null, seq = 0;

  function params() {
    var p = new URLSearchParams(new FormData(form));
    if (!document.getElementById("tools").checked) p.delete("tools");
    return p;
  }
  function refresh() {
    var p = params(), mine = ++seq;
    history.replaceState(null, "", "/ui?" + p.toString());
    fetch("/ui/decision?" + p.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { if (mine === seq) box.innerHTML = html; })
      .catch(function () {});
  }
  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(refresh, 150);
  });
  form.addEventListener("submit", function (e) { e.preventDefault(); refresh(); });
  document.getElementById("send").addEventListener("click", function () {
    var p = params(), body = {};
    ["q", "task", "tier", "max_cost"].forEach(function (k) { body[k] = p.get(k) || ""; });
    body.tools = p.get("tools") === "1";
    answer.hidden = false;
    answer.textContent = "Sending…";
    fetch("/ui/send", {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body)
    }).then(function (r) { return r.json(); }).then(function (d) {
      answer.textContent = d.error ? "Error: " + d.error
        : d.model + " ($" + (d.cost_usd == null ? "?" : d.cost_usd.toFixed(6)) + "):\n" + d.answer;
    }).catch(function (e) { answer.textContent = "Error: " + e; });
  });
})();
