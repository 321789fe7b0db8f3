// agentlog operators' dashboard: live figures over server-sent events, charts with uPlot.
"use strict";

// Re-drive buttons (dead letters): POST, then show what became of it.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-redrive]");
  if (!button) return;
  button.disabled = true;
  button.textContent = "Re-driving…";
  const response = await fetch(button.dataset.redrive, {
    method: "POST",
    headers: { "X-Agentlog-Dashboard": "1" },
    credentials: "same-origin",
  });
  if (response.status === 202) {
    // Recorded, not decided yet (the billing decider is down or behind): shown once it is.
    button.replaceWith("re-drive requested");
  } else if (response.ok) {
    const done = await response.json();
    button.replaceWith("re-driven to " + done.topic + " " + done.partition + ":" + done.offset);
    setTimeout(() => window.location.reload(), 2000); // then its outcome, once processed
  } else {
    const problem = await response.json().catch(() => ({ title: response.statusText }));
    button.disabled = false;
    button.textContent = "Re-drive";
    button.insertAdjacentText("afterend", " " + (problem.detail || problem.title));
  }
});

(function () {
  const page = document.body.dataset.page;
  const initial = document.getElementById("initial");
  if (!initial) return;
  let data = JSON.parse(initial.textContent);
  const live = document.getElementById("live");

  function text(id, value) {
    const el = document.getElementById(id);
    if (el) el.textContent = value;
  }
  function ms(v) { return v === null || v === undefined ? "-" : Math.round(v).toLocaleString() + " ms"; }
  function cell(row, value, className) {
    const td = row.insertCell();
    if (value instanceof Node) td.appendChild(value); else td.textContent = value;
    if (className) td.className = className;
    return td;
  }
  function link(href, label) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = label;
    return a;
  }
  function code(value) {
    const c = document.createElement("code");
    c.textContent = value;
    return c;
  }
  function rows(tableId, items, fill, empty, key) {
    const body = document.querySelector("#" + tableId + " tbody");
    if (!body) return;
    const before = new Set([...body.querySelectorAll("tr[data-key]")].map((r) => r.dataset.key));
    body.replaceChildren();
    if (!items.length) {
      const tr = body.insertRow();
      tr.className = "empty";
      const td = cell(tr, empty);
      td.colSpan = document.querySelectorAll("#" + tableId + " thead th").length;
      return;
    }
    for (const item of items) {
      const tr = body.insertRow();
      if (key) {
        tr.dataset.key = key(item);
        if (before.size && !before.has(tr.dataset.key)) tr.classList.add("fresh");
      }
      fill(tr, item);
    }
  }

  // -- overview -------------------------------------------------------------------------
  let chart = null;
  function chartData(d) {
    const xs = d.spans.map((m) => Date.parse(m.start) / 1000);
    return [xs, d.spans.map((m) => m.completed), d.spans.map((m) => m.failed), d.spans.map((m) => m.cancelled)];
  }
  function drawChart(d) {
    const box = document.getElementById("turns-chart");
    if (!box || typeof uPlot === "undefined") return;
    if (!d.spans.some((m) => m.completed || m.failed || m.cancelled)) {
      if (chart) { chart.destroy(); chart = null; }
      box.innerHTML = '<p class="empty">No turns ended in this window.</p>';
      return;
    }
    if (chart) { chart.setData(chartData(d)); return; }
    box.replaceChildren();
    chart = new uPlot({
      width: box.clientWidth - 16,
      height: 220,
      series: [
        {},
        { label: "completed", stroke: "#1f7a4d", width: 2, points: { show: false } },
        { label: "failed", stroke: "#b42318", width: 2, points: { show: false } },
        { label: "cancelled", stroke: "#a15c07", width: 1, points: { show: false } },
      ],
      axes: [{}, { label: d.span === 1 ? "turns / min" : "turns / " + d.span + " min" }],
    }, chartData(d), box);
  }
  function overview(d) {
    text("finished", d.finished);
    text("failure-rate", d.failure_rate === null ? "-" : (d.failure_rate * 100).toFixed(1) + " %");
    text("p50", ms(d.p50_ms));
    text("p99", ms(d.p99_ms));
    drawChart(d);
    rows("tenants", d.tenants, (tr, t) => {
      cell(tr, link("/dashboard/turns?tenant=" + encodeURIComponent(t.tenant_id), t.name));
      cell(tr, t.turns); cell(tr, t.failed); cell(tr, t.input_tokens); cell(tr, t.output_tokens);
      cell(tr, t.spent_today || "no plan");
    }, "No turn ended in this window.");
    rows("failures", d.failures, (tr, f) => {
      cell(tr, code(f.error_code)); cell(tr, f.turns);
    }, "No failures in this window.");
    rows("agents", d.agents, (tr, a) => {
      const turns = "/dashboard/turns?tenant=" + encodeURIComponent(a.tenant_id) + "&agent=" + encodeURIComponent(a.agent_id);
      cell(tr, a.agent_id ? link(turns, a.agent_name || a.agent_id) : "-");
      cell(tr, a.tenant_name); cell(tr, a.turns); cell(tr, a.failed); cell(tr, a.output_tokens);
    }, "No turn ended in this window.");
    rows("models", d.models, (tr, m) => {
      cell(tr, code(m.provider + "/" + m.model)); cell(tr, m.calls); cell(tr, m.failed);
      cell(tr, ms(m.p50_ms)); cell(tr, ms(m.p99_ms)); cell(tr, m.input_tokens); cell(tr, m.output_tokens);
    }, "No model was called in this window.");
    rows("recent", d.recent, (tr, t) => {
      tr.dataset.turn = t.turn_id;
      cell(tr, link("/dashboard/turns/" + t.turn_id, t.turn_id.slice(0, 8)));
      cell(tr, t.tenant_name || t.tenant_id);
      cell(tr, t.status, "status " + t.status);
      cell(tr, t.error_code ? code(t.error_code) : "");
      cell(tr, t.requested_at.slice(0, 19).replace("T", " "));
      cell(tr, ms(t.duration_ms));
    }, "No turns yet. They appear here as they are requested.", (t) => t.turn_id + ":" + t.status);
  }

  // -- pipeline -------------------------------------------------------------------------
  let previous = null;
  function pipeline(d) {
    rows("groups", d.groups, (tr, g) => {
      cell(tr, g.role); cell(tr, g.topic); cell(tr, g.partition);
      cell(tr, g.committed); cell(tr, g.end); cell(tr, g.lag, g.lag ? "behind" : "");
    }, "No consumer group has committed yet.");
    const seconds = previous ? (Date.parse(d.at) - Date.parse(previous.at)) / 1000 : 0;
    rows("topics", Object.keys(d.ends), (tr, topic) => {
      cell(tr, topic);
      cell(tr, Object.values(d.ends[topic]).join(", "));
      cell(tr, d.topics[topic]);
      const rate = previous && seconds > 0 && topic in previous.topics
        ? ((d.topics[topic] - previous.topics[topic]) / seconds).toFixed(1) + " records/s"
        : "measuring…";
      cell(tr, rate, "rate");
    }, "No topics found.");
    previous = d;
  }

  const views = { overview: overview, pipeline: pipeline };
  if (!(page in views)) return;
  window.addEventListener("load", () => views[page](data));
  const params = new URLSearchParams(window.location.search);
  const source = new EventSource("/dashboard/api/live?view=" + page + "&window=" + (params.get("window") || "1h"));
  source.addEventListener(page, (event) => {
    data = JSON.parse(event.data);
    views[page](data);
    live.hidden = false;
    live.className = "live";
    live.textContent = "live · " + new Date(data.at).toLocaleTimeString();
  });
  source.onerror = () => {
    live.hidden = false;
    live.className = "live down";
    live.textContent = "live updates paused, reconnecting…";
  };
})();
