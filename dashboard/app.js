// hyper-stats dashboard: the fleet and guest views over graphite-web.
//
// Everything comes from Graphite through the dashboard server's proxy
// (/graphite/render, /graphite/metrics/find); the heavy lifting (which
// guests are worst, sums and means over the range) is asked of Graphite,
// so the page never downloads every guest's series. The whole view lives
// in the URL's fragment (#view=guest&host=..&guest=..&range=3600), so a
// link shows the same view to someone else.
//
// For the tests and the benchmark, the page keeps what it drew in
// window.hyperStats and marks `hs-fleet-ready` / `hs-guest-ready` with
// performance.mark when a view's first useful content is on screen.
'use strict';

/** Upper bounds (µs) of the agent's histogram buckets: a 1-2-5 ladder. */
const BOUNDS = [];
for (let d = 1; d <= 1e6; d *= 10) for (const m of [1, 2, 5]) BOUNDS.push(m * d);

/** Column widths (s) a heatmap or chart may use, all dividing a minute or a multiple of it. */
const STEPS = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200];

/**
 * The range a view shows unless the URL says otherwise: the last 15 min,
 * what an operator looking at the fleet wants first, and what Graphite
 * ranks 2,000 guests in quickly enough (see the README's Dashboard).
 */
const DEFAULT_RANGE_S = 900;

/** How many guests the fleet view's table shows by default. */
const DEFAULT_TOP = 20;

const state = { prefix: 'hyperstats', generation: 0 };
window.hyperStats = { fleet: null, heatmaps: {}, panels: {} };

// ---------- URL state ----------

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  return {
    view: p.get('view') === 'guest' ? 'guest' : 'fleet',
    range: Number(p.get('range')) || DEFAULT_RANGE_S,
    until: p.get('until') ? Number(p.get('until')) : null,
    host: p.get('host') || '',
    guest: p.get('guest') || '',
    vcpu: p.get('vcpu') || 'merged',
    top: Number(p.get('top')) || DEFAULT_TOP,
  };
}

function hashFor(v) {
  const p = new URLSearchParams();
  p.set('view', v.view);
  if (v.view === 'guest') {
    p.set('host', v.host);
    p.set('guest', v.guest);
    if (v.vcpu && v.vcpu !== 'merged') p.set('vcpu', v.vcpu);
  } else if (v.top && v.top !== DEFAULT_TOP) {
    p.set('top', v.top);
  }
  p.set('range', v.range);
  if (v.until) p.set('until', v.until);
  return '#' + p.toString();
}

/** The [from, until] unix seconds a view covers. */
function windowOf(v) {
  const until = v.until || Math.floor(Date.now() / 1000);
  return { from: until - v.range, until };
}

// ---------- Graphite ----------

async function graphite(path, params) {
  const body = new URLSearchParams();
  for (const [k, v] of params) body.append(k, v);
  const r = await fetch('/graphite/' + path, { method: path === 'render' ? 'POST' : 'GET', body: path === 'render' ? body : undefined });
  if (!r.ok) {
    const text = (await r.text()).trim().split('\n').slice(-1)[0].slice(0, 300);
    throw new Error(`graphite-web answered ${r.status} to ${path}: ${text}`);
  }
  return r.json();
}

/** Render `targets` over window `w` as JSON: [{target, datapoints: [[v, t]]}]. */
function render(targets, w, maxDataPoints) {
  const params = targets.map((t) => ['target', t]);
  params.push(['from', String(w.from)], ['until', String(w.until)], ['format', 'json']);
  if (maxDataPoints) params.push(['maxDataPoints', String(maxDataPoints)]);
  return graphite('render', params);
}

/** The metric tree's children matching `query` (a path with wildcards). */
async function find(query) {
  const r = await fetch('/graphite/metrics/find?' + new URLSearchParams({ query, format: 'treejson' }));
  if (!r.ok) throw new Error(`graphite-web answered ${r.status} to metrics/find: ${(await r.text()).trim().slice(0, 300)}`);
  return r.json();
}

