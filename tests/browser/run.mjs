// Drives the whisper-serve pages in Chromium (playwright-core) for the Rust
// tests: node tests/browser/run.mjs <scenario> <baseUrl> <outDir>
//
// Env: AUDIO_FILE (a 16-bit PCM WAV to upload or to feed the fake mic),
// API_KEY (optional), CHROMIUM (default /usr/bin/chromium).
// Scenarios: upload, record, live, live_auth (live with API_KEY), dashboard, docs, auth.
// The live scenarios feed the fake mic's file once, then silence (LOOP_AUDIO=1:
// looped, as the record scenario has it, so that Stop ends an open turn).
//
// Writes <outDir>/<scenario>.json (what it saw; `error` says why it failed)
// and screenshots <outDir>/<scenario>-<page>-<phone|desktop>.png, prints a
// one-line summary and exits 0 on success, 1 on failure. Any console error
// or warning, page error, or request to another host fails the scenario.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [scenario, baseArg, outDir] = process.argv.slice(2);
const SCENARIOS = ['upload', 'record', 'live', 'live_auth', 'dashboard', 'docs', 'auth'];
if (!SCENARIOS.includes(scenario) || !baseArg || !outDir) {
  console.error(`usage: node run.mjs <${SCENARIOS.join('|')}> <baseUrl> <outDir>`);
  process.exit(2);
}
const base = new URL(baseArg);
const baseUrl = base.origin;
const AUDIO_FILE = process.env.AUDIO_FILE || '';
const API_KEY = process.env.API_KEY || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const LOOP_AUDIO = process.env.LOOP_AUDIO === '1';
const STEP_MS = 90_000; // one transcription on 2 CPU cores takes up to ~20 s
const WHOLE_MS = 300_000;
const VIEWPORTS = { phone: { width: 390, height: 844 }, desktop: { width: 1280, height: 800 } };

const obs = {
  scenario, baseUrl, ok: false, error: null,
  console: [], pageErrors: [], foreignRequests: [], failedRequests: [], screenshots: [], layout: {},
};
const failures = [];
const fail = (msg) => failures.push(msg);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function needAudio() {
  if (!AUDIO_FILE) throw new Error('AUDIO_FILE is not set');
}

async function launch({ mic = false, loop = true } = {}) {
  const args = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-default-apps',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  ];
  // Chromium loops the file as the microphone; `%noloop` plays it once.
  if (mic) args.push(`--use-file-for-fake-audio-capture=${path.resolve(AUDIO_FILE)}${loop ? '' : '%noloop'}`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args });
  const context = await browser.newContext({ viewport: VIEWPORTS.desktop, acceptDownloads: true });
  if (mic) await context.grantPermissions(['microphone'], { origin: baseUrl });
  context.on('request', (req) => {
    const u = new URL(req.url());
    if (['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol) && u.host !== base.host) {
      obs.foreignRequests.push(req.url());
    }
  });
  context.on('requestfailed', (req) => {
    obs.failedRequests.push({ url: req.url(), method: req.method(), failure: req.failure()?.errorText });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') {
      obs.console.push({ type: msg.type(), text: msg.text(), url: msg.location()?.url || '', page: page.url() });
    }
  });
  page.on('pageerror', (err) => obs.pageErrors.push({ message: String(err && err.stack || err), page: page.url() }));
  return { browser, context, page };
}

/** Screenshots at both sizes; on our own pages horizontal scrolling on the phone fails. */
async function shoot(page, name, { checkLayout = true } = {}) {
  for (const [label, size] of Object.entries(VIEWPORTS)) {
    await page.setViewportSize(size);
    await sleep(400); // let resize observers redraw the charts
    const layout = await page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    }));
    obs.layout[`${name}-${label}`] = layout;
    if (checkLayout && layout.scrollWidth > layout.innerWidth) {
      fail(`${name} scrolls horizontally at ${label} size (${layout.scrollWidth}px > ${layout.innerWidth}px)`);
    }
    const file = path.join(outDir, `${scenario}-${name}-${label}.png`);
    await page.screenshot({ path: file, fullPage: true });
    obs.screenshots.push(file);
  }
  await page.setViewportSize(VIEWPORTS.desktop);
}

