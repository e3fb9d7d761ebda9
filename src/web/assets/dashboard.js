// The dashboard: polls GET /v1/stats every 2 s and shows the service, the
// counters, canvas charts of the series, the replicas and recent requests.
// Transcripts never reach this page (the stats have none).

import {
  apiFetch, duration, markCurrentNav, num, setupKeyButton, timeOfDay,
} from '/assets/common.js';

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

let last = null; // the latest stats body, to redraw on resize
let paused = false; // after the user declined to give a key
let timer = null;

// ---- charts ----

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** Sizes the canvas bitmap to its CSS box times devicePixelRatio (crisp on HiDPI). */
function prepare(canvas) {
  const rect = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(rect.width * dpr));
  const h = Math.max(1, Math.round(rect.height * dpr));
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, rect.width, rect.height);
  ctx.font = `11px ${cssVar('--font-ui') || 'sans-serif'}`;
  ctx.textBaseline = 'middle';
  return { ctx, w: rect.width, h: rect.height };
}

/** A round upper bound for an axis: 1, 2, 2.5, 5 × 10^n. */
function niceMax(max) {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= max);
}

const PAD = { left: 44, right: 10, top: 10, bottom: 20 };

/** Axis label: integers plain, fractions with as few decimals as they need. */
function tick(v) {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toFixed(v < 1 ? 3 : 1)));
}

function axes(ctx, w, h, max) {
  const plotH = h - PAD.top - PAD.bottom;
  ctx.strokeStyle = cssVar('--grid');
  ctx.fillStyle = cssVar('--muted');
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  for (let i = 0; i <= 2; i += 1) {
    const v = (max * i) / 2;
    const y = Math.round(PAD.top + plotH - (plotH * i) / 2) + 0.5;
    ctx.beginPath();
    ctx.moveTo(PAD.left, y);
    ctx.lineTo(w - PAD.right, y);
    ctx.stroke();
    ctx.fillText(tick(v), PAD.left - 6, y);
  }
}

function windowText(seconds) {
  return seconds >= 120 ? `${Math.round(seconds / 60)} minutes` : `${Math.round(seconds)} seconds`;
}

/**
 * Line chart of one or more series over the points. null values are gaps.
 * Sets data-points (points with any value), data-sum and the aria-label.
 */
function lineChart(canvas, title, points, stepS, series, unit = '', digits = 2) {
  const { ctx, w, h } = prepare(canvas);
  const n = points.length;
  const values = series.map((s) => points.map((p) => {
    const v = s.value(p);
    return v === null || v === undefined || !Number.isFinite(v) ? null : v;
  }));
  let count = 0;
  let sum = 0;
  let max = 0;
  for (let i = 0; i < n; i += 1) {
    let any = false;
    for (const vs of values) {
      if (vs[i] === null) continue;
      any = true;
      sum += vs[i];
      max = Math.max(max, vs[i]);
    }
    if (any) count += 1;
  }
  const top = niceMax(max);
  axes(ctx, w, h, top);
  const plotW = w - PAD.left - PAD.right;
  const plotH = h - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (n > 1 ? (plotW * i) / (n - 1) : plotW);
  const y = (v) => PAD.top + plotH - (plotH * v) / top;

  ctx.fillStyle = cssVar('--muted');
  ctx.textBaseline = 'alphabetic';
  ctx.textAlign = 'left';
  ctx.fillText(`−${windowText(n * stepS).replace(' minutes', ' min').replace(' seconds', ' s')}`, PAD.left, h - 4);
  ctx.textAlign = 'right';
  ctx.fillText('now', w - PAD.right, h - 4);

  series.forEach((s, k) => {
    const vs = values[k];
    ctx.strokeStyle = cssVar(s.color);
    ctx.fillStyle = cssVar(s.color);
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        ctx.beginPath();
        ctx.arc(x(run[0]), y(vs[run[0]]), 2, 0, Math.PI * 2);
        ctx.fill();
      } else if (run.length > 1) {
        ctx.beginPath();
        run.forEach((i, j) => (j ? ctx.lineTo(x(i), y(vs[i])) : ctx.moveTo(x(i), y(vs[i]))));
        ctx.stroke();
        if (series.length === 1) {
          ctx.lineTo(x(run[run.length - 1]), y(0));
          ctx.lineTo(x(run[0]), y(0));
          ctx.closePath();
          ctx.globalAlpha = 0.15;
          ctx.fill();
          ctx.globalAlpha = 1;
        }
      }
      run = [];
    };
    for (let i = 0; i < n; i += 1) {
      if (vs[i] === null) flush();
      else run.push(i);
    }
    flush();
  });

  if (!count) {
    ctx.fillStyle = cssVar('--muted');
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText('no data in this window', PAD.left + plotW / 2, PAD.top + plotH / 2);
  }
  const summary = series.map((s, k) => {
    const present = values[k].filter((v) => v !== null);
    if (!present.length) return `${s.name ? `${s.name} ` : ''}no data`;
    const latest = present[present.length - 1];
    return `${s.name ? `${s.name} ` : ''}latest ${num(latest, digits)}${unit}, max ${num(Math.max(...present), digits)}${unit}`;
  }).join('; ');
  canvas.setAttribute('aria-label', `${title}, last ${windowText(n * stepS)}: ${summary}`);
  canvas.dataset.points = String(count);
  canvas.dataset.sum = String(Math.round(sum * 1000) / 1000);
}

