// farm-merge serve: draws each chart of the page with Vega-Lite from its canned query's
// JSON, and refreshes the page's tables and charts while simulations are logging.
// Values from the data reach the page only as text (textContent, Vega's own text marks).
"use strict";

const EMBED_OPTIONS = {
  renderer: "svg",
  actions: { export: true, source: false, compiled: false, editor: false },
};

// Steps are whole numbers: no tick between two of them.
const STEP_AXIS = { tickMinStep: 1, format: "d" };

function numeric(value) {
  return typeof value === "number" ? value : Number.NaN;
}

// Groups in the order of their parameter value (numbers as numbers), for a stable legend.
function groupDomain(rows) {
  const seen = new Map();
  for (const row of rows) {
    if (!seen.has(row.group)) seen.set(row.group, row.group_value);
  }
  return [...seen.entries()]
    .sort((a, b) => {
      const x = numeric(a[1]), y = numeric(b[1]);
      if (!Number.isNaN(x) && !Number.isNaN(y)) return x - y;
      return String(a[0]).localeCompare(String(b[0]));
    })
    .map((entry) => entry[0]);
}

function legendFor(domain, title) {
  return domain.length > 40 ? null : { title: title, columns: domain.length > 12 ? 2 : 1, symbolLimit: 40 };
}

const SPECS = {
  series(rows, options) {
    const domain = groupDomain(rows);
    return {
      width: "container", height: 340,
      data: { name: "rows", values: rows },
      mark: { type: "line", strokeWidth: 1.4, clip: true, interpolate: "linear" },
      encoding: {
        x: { field: "step_number", type: "quantitative", title: "step", axis: STEP_AXIS },
        y: { field: "value", type: "quantitative", title: options.metric },
        color: { field: "group", type: "nominal", scale: { domain: domain }, legend: legendFor(domain, options.by) },
        detail: { field: "simulation_id" },
        tooltip: [
          { field: "simulation_id" }, { field: "group", title: options.by },
          { field: "step_number", title: "step" }, { field: "value", title: options.metric },
        ],
      },
    };
  },
  final(rows, options) {
    const domain = groupDomain(rows);
    const x = { field: "group", type: "nominal", title: options.by, scale: { domain: domain },
                axis: { labelLimit: 120, labelAngle: domain.length > 8 ? -45 : 0 } };
    return {
      width: "container", height: 280,
      data: { name: "rows", values: rows.filter((r) => r.value !== null) },
      layer: [
        { mark: { type: "point", filled: true, size: 50, opacity: 0.75 },
          encoding: { x: x, y: { field: "value", type: "quantitative", title: "final " + options.metric },
                      color: { field: "group", type: "nominal", scale: { domain: domain }, legend: null },
                      tooltip: [{ field: "simulation_id" }, { field: "group", title: options.by },
                                { field: "step", title: "last step" }, { field: "value", title: options.metric }] } },
        { mark: { type: "tick", thickness: 2, size: 28, color: "#333" },
          encoding: { x: x, y: { aggregate: "mean", field: "value", type: "quantitative" },
                      tooltip: [{ field: "group", title: options.by },
                                { aggregate: "mean", field: "value", title: "mean" }] } },
      ],
    };
  },
  births_deaths(rows) {
    return {
      width: "container", height: 280,
      data: { name: "rows", values: rows },
      transform: [{ fold: ["births", "deaths"], as: ["event", "count"] }],
      mark: { type: "line", strokeWidth: 1.4 },
      encoding: {
        x: { field: "step", type: "quantitative", title: "step", axis: STEP_AXIS },
        y: { field: "count", type: "quantitative", title: "per step, all simulations" },
        color: { field: "event", type: "nominal", title: null,
                 scale: { domain: ["births", "deaths"], range: ["#2b8a3e", "#c92a2a"] } },
        tooltip: [{ field: "step" }, { field: "event" }, { field: "count" }, { field: "steps_per_point" }],
      },
    };
  },
  simulation_metrics(rows, options) {
    const metrics = options.metrics.filter((m) => rows.some((r) => r[m] !== null && r[m] !== undefined));
    return {
      data: { name: "rows", values: rows },
      columns: 3,
      concat: metrics.map((m) => ({
        width: 330, height: 150, title: m,
        mark: { type: "line", strokeWidth: 1.4 },
        encoding: { x: { field: "step_number", type: "quantitative", title: "step", axis: STEP_AXIS },
                    y: { field: m, type: "quantitative", title: null },
                    tooltip: [{ field: "step_number", title: "step" }, { field: m }] },
      })),
    };
  },
  population(rows) {
    return {
      width: "container", height: 260,
      data: { name: "rows", values: rows },
      mark: { type: "area", opacity: 0.85 },
      encoding: {
        x: { field: "step", type: "quantitative", title: "step", axis: STEP_AXIS },
        y: { field: "agents", type: "quantitative", stack: "zero", title: "agents alive" },
        color: { field: "agent_type", type: "nominal", title: "agent type" },
        tooltip: [{ field: "step" }, { field: "agent_type" }, { field: "agents" }],
      },
    };
  },
};