const text = (page, sel) => page.locator(sel).first().textContent().then((t) => (t || '').trim());

/** Records #job-status states and whether the upload progress bar showed, as they happen. */
async function watchTranscribePage(page) {
  await page.evaluate(() => {
    const seen = { statuses: [], statusTexts: [], progressShown: false, progressMax: 0 };
    window.__seen = seen;
    const check = () => {
      const st = document.getElementById('job-status');
      const status = st.dataset.status;
      if (status && seen.statuses[seen.statuses.length - 1] !== status) {
        seen.statuses.push(status);
        seen.statusTexts.push(st.textContent);
      }
      const box = document.getElementById('progress-box');
      const bar = document.getElementById('upload-progress');
      if (!box.hidden) seen.progressShown = true;
      seen.progressMax = Math.max(seen.progressMax, Number(bar.value) || 0);
    };
    new MutationObserver(check).observe(document.body, {
      subtree: true, childList: true, attributes: true, characterData: true,
    });
  });
}

async function waitForTranscript(page) {
  await page.waitForFunction(() => {
    const t = document.getElementById('transcript-text');
    const e = document.getElementById('error');
    return (t && t.textContent.trim().length > 0) || (e && !e.hidden);
  }, null, { timeout: STEP_MS });
  const error = await page.locator('#error').evaluate((e) => (e.hidden ? '' : e.textContent));
  if (error) throw new Error(`the page showed an error: ${error}`);
  return text(page, '#transcript-text');
}

async function download(page, ext) {
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click(`#download-${ext}`)]);
  // <scenario>.json is the report, so the JSON download is <scenario>.result.json.
  const file = path.join(outDir, `${scenario}.${ext === 'json' ? 'result.json' : ext}`);
  await dl.saveAs(file);
  obs.downloadNames = { ...(obs.downloadNames || {}), [ext]: dl.suggestedFilename() };
  return readFile(file, 'utf8');
}

/** Splits a multipart body; returns the `file` part's filename and type. */
function filePart(buf, contentType) {
  const boundary = /boundary=("?)([^";]+)\1/.exec(contentType || '')?.[2];
  if (!buf || !boundary) return null;
  const delim = Buffer.from(`--${boundary}`);
  let start = buf.indexOf(delim);
  while (start >= 0) {
    const next = buf.indexOf(delim, start + delim.length);
    if (next < 0) break;
    const part = buf.subarray(start + delim.length + 2, next - 2); // strip CRLFs
    const split = part.indexOf('\r\n\r\n');
    const head = part.subarray(0, split).toString('latin1');
    if (/name="file"/.test(head)) {
      return {
        filename: /filename="([^"]*)"/.exec(head)?.[1] ?? null,
        contentType: /content-type:\s*([^\r\n]+)/i.exec(head)?.[1] ?? null,
        capturedBytes: part.length - split - 4, // 0 when the capture left the blob out
      };
    }
    start = next;
  }
  return null;
}

// ---- scenarios ----