/** Bar chart of decode steps by batch size. */
function batchChart(canvas, sizes) {
  const { ctx, w, h } = prepare(canvas);
  const entries = Object.entries(sizes || {})
    .map(([size, steps]) => [Number(size), Number(steps)])
    .filter(([, steps]) => steps > 0)
    .sort((a, b) => a[0] - b[0]);
  const total = entries.reduce((acc, [, steps]) => acc + steps, 0);
  const top = niceMax(Math.max(0, ...entries.map(([, s]) => s)));
  axes(ctx, w, h, top);
  const plotW = w - PAD.left - PAD.right;
  const plotH = h - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(entries.length, 1);
  const barW = Math.min(48, slot * 0.7);
  entries.forEach(([size, steps], i) => {
    const cx = PAD.left + slot * (i + 0.5);
    const bh = (plotH * steps) / top;
    ctx.fillStyle = cssVar('--chart-1');
    ctx.fillRect(cx - barW / 2, PAD.top + plotH - bh, barW, bh);
    ctx.fillStyle = cssVar('--muted');
    ctx.textAlign = 'center';
    ctx.textBaseline = 'alphabetic';
    ctx.fillText(String(size), cx, h - 4);
  });
  if (!entries.length) {
    ctx.fillStyle = cssVar('--muted');
    ctx.textAlign = 'center';
    ctx.fillText('no batches yet', PAD.left + plotW / 2, PAD.top + plotH / 2);
  }
  const parts = entries.map(([size, steps]) => `size ${size}: ${Math.round((steps / total) * 100)}%`);
  canvas.setAttribute('aria-label', `Batch sizes over the window, ${total} decode steps${parts.length ? `: ${parts.join(', ')}` : ''}`);
  canvas.dataset.points = String(entries.length);
  canvas.dataset.sum = String(total);
}

function drawCharts(stats) {
  const { points, step_s: step } = stats.series;
  const perS = (v) => v / step;
  lineChart($('chart-rps'), 'Requests per second', points, step,
    [{ color: '--chart-1', value: (p) => perS(p.requests) }]);
  lineChart($('chart-audio'), 'Audio seconds per second', points, step,
    [{ color: '--chart-1', value: (p) => perS(p.audio_seconds) }]);
  lineChart($('chart-latency'), 'Latency', points, step, [
    { name: 'p50', color: '--chart-1', value: (p) => p.p50_ms },
    { name: 'p95', color: '--chart-2', value: (p) => p.p95_ms },
  ], ' ms', 0);
  lineChart($('chart-errors'), 'Error rate', points, step,
    [{ color: '--chart-err', value: (p) => (p.requests ? (100 * p.errors) / p.requests : null) }], '%', 1);
  lineChart($('chart-queue'), 'Queue', points, step, [
    { name: 'waiting', color: '--chart-1', value: (p) => p.queue_depth },
    { name: 'in progress', color: '--chart-2', value: (p) => p.in_progress },
  ], '', 0);
  batchChart($('chart-batch'), stats.batch_sizes);
  $('charts-window').textContent = `(last ${windowText(points.length * step)})`;
}

// ---- tables and tiles ----