/** The smallest step of STEPS giving at most `cols` columns over `range` s. */
function stepFor(range, cols) {
  return STEPS.find((s) => range / s <= cols) || STEPS[STEPS.length - 1];
}

// ---------- formatting ----------

function fmtUs(v) {
  if (v == null || Number.isNaN(v)) return '–';
  if (v < 1000) return `${d3.format('.3~r')(v)} µs`;
  if (v < 1e6) return `${d3.format('.3~r')(v / 1000)} ms`;
  return `${d3.format('.3~r')(v / 1e6)} s`;
}
const fmt = {
  us: fmtUs,
  ms: (v) => (v == null ? '–' : `${d3.format('.3~r')(v)} ms`),
  pct: (v) => (v == null ? '–' : `${d3.format('.3~r')(v)} %`),
  bytes: (v) => (v == null ? '–' : `${d3.format('.3~s')(v)}B`),
  rate: (v) => (v == null ? '–' : `${d3.format('.3~s')(v)}B/s`),
};

/** Time axis labels in 24-hour time, with the date once the range spans days. */
function timeTicks(w) {
  return d3.utcFormat(w.until - w.from > 86400 ? '%b %d %H:%M' : '%H:%M');
}

function boundLabel(i) {
  return `(${i === 0 ? '0' : fmtUs(BOUNDS[i - 1])}, ${fmtUs(BOUNDS[i])}]`;
}