async function upload() {
  needAudio();
  const { browser, page } = await launch();
  try {
    await page.goto(`${baseUrl}/`);
    await page.setInputFiles('#file-input', AUDIO_FILE);
    await page.check('#word-timestamps');
    await watchTranscribePage(page);
    await page.click('#transcribe');
    obs.transcript = await waitForTranscript(page);
    const seen = await page.evaluate(() => window.__seen);
    obs.statusesSeen = seen.statuses;
    obs.statusTextsSeen = seen.statusTexts;
    obs.progressSeen = seen.progressShown && seen.progressMax > 0;
    obs.progressMax = seen.progressMax;
    obs.segments = await page.locator('#segments .segment').count();
    obs.words = await page.locator('#words .word').count();
    obs.resultMeta = await text(page, '#result-meta');
    obs.jobStatus = await text(page, '#job-status');

    // Play the first segment; it must start and advance.
    await page.evaluate(() => {
      const p = document.getElementById('player');
      window.__play = { playing: false, maxTime: 0 };
      p.addEventListener('playing', () => { window.__play.playing = true; });
      p.addEventListener('timeupdate', () => { window.__play.maxTime = Math.max(window.__play.maxTime, p.currentTime); });
    });
    const first = page.locator('#segments .segment').first();
    const start = Number(await first.getAttribute('data-start'));
    await first.click();
    await sleep(300);
    const t0 = await page.evaluate(() => document.getElementById('player').currentTime);
    await sleep(1200);
    const p1 = await page.evaluate(() => {
      const p = document.getElementById('player');
      return { paused: p.paused, currentTime: p.currentTime, ...window.__play };
    });
    obs.playback = { segmentStart: start, t0, ...p1 };
    obs.played = p1.playing && p1.maxTime > start + 0.2 && (p1.currentTime > t0 || p1.paused === false);

    obs.srt = await download(page, 'srt');
    obs.txt = await download(page, 'txt');
    obs.vtt = await download(page, 'vtt');
    obs.json = await download(page, 'json');
    await shoot(page, 'index');

    if (!obs.transcript) fail('empty transcript');
    if (!obs.segments) fail('no segments');
    if (!obs.played) fail('the player did not play the segment');
    if (!obs.srt.startsWith('1\n')) fail('srt does not start with "1"');
    if (!obs.vtt.startsWith('WEBVTT\n\n')) fail('vtt has no WEBVTT header');
  } finally {
    await browser.close();
  }
}

async function record() {
  needAudio();
  const { browser, page } = await launch({ mic: true });
  try {
    // request.postDataBuffer() is null for a form holding a Blob; a routed
    // request has at least the part headers, and goes on unchanged.
    let posted = null;
    await page.route('**/v1/jobs', (route) => {
      const req = route.request();
      if (req.method() === 'POST') posted = { contentType: req.headers()['content-type'], body: req.postDataBuffer() };
      return route.continue();
    });
    await page.goto(`${baseUrl}/`);
    await page.click('#record');
    await page.waitForFunction(() => document.getElementById('record-label').textContent === 'Stop');
    await sleep(5000);
    obs.recordTime = await text(page, '#record-time');
    await page.click('#record');
    await page.waitForFunction(() => {
      const p = document.getElementById('player');
      return p.getAttribute('src') && !document.getElementById('transcribe').disabled;
    });
    obs.playerSrc = await page.locator('#player').getAttribute('src');
    obs.recording = await page.locator('#file-name').evaluate((e) => ({
      text: e.textContent, name: e.dataset.name, type: e.dataset.type, size: Number(e.dataset.size),
    }));
    obs.recordingBytes = obs.recording.size;
    await watchTranscribePage(page);
    await page.click('#transcribe');
    obs.transcript = await waitForTranscript(page);
    obs.statusesSeen = await page.evaluate(() => window.__seen.statuses);
    if (posted) {
      obs.uploaded = filePart(posted.body, posted.contentType);
      if (!obs.uploaded) fail('the POST /v1/jobs body has no file part');
    } else {
      fail('no POST /v1/jobs was seen');
    }
    await shoot(page, 'index');
    if (!obs.playerSrc || !obs.playerSrc.startsWith('blob:')) fail('the player has no blob: src');
    if (!obs.transcript) fail('empty transcript');
    if (!(obs.recordingBytes > 0)) fail('empty recording');
  } finally {
    await browser.close();
  }
}

/** Lower case, letters, digits and single spaces. */
const norm = (t) => (t || '').toLowerCase().replace(/[^\p{L}\p{N}]+/gu, ' ').trim();