function text(id, value) {
  const node = $(id);
  const s = value === null || value === undefined || value === '' ? '—' : String(value);
  if (node.textContent !== s) node.textContent = s;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    if (c && typeof c === 'object') {
      td.textContent = c.text;
      if (c.className) td.className = c.className;
    } else {
      td.textContent = c === null || c === undefined ? '—' : String(c);
    }
    tr.append(td);
  }
  return tr;
}

function renderTables(stats) {
  const replicas = stats.load.replicas || [];
  $('replicas').tBodies[0].replaceChildren(...replicas.map((r) => row([
    r.id,
    { text: r.state, className: `state state-${r.state}` },
    `${r.busy} / ${r.capacity}`,
    r.device,
    { text: r.jobs_done === null || r.jobs_done === undefined ? '—' : String(r.jobs_done), className: 'num' },
  ])));
  $('replicas-empty').hidden = replicas.length > 0;

  const recent = stats.recent || [];
  $('recent').tBodies[0].replaceChildren(...recent.map((r) => row([
    { text: timeOfDay(r.time_ms), className: 'mono' },
    { text: r.request_id, className: 'mono col-id' },
    r.method === 'JOB' ? 'job' : `${r.method} ${r.route}`,
    { text: String(r.status), className: r.status >= 400 ? 'bad' : 'good' },
    { text: num(r.duration_ms, 0), className: 'num' },
    { text: r.audio_seconds === null ? '—' : num(r.audio_seconds, 1), className: 'num' },
  ])));
  $('recent-empty').hidden = recent.length > 0;
}

function render(stats) {
  last = stats;
  text('info-model', stats.model.name);
  text('info-device', stats.model.device || stats.load.device);
  text('info-compute', stats.model.compute_type || stats.load.compute_type);
  text('info-version', stats.version);
  text('info-mode', stats.mode);
  text('info-uptime', duration(stats.uptime_s));

  const now = stats.now;
  text('stat-requests', stats.totals.requests);
  text('stat-rps', num(now.requests_per_s, 2));
  text('stat-audio-rate', num(now.audio_seconds_per_s, 2));
  text('stat-p50', num(now.p50_ms, 0));
  text('stat-p95', num(now.p95_ms, 0));
  text('stat-error-rate', num(now.error_rate * 100, 1));
  text('stat-queue', stats.load.queue_depth);
  text('stat-in-progress', stats.load.in_progress);
  text('stat-capacity', `of ${stats.load.capacity}`);

  drawCharts(stats);
  renderTables(stats);
  $('updated').textContent = `updated ${timeOfDay()}`;
}

// ---- polling ----

function notice(message, askKey = false) {
  $('notice').hidden = !message;
  $('notice-text').textContent = message;
  $('notice-retry').hidden = !askKey;
}

async function poll() {
  timer = null;
  try {
    const res = await apiFetch('/v1/stats', { timeoutMs: 8000 });
    render(await res.json());
    notice('');
  } catch (err) {
    if (err.status === 401) {
      paused = true; // the user cancelled the key prompt: wait for them
      notice('This server needs an API key to show its statistics.', true);
      return;
    }
    const when = last ? `; showing data from ${$('updated').textContent.replace('updated ', '')}` : '';
    notice(`Could not load the statistics (${err.message})${when}. Retrying every ${POLL_MS / 1000} s…`);
  }
  if (!paused) timer = setTimeout(poll, POLL_MS);
}

function restart() {
  paused = false;
  notice('');
  clearTimeout(timer);
  poll();
}

$('notice-retry').addEventListener('click', restart);

// Redraw when a canvas changes size (window resize, rotation, zoom).
const observer = new ResizeObserver(() => {
  requestAnimationFrame(() => {
    if (last) drawCharts(last);
  });
});
document.querySelectorAll('canvas').forEach((c) => observer.observe(c));

// devicePixelRatio can change without a resize (moving to another screen).
function watchDpr() {
  const query = matchMedia(`(resolution: ${window.devicePixelRatio || 1}dppx)`);
  query.addEventListener('change', () => {
    if (last) drawCharts(last);
    watchDpr();
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
  if (last) drawCharts(last);
});
  }, { once: true });
}
watchDpr();
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
  if (last) drawCharts(last);
});

markCurrentNav();
setupKeyButton(() => {
  if (paused) restart();
});
poll();
