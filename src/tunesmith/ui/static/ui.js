/* tunesmith UI: charts (uPlot) from the JSON each page embeds, and the review workbench's keys.
   Every page reads without this file; it only draws charts and adds keyboard shortcuts. */
(function () {
  "use strict";
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

  function align(spec) {
    // every series has its own x; uPlot wants one shared x with nulls where a series has no point
    var series = spec.series || [];
    if (spec.group) {
      series = Object.keys(spec.group).map(function (k) { return {label: k, x: spec.x, y: spec.group[k]}; });
    }
    var xs = {};
    series.forEach(function (s) { (s.x || []).forEach(function (x) { xs[x] = true; }); });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var index = {};
    x.forEach(function (v, i) { index[v] = i; });
    var data = [x];
    series.forEach(function (s) {
      var y = x.map(function () { return null; });
      (s.x || []).forEach(function (xv, i) { y[index[xv]] = s.y[i]; });
      data.push(y);
    });
    if (spec.threshold !== null && spec.threshold !== undefined && x.length) {
      data.push(x.map(function () { return spec.threshold; }));
      series = series.concat([{label: spec.threshold_label || "alarm threshold", threshold: true}]);
    }
    return {data: data, series: series};
  }

  function draw(fig) {
    var host = fig.querySelector(".plot");
    var source = fig.querySelector("script[type='application/json']");
    if (!host || !source || typeof uPlot === "undefined") { return; }
    var spec = JSON.parse(source.textContent);
    var a = align(spec);
    if (!a.data[0].length) { host.textContent = "No data."; return; }
    var opts = {
      width: Math.max(260, Math.min(host.clientWidth || 600, 900)), height: 240,
      scales: {x: {time: !!spec.x_time}},
      axes: [{label: spec.x_label || ""}, {}],
      series: [{label: spec.x_label || (spec.x_time ? "time" : "x")}].concat(a.series.map(function (s, i) {
        return s.threshold
          ? {label: s.label, stroke: "#6b7280", dash: [6, 4], width: 1, points: {show: false}}
          : {label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true,
             points: {show: !!s.points || a.data[0].length < 30, size: 6}};
      })),
    };
    host.textContent = "";
    fig.uplot = new uPlot(opts, a.data, host);
    host.setAttribute("data-drawn", "true");
  }

  function drawAll(root) {
    (root || document).querySelectorAll("figure[data-chart]").forEach(draw);
  }

  // ------------------------------------------------------------------ review keys
  var cursor = 0;

  function pickers(form) { return Array.prototype.slice.call(form.querySelectorAll("[data-picker]")); }

  function focusPicker(form, i) {
    var all = pickers(form);
    if (!all.length) { return; }
    cursor = Math.max(0, Math.min(i, all.length - 1));
    all.forEach(function (p, j) {
      p.classList.toggle("current", j === cursor);
      if (j === cursor) { p.setAttribute("aria-current", "true"); } else { p.removeAttribute("aria-current"); }
    });
    all[cursor].scrollIntoView({block: "nearest"});
  }

  function submitWith(form, action) {
    var button = form.querySelector("button[name='action'][value='" + action + "']");
    if (form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
  }

  function onKey(ev) {
    var form = document.querySelector("form[data-keyboard]");
    var t = ev.target;
    var typing = t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
      (t.tagName === "INPUT" && t.type !== "radio" && t.type !== "checkbox"));
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var nav = function (key) {
      var link = document.querySelector("a[data-nav='" + key + "']");
      if (link) { ev.preventDefault(); window.location.href = link.href; }
    };
    if (ev.key === "j" || ev.key === "k") { nav(ev.key); return; }
    if (!form) { return; }
    var all = pickers(form);
    if (ev.key === "ArrowDown") { ev.preventDefault(); focusPicker(form, cursor + 1); return; }
    if (ev.key === "ArrowUp") { ev.preventDefault(); focusPicker(form, cursor - 1); return; }
    if (ev.key === "r") {
      ev.preventDefault();
      focusPicker(form, all.findIndex(function (p) { return p.hasAttribute("data-reason"); }));
      return;
    }
    if (/^[1-9]$/.test(ev.key)) {
      var radios = all[cursor] ? all[cursor].querySelectorAll("input[type='radio']") : [];
      var choice = radios[Number(ev.key) - 1];
      if (choice) {
        ev.preventDefault();
        choice.checked = true;
        if (!all[cursor].hasAttribute("data-reason")) { focusPicker(form, cursor + 1); }
      }
      return;
    }
    if (ev.key === "a") { ev.preventDefault(); submitWith(form, "approve"); return; }
    if (ev.key === "x") { ev.preventDefault(); submitWith(form, "reject"); return; }
    if (ev.key === "Enter" && !(t && (t.tagName === "BUTTON" || t.tagName === "A"))) { ev.preventDefault(); submitWith(form, "save"); }
  }

  function init() {
    drawAll(document);
    var form = document.querySelector("form[data-keyboard]");
    if (form) { cursor = 0; focusPicker(form, 0); }
    document.body.setAttribute("data-ready", "1");  // the keys work from here on (tests wait for it)
  }

  document.addEventListener("keydown", onKey);
  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("htmx:afterSwap", function (ev) { drawAll(ev.target); });
})();