/** Records the live transcript as it changes: each turn's state, committed text and partial indicator. */
async function watchLivePage(page) {
  await page.evaluate(() => {
    const seen = { snapshots: [], statuses: [], partialSeen: false, partialTexts: [], started: performance.now() };
    window.__live = seen;
    let last = '';
    const check = () => {
      const st = document.getElementById('live-status');
      const status = st.dataset.status;
      if (status && seen.statuses[seen.statuses.length - 1] !== status) seen.statuses.push(status);
      const turns = [...document.querySelectorAll('#live-transcript .turn')].map((p) => {
        const partial = p.querySelector('.partial');
        const shown = partial && !partial.hidden && partial.textContent.trim() ? partial.textContent.trim() : '';
        return {
          id: p.dataset.itemId,
          state: p.dataset.state,
          committed: (p.querySelector('.committed')?.textContent || ''),
          partial: shown,
          partialStyle: shown ? getComputedStyle(partial).fontStyle : '',
        };
      });
      for (const t of turns) {
        if (t.partial) {
          seen.partialSeen = true;
          if (!seen.partialTexts.includes(t.partial)) seen.partialTexts.push(t.partial);
          seen.partialStyle = t.partialStyle;
        }
      }
      const key = JSON.stringify(turns);
      if (key !== last) {
        last = key;
        seen.snapshots.push({ t: Math.round(performance.now() - seen.started), turns });
      }
    };
    new MutationObserver(check).observe(document.getElementById('live-panel'), {
      subtree: true, childList: true, attributes: true, characterData: true,
    });
    check();
  });
}

