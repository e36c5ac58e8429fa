// Tandem dashboard: live figures by short polling, per-stage progress charts drawn as SVG,
// and confirmation before destructive actions. No build step, no dependencies.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var POLL_MS = 2000;
  var STATES = ["active", "downloaded", "failed", "rolled_back"];

  function el(name, attrs) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  // One row per stage: a bar as wide as the devices targeted, split by state.
  function drawChart(container, stages) {
    var rowH = 22, labelW = 110, width = 640, barW = width - labelW - 120;
    var svg = el("svg", { viewBox: "0 0 " + width + " " + (stages.length * rowH + 4), "aria-hidden": "true" });
    stages.forEach(function (s, i) {
      var y = i * rowH + 2;
      var label = el("text", { x: 0, y: y + 14, "class": "label" });
      label.textContent = "stage " + s.stage + " (" + s.percent + "%)";
      svg.appendChild(label);
      svg.appendChild(el("rect", { x: labelW, y: y, width: barW, height: rowH - 6, "class": "seg-rest" }));
      var total = Math.max(s.targeted, STATES.reduce(function (n, k) { return n + s[k]; }, 0), 1);
      var x = labelW;
      STATES.forEach(function (k) {
        var w = barW * s[k] / total;
        if (w > 0) {
          var seg = el("rect", { x: x, y: y, width: w, height: rowH - 6, "class": "seg-" + k });
          var title = el("title", {});
          title.textContent = k.replace("_", " ") + ": " + s[k];
          seg.appendChild(title);
          svg.appendChild(seg);
          x += w;
        }
      });
      var figure = el("text", { x: labelW + barW + 6, y: y + 14, "class": "label" });
      figure.textContent = s.active + " / " + s.targeted + " active";
      svg.appendChild(figure);
    });
    container.replaceChildren(svg);
  }

  function fieldsOf(data) {
    var fields = {};
    if (data.fleet) {
      Object.keys(data.fleet).forEach(function (k) { fields["fleet-" + k] = data.fleet[k]; });
    }
    (data.deployments || []).forEach(function (d) {
      ["state", "state_reason", "stage", "health"].forEach(function (k) { fields["dep-" + d.id + "-" + k] = d[k]; });
      d.stages.forEach(function (s) {
        ["targeted"].concat(STATES).forEach(function (k) { fields["dep-" + d.id + "-" + s.stage + "-" + k] = s[k]; });
      });
    });
    return fields;
  }

  function apply(root, data) {
    var fields = fieldsOf(data);
    root.querySelectorAll("[data-field]").forEach(function (node) {
      var value = fields[node.dataset.field];
      if (value !== undefined && node.textContent !== String(value)) { node.textContent = String(value); }
    });
    var byId = {};
    (data.deployments || []).forEach(function (d) { byId[d.id] = d; });
    root.querySelectorAll("[data-chart]").forEach(function (node) {
      var d = byId[node.dataset.chart];
      if (d) { drawChart(node, d.stages); }
    });
  }

  function poll(root) {
    var url = root.dataset.live;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location.assign("/dashboard/login"); throw new Error("logged out"); }
          return r.json();
        })
        .then(function (data) { apply(root, data); root.dataset.refreshed = String(Date.now()); })
        .catch(function () { /* the next tick retries */ })
        .finally(function () { window.setTimeout(tick, POLL_MS); });
    }
    window.setTimeout(tick, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chart]").forEach(function (node) {
      drawChart(node, JSON.parse(node.dataset.stages));
    });
    document.querySelectorAll("[data-live]").forEach(poll);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
      });
    });
  });
})();