// Datasette's error messages may hold markup (a link to the setting, the SQL in a
// textarea): shown as text, without the SQL.
function errorText(error) {
  const parsed = new DOMParser().parseFromString(String(error), "text/html");
  parsed.querySelectorAll("textarea, pre").forEach((element) => element.remove());
  return (parsed.body.textContent || "").trim().slice(0, 300);
}

async function fetchRows(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok || body.ok === false) {
    throw new Error(errorText(body.error || response.statusText));
  }
  return body.rows.map((row) => Object.fromEntries(body.columns.map((c, i) => [c, row[i]])));
}

async function drawChart(figure) {
  const options = JSON.parse(figure.dataset.options);
  const plot = figure.querySelector(".fm-plot");
  const message = figure.querySelector(".fm-chart-message");
  try {
    const rows = await fetchRows(figure.dataset.url);
    if (rows.length === 0) {
      plot.replaceChildren();
      message.textContent = "No data yet.";
      message.hidden = false;
    } else {
      message.hidden = true;
      const spec = { $schema: "https://vega.github.io/schema/vega-lite/v6.json",
                     ...SPECS[figure.dataset.kind](rows, options) };
      const result = await vegaEmbed(plot, spec, EMBED_OPTIONS);
      if (figure.fmView) figure.fmView.finalize();
      figure.fmView = result.view;
    }
    figure.dataset.rendered = String(rows.length);
  } catch (error) {
    message.textContent = "Could not draw this chart: " + error.message;
    message.hidden = false;
    figure.dataset.rendered = "error";
  }
}

// The parts of the page that change while simulations log, fetched again whole: the
// server renders them (and escapes what they hold) exactly as on the first load.
async function refreshParts() {
  const response = await fetch(window.location.href, { cache: "no-store" });
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const part of document.querySelectorAll("[data-refresh-part]")) {
    const replacement = fresh.querySelector(`[data-refresh-part="${part.dataset.refreshPart}"]`);
    if (replacement) part.replaceWith(document.importNode(replacement, true));
  }
}

async function refresh() {
  document.body.dataset.refreshing = "true";
  try {
    await Promise.all([refreshParts(), ...[...document.querySelectorAll(".fm-chart")].map(drawChart)]);
  } finally {
    document.body.dataset.refreshing = "false";
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  }
}

function setUp() {
  const charts = [...document.querySelectorAll(".fm-chart")];
  Promise.all(charts.map(drawChart)).then(() => { document.body.dataset.chartsDrawn = "true"; });
  const box = document.querySelector(".fm-refresh");
  if (!box) return;
  const seconds = Number(box.dataset.refreshS) || 5;
  const live = box.querySelector(".fm-live");
  box.querySelector(".fm-refresh-now").addEventListener("click", refresh);
  let busy = false;
  window.setInterval(async () => {
    if (!live.checked || busy || document.hidden) return;
    busy = true;
    try { await refresh(); } finally { busy = false; }
  }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", setUp);