async function live() {
  needAudio();
  // Once through: a slow server then has one turn to catch up on, not a
  // backlog that grows until realtime.max_lag_s closes the session.
  const { browser, page } = await launch({ mic: true, loop: LOOP_AUDIO });
  obs.loopAudio = LOOP_AUDIO;
  try {
    // Every WebSocket frame, both ways (event types; appends' sizes and times).
    const ws = { url: null, sent: [], received: [], appendBytes: {}, appendTimes: [], closed: false };
    obs.ws = ws;
    const t0 = Date.now();
    page.on('websocket', (socket) => {
      ws.url = socket.url();
      const parse = (payload) => {
        try {
          return JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'));
        } catch {
          return { type: '(not json)' };
        }
      };
      socket.on('framesent', ({ payload }) => {
        const ev = parse(payload);
        if (ev.type === 'input_audio_buffer.append') {
          const n = Buffer.from(ev.audio || '', 'base64').length;
          ws.appendBytes[n] = (ws.appendBytes[n] || 0) + 1;
          ws.appendTimes.push(Date.now() - t0);
          if (ws.sent[ws.sent.length - 1] !== ev.type) ws.sent.push(ev.type);
        } else {
          ws.sent.push(ev.type);
          if (ev.type === 'session.update') ws.sessionUpdate = ev;
        }
      });
      socket.on('framereceived', ({ payload }) => {
        const ev = parse(payload);
        ws.received.push({ t: Date.now() - t0, type: ev.type, item: ev.item_id, delta: ev.delta, transcript: ev.transcript, error: ev.error });
      });
      socket.on('close', () => { ws.closed = true; ws.closedAt = Date.now() - t0; });
    });

    await page.goto(`${baseUrl}/`);
    await page.click('#tab-live');
    obs.panels = await page.evaluate(() => ({
      live: !document.getElementById('live-panel').hidden,
      file: !document.getElementById('file-panel').hidden,
      hash: location.hash,
      selected: document.getElementById('tab-live').getAttribute('aria-selected'),
    }));
    if (!obs.panels.live || obs.panels.file) fail('the Live tab did not show the live panel');
    await watchLivePage(page);
    await page.click('#live-toggle');
    // With keys on, the page asks for one first (GET /v1/models answers 401).
    await page.waitForFunction(() => document.getElementById('live-label').textContent === 'Stop'
      || document.getElementById('key-dialog').open || !document.getElementById('live-error').hidden);
    obs.askedForKey = await page.locator('#key-dialog').evaluate((d) => d.open);
    if (obs.askedForKey) {
      if (!API_KEY) throw new Error('the page asks for an API key and API_KEY is not set');
      await page.fill('#api-key', API_KEY);
      await page.click('#api-key-save');
    }
    await page.waitForFunction(() => document.getElementById('live-label').textContent === 'Stop'
      || !document.getElementById('live-error').hidden, null, { timeout: 30_000 });
    const liveError = () => page.locator('#live-error').evaluate((e) => (e.hidden ? '' : e.textContent));
    let error = await liveError();
    if (error) throw new Error(`the page showed an error: ${error}`);
    obs.startedAt = Date.now() - t0;
    // A turn while it is open: the partial indicator.
    await page.waitForSelector('#live-transcript .turn .partial:not([hidden])', { timeout: 60_000 });
    await shoot(page, 'live-partial');

    // Until the final turns hold the whole sentence: "fellow american" and
    // then "your country" twice (as JFK says it), or an error.
    await page.waitForFunction(() => {
      const e = document.getElementById('live-error');
      if (!e.hidden) return true;
      const finals = [...document.querySelectorAll('#live-transcript .turn.final .committed')].map((c) => c.textContent).join(' ');
      const t = finals.toLowerCase();
      const i = t.indexOf('fellow american');
      return i >= 0 && t.slice(i).split('your country').length >= 3;
    }, null, { timeout: 120_000, polling: 200 });
    error = await liveError();
    if (error) throw new Error(`the page showed an error: ${error}`);
    obs.finals = await page.locator('#live-transcript .turn.final .committed').allTextContents();
    obs.finalTurns = await page.locator('#live-transcript .turn.final').evaluateAll((ps) => ps.map((p) => ({
      id: p.dataset.itemId, state: p.dataset.state, text: p.textContent,
    })));
    obs.statusWhileLive = await text(page, '#live-status');
    obs.timeWhileLive = await text(page, '#live-time');
    await shoot(page, 'live');

    await page.click('#live-toggle');
    await page.waitForFunction(() => document.getElementById('live-label').textContent === 'Start'
      && ['stopped', 'failed'].includes(document.getElementById('live-status').dataset.status), null, { timeout: 30_000 });
    await sleep(300);
    obs.statusAfterStop = await page.locator('#live-status').evaluate((e) => ({ status: e.dataset.status, text: e.textContent }));
    obs.errorAfterStop = await liveError();
    obs.wsClosedAfterStop = ws.closed;
    const seen = await page.evaluate(() => window.__live);
    obs.statuses = seen.statuses;
    obs.partialSeen = seen.partialSeen;
    obs.partialTexts = seen.partialTexts;
    obs.partialStyle = seen.partialStyle;
    obs.snapshots = seen.snapshots;
    obs.snapshotCount = seen.snapshots.length;
    obs.micStopped = await page.evaluate(() => document.getElementById('live-level').value === 0);
    obs.downloadEnabled = await page.locator('#live-download').isEnabled();
    await shoot(page, 'live-stopped');

    // The first final turn's committed text, as it grew before it was final.
    const first = obs.finalTurns[0] && obs.finalTurns[0].id;
    const growth = [];
    for (const snap of seen.snapshots) {
      const t = snap.turns.find((x) => x.id === first);
      if (t && t.state !== 'final' && t.committed && growth[growth.length - 1] !== t.committed) growth.push(t.committed);
    }
    obs.firstTurnGrowth = growth;
    obs.firstTurnDeltas = ws.received.filter((r) => r.item === first
      && r.type === 'conversation.item.input_audio_transcription.delta').map((r) => r.delta);
    const firstStopped = ws.received.find((r) => r.item === first && r.type === 'input_audio_buffer.speech_stopped');
    obs.firstTurnDeltasBeforeStop = ws.received.filter((r) => r.item === first && firstStopped && r.t < firstStopped.t
      && r.type === 'conversation.item.input_audio_transcription.delta').length;
    obs.textGrew = growth.length >= 2 && growth.every((g, i) => i === 0 || g.startsWith(growth[i - 1]));

    const types = ws.received.map((r) => r.type);
    obs.receivedTypes = [...new Set(types)];
    obs.deltas = ws.received.filter((r) => r.type === 'conversation.item.input_audio_transcription.delta').length;
    obs.completed = ws.received.filter((r) => r.type === 'conversation.item.input_audio_transcription.completed')
      .map((r) => ({ item: r.item, transcript: r.transcript }));
    const sizes = Object.keys(ws.appendBytes).map(Number);
    obs.appends = Object.values(ws.appendBytes).reduce((a, b) => a + b, 0);
    // Audio seconds sent per second of wall time: 1 at 24 kHz pcm16.
    const times = ws.appendTimes;
    if (times.length > 10) {
      const audioS = sizes.reduce((a, n) => a + n * ws.appendBytes[n], 0) / 48000;
      obs.audioSecondsSent = audioS;
      obs.wallSeconds = (times[times.length - 1] - obs.startedAt) / 1000;
    }

    if (ws.sent[0] !== 'session.update') fail(`the first event sent was ${ws.sent[0]}, not session.update`);
    if (!ws.url || !/^ws:\/\/[^/]+\/v1\/realtime\?intent=transcription$/.test(ws.url)) fail(`unexpected WebSocket URL ${ws.url}`);
    if (!obs.appends) fail('no audio was sent');
    if (!obs.partialSeen) fail('no partial indicator was shown');
    if (!obs.finals.length) fail('no final turn');
    if (obs.errorAfterStop) fail(`an error was shown after Stop: ${obs.errorAfterStop}`);
    if (obs.statusAfterStop.status !== 'stopped') fail(`status after Stop: ${JSON.stringify(obs.statusAfterStop)}`);
    if (!obs.wsClosedAfterStop) fail('the WebSocket was not closed by Stop');
    if (!norm(obs.finals.join(' ')).includes('fellow american')) fail('the final text does not hold the sentence');
    // Stop commits a turn that is still open and waits for its transcript.
    const commitAt = ws.sent.indexOf('input_audio_buffer.commit');
    obs.committedOnStop = commitAt >= 0;
    if (obs.committedOnStop) {
      const last = ws.received.filter((r) => r.type === 'input_audio_buffer.committed').pop();
      obs.stopTurnCompleted = Boolean(last && ws.received.some((r) => r.item === last.item
        && /\.(completed|failed)$/.test(r.type || '')));
      // A slow server may not finish it within the page's wait (then it shows as cut short).
      if (!obs.stopTurnCompleted) obs.notes = 'the turn committed by Stop got no transcript before the socket closed';
    }
    if (scenario === 'live_auth' && !obs.askedForKey) fail('the page did not ask for the API key');
  } finally {
    await browser.close();
  }
}

