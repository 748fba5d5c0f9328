// Traffic: poll the server's one-second aggregate and redraw small SVG charts. The server does
// the counting, so the page costs the same at 5 or 500 requests per second.
"use strict";
(function () {
  var NS = "http://www.w3.org/2000/svg";
  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, parent, ns) {
    var e = ns ? document.createElementNS(NS, tag) : document.createElement(tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v, digits) { return v == null ? "–" : Number(v).toFixed(digits); }

  function line(svg, values) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var nums = values.filter(function (v) { return v != null; });
    var top = Math.max.apply(null, nums.concat([0])), max = top || 1;
    var step = 300 / Math.max(1, values.length - 1);
    var pts = values.map(function (v, i) {
      return (i * step).toFixed(1) + "," + (75 - (v || 0) / max * 68).toFixed(1);
    });
    el("polyline", { points: pts.join(" ") }, svg, true);
    var label = svg.parentNode.querySelector(".max");
    if (label) label.textContent = nums.length ? "· max " + Number(top.toPrecision(3)) : "";
    svg.setAttribute("data-last", String(values[values.length - 1]));
  }

  function bars(box, rows, stacked) {
    box.textContent = "";
    if (!rows.length) { box.textContent = "No data yet."; return; }
    rows.forEach(function (r) {
      var row = el("div", { "class": "row" }, box);
      el("span", { "class": "name", title: r.name }, row).textContent = r.name;
      var track = el("span", { "class": "track" }, row);
      r.parts.forEach(function (p) {
        var f = el("span", { "class": "fill " + (p.cls || "") }, track);
        f.style.width = (Math.max(0, Math.min(1, p.share)) * 100).toFixed(1) + "%";
        f.title = p.title || "";
      });
      el("span", {}, row).textContent = r.label;
    });
    box.setAttribute("data-rows", String(rows.length));
  }

  function shares(counts) {
    var total = 0, k;
    for (k in counts) total += counts[k];
    return Object.keys(counts).map(function (name) {
      var s = total ? counts[name] / total : 0;
      return { name: name, parts: [{ share: s }], label: (s * 100).toFixed(1) + "%" };
    });
  }

  function verdicts(groups) {
    return Object.keys(groups || {}).map(function (name) {
      var g = groups[name], n = (g.win || 0) + (g.tie || 0) + (g.loss || 0);
      return {
        name: name, label: n ? Math.round(100 * (g.win || 0) / n) + "% win" : "no verdict",
        parts: ["win", "tie", "loss"].map(function (v) {
          return { cls: v, share: n ? (g[v] || 0) / n : 0, title: v + ": " + (g[v] || 0) };
        })
      };
    });
  }

  function draw(d) {
    $("rps").textContent = fmt(d.rps_last, 0) + " (avg " + fmt(d.rps, 1) + ")";
    $("cpr").textContent = d.cost_per_request == null ? "–" : "$" + d.cost_per_request.toPrecision(3);
    $("fbr").textContent = d.fallback_rate == null ? "–" : (d.fallback_rate * 100).toFixed(1) + "%";
    $("blocked").textContent = d.blocked + " / " + d.over_budget;
    $("latency").textContent = fmt(d.latency_ms.p50, 0) + " / " + fmt(d.latency_ms.p90, 0) + " / " + fmt(d.latency_ms.p99, 0) + " ms";
    $("total").textContent = String(d.requests);
    line($("chart-rps"), d.series.rps);
    line($("chart-cost"), d.series.cost_per_request);
    line($("chart-fallback"), d.series.fallback_rate);
    line($("chart-blocked"), d.series.blocked);
    bars($("chart-routes"), shares(d.routes));
    bars($("chart-models"), shares(d.models));
    bars($("chart-quality"), verdicts(d.quality.routes));
    bars($("chart-tiers"), verdicts(d.quality.tiers));
    bars($("chart-feedback"), Object.keys(d.feedback).map(function (name) {
      var f = d.feedback[name], s = f.mean_score;
      return { name: name, parts: [{ share: s == null ? 0 : (s + 1) / 2, cls: s != null && s < 0 ? "loss" : "win" }],
               label: (s == null ? "–" : s.toFixed(2)) + " (" + f.count + ")" };
    }));
    var pills = $("breakers");
    pills.textContent = "";
    Object.keys(d.breakers).forEach(function (m) {
      el("span", { "class": d.breakers[m] }, pills).textContent = m + ": " + d.breakers[m].replace("_", "-");
    });
    $("updated").textContent = "updated " + new Date(d.time * 1000).toLocaleTimeString();
  }

  function poll() {
    fetch("/ui/traffic.json", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(draw)
      .catch(function (e) { $("updated").textContent = "no data (" + e + ")"; })
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