function setStatus(msg, isError) {
  const s = document.getElementById('status');
  s.textContent = msg || '';
  s.className = isError ? 'error' : '';
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    // Through the CSSOM: the page's CSP refuses style attributes.
    else if (k === 'style') e.style.cssText = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

// ---------- charts ----------

const tip = () => document.getElementById('tooltip');
function showTip(ev, html) {
  const t = tip();
  t.hidden = false;
  t.innerHTML = html;
  const x = Math.min(ev.clientX + 14, window.innerWidth - t.offsetWidth - 8);
  t.style.left = `${x}px`;
  t.style.top = `${ev.clientY + 14}px`;
}
function hideTip() { tip().hidden = true; }

/** A sparkline of one series' datapoints into a new SVG. */
function sparkline(points, width = 140, height = 26) {
  const svg = d3.create('svg').attr('width', width).attr('height', height).attr('class', 'spark');
  const pts = (points || []).filter((p) => p[0] != null);
  if (pts.length < 2) return svg.node();
  const x = d3.scaleLinear().domain(d3.extent(points, (p) => p[1])).range([1, width - 1]);
  const y = d3.scaleLinear().domain([0, d3.max(pts, (p) => p[0]) || 1]).range([height - 2, 2]);
  svg.append('path').attr('d', d3.line().defined((p) => p[0] != null).x((p) => x(p[1])).y((p) => y(p[0]))(points));
  return svg.node();
}

/** A line chart of several series: [{name, datapoints}], values formatted with `f`. */
function lineChart(container, rendered, f, w) {
  const series = rendered.map((s) => ({ name: s.target, datapoints: s.datapoints }));
  const width = Math.max(container.clientWidth - 20, 300);
  const height = 150;
  const m = { top: 8, right: 10, bottom: 20, left: 58 };
  const x = d3.scaleUtc().domain([new Date(w.from * 1000), new Date(w.until * 1000)]).range([m.left, width - m.right]);
  const all = series.flatMap((s) => s.datapoints.filter((p) => p[0] != null).map((p) => p[0]));
  const y = d3.scaleLinear().domain([0, d3.max(all) || 1]).nice().range([height - m.bottom, m.top]);
  const colour = d3.scaleOrdinal(d3.schemeTableau10);
  const svg = d3.create('svg').attr('width', width).attr('height', height);
  svg.append('g').attr('class', 'axis').attr('transform', `translate(0,${height - m.bottom})`).call(d3.axisBottom(x).ticks(width / 90).tickFormat(timeTicks(w)));
  svg.append('g').attr('class', 'axis').attr('transform', `translate(${m.left},0)`).call(d3.axisLeft(y).ticks(4).tickFormat(f));
  const line = d3.line().defined((p) => p[0] != null).x((p) => x(new Date(p[1] * 1000))).y((p) => y(p[0]));
  for (const s of series) {
    svg.append('path').attr('class', 'series').attr('stroke', colour(s.name)).attr('d', line(s.datapoints));
  }
  container.append(svg.node());
  if (!series.length) container.append(el('p', { class: 'empty' }, 'no data in this range'));
  const legend = el('div', { class: 'legend' });
  for (const s of series) {
    const vals = s.datapoints.filter((p) => p[0] != null).map((p) => p[0]);
    legend.append(el('span', {}, el('i', { style: `background:${colour(s.name)}` }), `${s.name} `, el('b', {}, `mean ${f(d3.mean(vals))}, max ${f(d3.max(vals))}`)));
  }
  container.append(legend);
}

/**
 * A heatmap of bucket counts over time, with the p50/p99/max lines over it.
 * `columns`: [{t, counts: [21], total}], `lines`: [{name, datapoints}].
 */
function heatmap(container, data, what, w) {
  const width = Math.max(container.clientWidth - 20, 400);
  const height = 300;
  const m = { top: 8, right: 12, bottom: 22, left: 64 };
  const iw = width - m.left - m.right;
  const ih = height - m.top - m.bottom;
  const x = d3.scaleLinear().domain([w.from, w.until]).range([0, iw]);
  const xt = d3.scaleUtc().domain([new Date(w.from * 1000), new Date(w.until * 1000)]).range([0, iw]);
  const y = d3.scaleLog().domain([0.5, BOUNDS[BOUNDS.length - 1]]).range([ih, 0]);
  const lo = (i) => (i === 0 ? 0.5 : BOUNDS[i - 1]);
  const maxCount = d3.max(data.columns, (c) => d3.max(c.counts)) || 1;
  const colour = d3.scaleSequentialLog(d3.interpolateInferno).domain([1, Math.max(maxCount, 2)]);

  const wrap = el('div', { class: 'heatmap' });
  wrap.style.height = `${height}px`;
  const canvas = el('canvas', { width: iw, height: ih });
  canvas.style.left = `${m.left}px`;
  canvas.style.top = `${m.top}px`;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#f3f3f6';
  ctx.fillRect(0, 0, iw, ih);
  const cw = Math.max(x(w.from + data.step) - x(w.from), 1);
  for (const c of data.columns) {
    for (let i = 0; i < BOUNDS.length; i++) {
      if (!c.counts[i]) continue;
      ctx.fillStyle = colour(c.counts[i]);
      const y0 = y(BOUNDS[i]);
      ctx.fillRect(Math.floor(x(c.t)), Math.floor(y0), Math.ceil(cw), Math.ceil(y(lo(i)) - y0));
    }
  }
  wrap.append(canvas);

  const svg = d3.create('svg').attr('width', width).attr('height', height);
  const g = svg.append('g').attr('transform', `translate(${m.left},${m.top})`);
  g.append('g').attr('class', 'axis').attr('transform', `translate(0,${ih})`).call(d3.axisBottom(xt).ticks(width / 100).tickFormat(timeTicks(w)));
  g.append('g').attr('class', 'axis').call(d3.axisLeft(y).tickValues(BOUNDS.filter((b) => /^[15]/.test(String(b)))).tickFormat(fmtUs));
  const lineColour = { p50: '#00e5ff', p99: '#39ff14', max: '#ffffff' };
  const line = d3.line().defined((p) => p[0] != null && p[0] > 0).x((p) => x(p[1] + data.step / 2)).y((p) => y(Math.max(p[0], 0.5)));
  for (const s of data.lines) {
    g.append('path').attr('class', `pline ${s.target}`).attr('stroke', lineColour[s.target] || '#fff').attr('d', line(s.datapoints));
  }
  const overlay = g.append('rect').attr('class', 'overlay').attr('width', iw).attr('height', ih);
  const byT = new Map(data.columns.map((c) => [c.t, c]));
  overlay.on('mousemove', (ev) => {
    const [px, py] = d3.pointer(ev);
    const t = data.columns.length ? Math.floor((x.invert(px) - data.first) / data.step) * data.step + data.first : null;
    const v = y.invert(py);
    const i = Math.max(0, BOUNDS.findIndex((b) => v <= b));
    const c = byT.get(t);
    const count = c ? c.counts[i] : 0;
    const cum = c && c.total ? (100 * d3.sum(c.counts.slice(0, i + 1))) / c.total : 0;
    showTip(ev, `<b>${d3.utcFormat('%Y-%m-%d %H:%M:%S UTC')(new Date(t * 1000))}</b> (${data.step} s)<br>` +
      `${what} ${boundLabel(i)}<br>count <b class="tip-count">${count}</b> of ${c ? c.total : 0}<br>` +
      `cumulative <b class="tip-cum">${d3.format('.1f')(cum)} %</b>`);
  }).on('mouseleave', hideTip);
  wrap.append(svg.node());
  container.append(wrap);
  const legend = el('div', { class: 'legend' });
  for (const n of ['p50', 'p99', 'max']) legend.append(el('span', {}, el('i', { class: `l-${n}` }), `${n} (highest in a column) `));
  legend.append(el('span', {}, `colour: count per ${data.step} s and bucket, 1 to ${maxCount} (log scale); ${d3.sum(data.columns, (c) => c.total)} in range`));
  container.append(legend);
  // Where cell (column t, bucket i) is on screen, for the tests' hover.
  return (t, i) => {
    const r = canvas.getBoundingClientRect();
    return { x: r.left + x(t) + cw / 2, y: r.top + (y(BOUNDS[i]) + y(lo(i))) / 2 };
  };
}

/** Resolves after the browser has painted what is in the DOM now. */
function painted() {
  return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}

// ---------- fleet view ----------

async function fleetView(v, root, gen) {
  const w = windowOf(v);
  const P = state.prefix;
  const R = w.until - w.from;
  root.append(el('h1', {}, 'Fleet'));
  const summary = el('p', { class: 'summary' }, 'asking Graphite…');
  root.append(summary);
  const section = el('section', {}, el('h2', {}, `Worst ${v.top} guests by p99 vCPU run-queue wait`));
  const table = el('table', { class: 'fleet', 'data-from': String(w.from), 'data-until': String(w.until) });
  table.append(el('thead', {}, el('tr', {},
    el('th', {}, 'guest'), el('th', {}, 'host'),
    el('th', { class: 'num', title: 'highest per-second p99 of the vCPUs\u2019 run-queue waits in the range' }, 'run-queue wait p99, max'),
    el('th', { class: 'num', title: 'mean % of one host CPU the guest\u2019s vCPUs were runnable but waiting (steal): run-queue wait per second / 10,000' }, 'vCPU steal, mean'),
    el('th', { class: 'num', title: 'mean write latency of the slowest disk' }, 'disk write latency, mean'),
    el('th', { class: 'num', title: 'received + sent bytes per second over every interface' }, 'network, mean'))));
  const tbody = el('tbody');
  table.append(tbody);
  section.append(table);
  root.append(section);
  const hostsSection = el('section', {}, el('h2', {}, 'Every host and guest'));
  root.append(hostsSection);

  // find answers a wildcard's matches without saying which host each
  // belongs to: ask host by host (after the table, which matters first).
  const hostsP = find(`${P}.*`);
  // Which guests are worst is Graphite's work: one series each comes back.
  const worst = await render([`consolidateBy(highestMax(${P}.*.*.runq_latency_us.p99,${v.top}),'max')`], w, 120);
  if (gen !== state.generation) return;
  const guests = worst.map((s) => {
    const path = s.target.split('.');
    return { host: path[1], guest: path[2], p99: s.datapoints };
  });
  const targets = [];
  guests.forEach((g, i) => {
    const p = `${P}.${g.host}.${g.guest}`;
    targets.push(`alias(summarize(${p}.runq_latency_us.p99,"${R}s","max",true),"${i}|p99")`);
    targets.push(`alias(summarize(scale(${p}.runq_latency_us.sum,0.0001),"${R}s","avg",true),"${i}|steal")`);
    targets.push(`alias(summarize(maxSeries(${p}.block.*.wr.latency_mean_ms),"${R}s","avg",true),"${i}|disk")`);
    targets.push(`alias(summarize(sumSeries(${p}.net.*.*.bytes_per_s),"${R}s","avg",true),"${i}|net")`);
    targets.push(`alias(consolidateBy(scale(${p}.runq_latency_us.sum,0.0001),'max'),"${i}|steal-spark")`);
    targets.push(`alias(consolidateBy(sumSeries(${p}.net.*.*.bytes_per_s),'max'),"${i}|net-spark")`);
  });
  const details = targets.length ? await render(targets, w, 120) : [];
  if (gen !== state.generation) return;
  const byKey = new Map(details.map((s) => [s.target, s.datapoints]));
  const value = (i, k) => {
    const d = byKey.get(`${i}|${k}`);
    const pts = d ? d.filter((p) => p[0] != null) : [];
    return pts.length ? pts[0][0] : null;
  };
  const rows = [];
  guests.forEach((g, i) => {
    const href = hashFor({ ...v, view: 'guest', host: g.host, guest: g.guest, until: v.until });
    const vals = { p99: value(i, 'p99'), steal: value(i, 'steal'), disk: value(i, 'disk'), net: value(i, 'net') };
    rows.push({ ...g, values: vals });
    const cell = (k, f, spark) => {
      const td = el('td', { class: 'num', 'data-metric': k, 'data-value': vals[k] == null ? '' : String(vals[k]) }, el('span', {}, f(vals[k])));
      if (spark) td.prepend(sparkline(spark));
      return td;
    };
    const tr = el('tr', { 'data-host': g.host, 'data-guest': g.guest },
      el('td', {}, el('a', { href, class: 'guest-link' }, g.guest)), el('td', {}, g.host),
      cell('p99', fmtUs, g.p99), cell('steal', fmt.pct, byKey.get(`${i}|steal-spark`)),
      cell('disk', fmt.ms), cell('net', fmt.rate, byKey.get(`${i}|net-spark`)));
    tr.addEventListener('click', (ev) => { if (ev.target.tagName !== 'A') location.hash = href; });
    tbody.append(tr);
  });
  if (!guests.length) tbody.append(el('tr', {}, el('td', { colSpan: 6, class: 'empty' }, 'no guest has run-queue data in this range')));
  window.hyperStats.fleet = { from: w.from, until: w.until, rows };
  await painted();
  performance.mark('hs-fleet-ready');
  document.body.dataset.ready = 'fleet';

  const hostNodes = (await hostsP).filter((n) => !n.leaf).map((n) => n.text);
  const children = await Promise.all(hostNodes.map((h) => find(`${P}.${h}.*`)));
  if (gen !== state.generation) return;
  const hosts = hostNodes.map((h, i) => [h, children[i].filter((n) => !n.leaf && n.text !== 'agent').map((n) => n.text).sort(d3.ascending)])
    .sort((a, b) => d3.ascending(a[0], b[0]));
  const nGuests = d3.sum(hosts, (h) => h[1].length);
  summary.textContent = `${hosts.length} host${hosts.length === 1 ? '' : 's'}, ${nGuests} guest${nGuests === 1 ? '' : 's'} in Graphite; ${d3.utcFormat('%Y-%m-%d %H:%M')(new Date(w.from * 1000))} to ${d3.utcFormat('%Y-%m-%d %H:%M UTC')(new Date(w.until * 1000))}`;
  const list = el('div', { class: 'hosts' });
  for (const [host, paths] of hosts) {
    const ul = el('ul');
    for (const g of paths) {
      ul.append(el('li', { 'data-guest': g }, el('a', { href: hashFor({ ...v, view: 'guest', host, guest: g }) }, g)));
    }
    list.append(el('div', { class: 'host', 'data-host': host }, el('h3', {}, `${host} `, el('small', {}, `${paths.length}`)), ul));
  }
  hostsSection.append(list);
  window.hyperStats.fleet.hosts = hosts.map(([h, ps]) => ({ host: h, guests: ps }));
  await painted();
  performance.mark('hs-fleet-all');
  document.body.dataset.ready = 'fleet-all';
}

// ---------- guest view ----------

async function heatmapData(base, metric, w, step) {
  const [buckets, lines] = await Promise.all([
    render([`aliasByNode(summarize(${base}.${metric}.buckets.*,"${step}s","sum",false),-1)`], w),
    render([`aliasByNode(summarize(${base}.${metric}.{p50,p99,max},"${step}s","max",false),-1)`], w),
  ]);
  const cols = new Map();
  let first = null;
  for (const s of buckets) {
    const i = BOUNDS.indexOf(Number(s.target));
    if (i < 0) continue;
    for (const [val, t] of s.datapoints) {
      if (first == null || t < first) first = t;
      if (val == null) continue;
      let c = cols.get(t);
      if (!c) cols.set(t, (c = { t, counts: new Array(BOUNDS.length).fill(0), total: 0 }));
      c.counts[i] += val;
      c.total += val;
    }
  }
  const columns = [...cols.values()].sort((a, b) => a.t - b.t);
  return { step, first: first ?? w.from, columns, lines, bounds: BOUNDS };
}

async function guestView(v, root, gen) {
  const w = windowOf(v);
  const P = `${state.prefix}.${v.host}.${v.guest}`;
  root.append(el('h1', {}, v.guest, el('small', {}, ` on ${v.host}`)));
  // The vCPUs with series of their own (the agent's carbon.per_vcpu):
  // find names a wildcard's matches by their last component only.
  const vcpus = (await find(`${P}.vcpu.*`).catch(() => []))
    .filter((n) => !n.leaf && /^[0-9]+$/.test(n.text)).map((n) => n.text);
  if (gen !== state.generation) return;
  const nav = el('nav', { class: 'vcpus' }, 'vCPU: ');
  const ids = ['merged', ...vcpus.sort((a, b) => a - b)];
  for (const id of ids) {
    const a = el('a', { href: hashFor({ ...v, vcpu: id }) }, id === 'merged' ? 'all (merged)' : `vCPU ${id}`);
    if (id === v.vcpu) a.className = 'current';
    nav.append(a);
  }
  if (ids.length === 1) nav.append(el('small', {}, ' (per-vCPU histograms are sent with the agent\u2019s carbon.per_vcpu = true)'));
  root.append(nav);
  const base = v.vcpu === 'merged' ? P : `${P}.vcpu.${v.vcpu}`;

  const grid = el('div', { class: 'heatmaps' });
  root.append(grid);
  const hm = {};
  for (const [key, metric, title, what] of [
    ['runq', 'runq_latency_us', 'vCPU run-queue wait (runnable, waiting for a host CPU)', 'wait'],
    ['oncpu', 'oncpu_us', 'vCPU on-CPU slices (ran until switched out)', 'slice'],
  ]) {
    const panel = el('section', { class: 'panel', 'data-heatmap': key }, el('h2', {}, title));
    grid.append(panel);
    hm[key] = { panel, metric, what };
  }
  const step = stepFor(w.until - w.from, Math.floor((grid.clientWidth || 1000) - 80));
  await Promise.all(Object.entries(hm).map(async ([key, h]) => {
    const data = await heatmapData(base, h.metric, w, step);
    if (gen !== state.generation) return;
    if (!data.columns.length) h.panel.append(el('p', { class: 'empty' }, `no ${h.metric}.buckets series for ${base} in this range: the agent sends them with carbon.heatmap = true`));
    const cellCenter = heatmap(h.panel, data, h.what, w);
    window.hyperStats.heatmaps[key] = { ...data, from: w.from, until: w.until, base, cellCenter };
  }));
  if (gen !== state.generation) return;
  await painted();
  performance.mark('hs-guest-ready');
  document.body.dataset.ready = 'guest';

  const panels = el('div', { class: 'panels' });
  root.append(el('h2', {}, 'libvirt'), panels);
  const cols = Math.floor(((panels.clientWidth || 1000) / 2) - 70);
  const defs = [
    ['cpu', 'CPU (% of one host CPU)', fmt.pct, [`aliasByNode(${P}.cpu.{time,user,system}_percent,-1)`]],
    ['steal', 'vCPU steal (% of one host CPU)', fmt.pct, [`aliasByNode(${P}.vcpu.*.delay_percent,3,4)`, `alias(scale(${P}.runq_latency_us.sum,0.0001),"run-queue wait, all vCPUs")`]],
    ['disk-latency', 'disk latency', fmt.ms, [`aliasByNode(${P}.block.*.{rd,wr,flush}.latency_mean_ms,4,5)`]],
    ['disk-bytes', 'disk throughput', fmt.rate, [`aliasByNode(${P}.block.*.{rd,wr}.bytes_per_s,4,5)`]],
    ['net', 'network', fmt.rate, [`aliasByNode(${P}.net.*.{rx,tx}.bytes_per_s,4,5)`]],
    ['balloon', 'balloon', fmt.bytes, [`aliasByNode(${P}.balloon.{current,usable,rss}_bytes,4)`]],
  ];
  const pstep = stepFor(w.until - w.from, cols);
  await Promise.all(defs.map(async ([key, title, f, targets]) => {
    const panel = el('section', { class: 'panel small', 'data-panel': key }, el('h3', {}, title));
    panels.append(panel);
    try {
      const series = await render(targets, w, Math.ceil((w.until - w.from) / pstep));
      if (gen !== state.generation) return;
      window.hyperStats.panels[key] = series;
      lineChart(panel, series, f, w);
    } catch (e) {
      panel.append(el('p', { class: 'error' }, e.message));
    }
  }));
  document.body.dataset.ready = 'guest-all';
}

// ---------- shell ----------

async function show() {
  const v = readHash();
  const gen = ++state.generation;
  document.body.dataset.ready = '';
  window.hyperStats = { fleet: null, heatmaps: {}, panels: {} };
  document.getElementById('range').value = String(v.range);
  const crumbs = document.getElementById('crumbs');
  crumbs.replaceChildren();
  if (v.view === 'guest') {
    crumbs.append(el('a', { href: hashFor({ ...v, view: 'fleet' }) }, 'fleet'), ` / ${v.host} / ${v.guest}`);
    document.title = `${v.guest} on ${v.host} - hyper-stats`;
  } else {
    document.title = 'fleet - hyper-stats';
  }
  const root = document.getElementById('view');
  root.replaceChildren();
  hideTip();
  setStatus('');
  try {
    if (v.view === 'guest') await guestView(v, root, gen);
    else await fleetView(v, root, gen);
  } catch (e) {
    if (gen === state.generation) setStatus(e.message, true);
  }
}

async function main() {
  try {
    const r = await fetch('/config.json');
    Object.assign(state, await r.json());
  } catch (e) {
    setStatus(`cannot read the dashboard's config: ${e.message}`, true);
  }
  document.getElementById('range').addEventListener('change', (e) => {
    location.hash = hashFor({ ...readHash(), range: Number(e.target.value), until: null });
  });
  document.getElementById('refresh').addEventListener('click', () => {
    const v = readHash();
    if (v.until) location.hash = hashFor({ ...v, until: null });
    else show();
  });
  window.addEventListener('hashchange', show);
  show();
}

document.addEventListener('DOMContentLoaded', main);