async function readChart(page, id) {
  return page.locator(`#${id}`).evaluate((c) => ({
    points: Number(c.dataset.points), sum: Number(c.dataset.sum), label: c.getAttribute('aria-label'),
  }));
}

async function dashboard() {
  needAudio();
  const { browser, page } = await launch();
  try {
    await page.goto(`${baseUrl}/dashboard`);
    // With auth.metrics_requires_key the page asks for the key first.
    await page.waitForFunction(() => document.getElementById('info-model').textContent.trim() !== ''
      || document.getElementById('key-dialog').open);
    obs.askedForKey = await page.locator('#key-dialog').evaluate((d) => d.open);
    if (obs.askedForKey) {
      if (!API_KEY) throw new Error('the dashboard asks for an API key and API_KEY is not set');
      await page.fill('#api-key', API_KEY);
      await page.click('#api-key-save');
      await page.waitForFunction(() => document.getElementById('info-model').textContent.trim() !== '');
    }
    const number = async () => Number((await text(page, '#stat-requests')).replace(/[^\d.]/g, ''));
    obs.before = { requests: await number(), rps: await readChart(page, 'chart-rps') };

    const audio = await readFile(AUDIO_FILE);
    const headers = API_KEY ? { Authorization: `Bearer ${API_KEY}` } : {};
    obs.sent = await Promise.all([0, 1, 2].map(async () => {
      const form = new FormData();
      form.append('file', new Blob([audio], { type: 'audio/wav' }), 'jfk.wav');
      form.append('model', 'whisper-1');
      const res = await fetch(`${baseUrl}/v1/audio/transcriptions`, { method: 'POST', body: form, headers });
      await res.arrayBuffer();
      return res.status;
    }));
    if (obs.sent.some((s) => s !== 200)) fail(`transcription requests answered ${obs.sent.join(', ')}`);

    const deadline = Date.now() + 30_000;
    let after;
    for (;;) {
      after = { requests: await number(), rps: await readChart(page, 'chart-rps') };
      const changed = after.requests > obs.before.requests && after.rps.sum !== obs.before.rps.sum;
      // Wait for all three if they come; one poll may land between them.
      if (changed && after.requests >= obs.before.requests + obs.sent.length) break;
      if (Date.now() > deadline) {
        if (!changed) fail('the dashboard did not show the new requests within 30 s');
        break;
      }
      await sleep(250);
    }
    obs.after = after;
    obs.charts = {};
    for (const id of ['chart-rps', 'chart-audio', 'chart-latency', 'chart-errors', 'chart-queue', 'chart-batch']) {
      obs.charts[id] = await readChart(page, id);
    }
    obs.replicaRows = await page.locator('#replicas tbody tr').count();
    obs.recentRows = await page.locator('#recent tbody tr').count();
    obs.info = {};
    for (const id of ['info-model', 'info-device', 'info-compute', 'info-version', 'info-mode', 'info-uptime']) {
      obs.info[id] = await text(page, `#${id}`);
    }
    obs.tiles = {};
    for (const id of ['stat-requests', 'stat-rps', 'stat-audio-rate', 'stat-p50', 'stat-p95', 'stat-error-rate', 'stat-queue', 'stat-in-progress']) {
      obs.tiles[id] = await text(page, `#${id}`);
    }
    obs.updated = await text(page, '#updated');
    obs.noticeShown = await page.locator('#notice').isVisible();
    await shoot(page, 'dashboard');
    if (!obs.replicaRows) fail('no replica rows');
    if (!obs.recentRows) fail('no recent rows');
  } finally {
    await browser.close();
  }
}

async function docs() {
  const { browser, page } = await launch();
  try {
    await page.goto(`${baseUrl}/docs`);
    obs.finalUrl = page.url();
    await page.waitForSelector('.opblock');
    obs.operations = await page.locator('.opblock').evaluateAll((blocks) => blocks.map((b) => {
      const m = b.querySelector('.opblock-summary-method');
      const p = b.querySelector('.opblock-summary-path');
      const dataPath = p && (p.getAttribute('data-path') || p.querySelector('[data-path]')?.getAttribute('data-path'));
      return {
        method: (m ? m.textContent : '').trim(),
        path: (dataPath || (p ? p.textContent : '')).replace(/\u200b/g, '').trim(),
      };
    }));
    await page.locator('.opblock-summary').first().click();
    await page.waitForSelector('.opblock.is-open', { timeout: 10_000 }).then(
      () => { obs.expanded = true; },
      () => { obs.expanded = false; },
    );
    await shoot(page, 'docs', { checkLayout: false });
    if (!obs.operations.length) fail('no operations rendered');
    if (!obs.expanded) fail('the first operation did not open');
  } finally {
    await browser.close();
  }
}

async function auth() {
  needAudio();
  if (!API_KEY) throw new Error('API_KEY is not set');
  const { browser, page } = await launch();
  try {
    await page.goto(`${baseUrl}/`);
    await page.setInputFiles('#file-input', AUDIO_FILE);
    await page.click('#transcribe');
    await page.waitForSelector('#api-key', { state: 'visible' });
    obs.askedForKey = true;
    obs.keyMessage = await text(page, '#api-key-msg');
    await page.fill('#api-key', API_KEY);
    await page.click('#api-key-save');
    obs.transcript = await waitForTranscript(page);
    obs.storage = await page.evaluate((key) => ({
      sessionKeyMatches: sessionStorage.getItem('whisper-serve-key') === key,
      localStorageLength: localStorage.length,
      cookie: document.cookie,
    }), API_KEY);
    await shoot(page, 'index');

    await page.goto(`${baseUrl}/dashboard`);
    await page.waitForFunction(() => document.getElementById('info-model').textContent.trim() !== '');
    obs.dashboardModel = await text(page, '#info-model');
    obs.dashboardAskedAgain = await page.locator('#key-dialog').evaluate((d) => d.open);
    await shoot(page, 'dashboard');

    if (!obs.transcript) fail('empty transcript');
    if (!obs.storage.sessionKeyMatches) fail('the key is not in sessionStorage');
    if (obs.storage.localStorageLength !== 0) fail('localStorage is not empty');
    if (obs.storage.cookie !== '') fail('cookies were set');
    if (obs.dashboardAskedAgain) fail('the dashboard asked for the key again');
  } finally {
    await browser.close();
  }
}

// ---- main ----

function summary() {
  const facts = {
    upload: () => `segments=${obs.segments} played=${obs.played} progress=${obs.progressSeen} statuses=${(obs.statusesSeen || []).join('>')}`,
    record: () => `file=${obs.uploaded?.filename}(${obs.uploaded?.contentType}) bytes=${obs.recordingBytes}`,
    live: () => `appends=${obs.appends} deltas=${obs.deltas} partial=${obs.partialSeen} grew=${obs.textGrew} finals=${JSON.stringify(obs.finals)}`,
    live_auth: () => `asked=${obs.askedForKey} appends=${obs.appends} deltas=${obs.deltas} finals=${JSON.stringify(obs.finals)}`,
    dashboard: () => `requests ${obs.before?.requests}->${obs.after?.requests} rps.sum ${obs.before?.rps.sum}->${obs.after?.rps.sum} replicas=${obs.replicaRows} recent=${obs.recentRows}`,
    docs: () => `operations=${obs.operations?.length} expanded=${obs.expanded}`,
    auth: () => `asked=${obs.askedForKey} session=${obs.storage?.sessionKeyMatches} dashboardAskedAgain=${obs.dashboardAskedAgain}`,
  }[scenario];
  let line = `${scenario}: ${obs.ok ? 'ok' : 'FAIL'}`;
  try { line += ` ${facts()}`; } catch { /* a step before these facts failed */ }
  if (obs.transcript) line += ` transcript="${obs.transcript.slice(0, 60)}${obs.transcript.length > 60 ? '…' : ''}"`;
  if (!obs.ok) line += ` error=${obs.error}`;
  return line;
}

async function main() {
  await mkdir(outDir, { recursive: true });
  const watchdog = setTimeout(() => {
    obs.error = `the scenario took longer than ${WHOLE_MS / 1000} s`;
    writeFile(path.join(outDir, `${scenario}.json`), JSON.stringify(obs, null, 2)).finally(() => {
      console.log(summary());
      console.error(`${scenario} failed: ${obs.error}`);
      process.exit(1);
    });
  }, WHOLE_MS);
  try {
    await { upload, record, live, live_auth: live, dashboard, docs, auth }[scenario]();
  } catch (err) {
    fail(String(err && err.message || err).split('\n')[0]);
    obs.stack = String(err && err.stack || err);
  }
  // The auth scenario's first call (before the key is given) is answered 401,
  // and Chromium logs that failed resource load as a console error: that
  // one message is expected and ignored there (and on a dashboard that had
  // to ask for the key, with auth.metrics_requires_key).
  let problems = obs.console;
  if (scenario === 'auth' || obs.askedForKey) {
    const i = problems.findIndex((m) => m.type === 'error' && /\b401\b/.test(m.text));
    if (i >= 0) {
      obs.ignoredConsole = problems[i];
      problems = problems.filter((_, j) => j !== i);
    }
  }
  if (problems.length) fail(`console ${problems[0].type}: ${problems[0].text}${problems.length > 1 ? ` (+${problems.length - 1} more)` : ''}`);
  if (obs.pageErrors.length) fail(`page error: ${obs.pageErrors[0].message.split('\n')[0]}`);
  if (obs.foreignRequests.length) fail(`requests to other hosts: ${obs.foreignRequests.join(', ')}`);
  obs.ok = failures.length === 0;
  obs.error = obs.ok ? null : failures.join('; ');
  clearTimeout(watchdog);
  await writeFile(path.join(outDir, `${scenario}.json`), JSON.stringify(obs, null, 2));
  console.log(summary());
  if (!obs.ok) console.error(`${scenario} failed: ${obs.error}`);
  process.exit(obs.ok ? 0 : 1);
}

main();
