// The transcribe page's live mode: the microphone, through an AudioWorklet
// (pcm-worklet.js: 24 kHz pcm16 in ~100 ms chunks), streamed to
// GET /v1/realtime?intent=transcription (OpenAI's realtime transcription
// events) with server VAD. Each turn is a paragraph: committed text grows
// with the `delta` events; while the turn is open a muted "partial"
// indicator follows it; `completed` replaces it with the final transcript.

import { apiFetch, clock, errorFromBody, getKey, MICROPHONE } from '/assets/common.js';

const $ = (id) => document.getElementById(id);

const RATE = 24000;
/** Audio kept while the session is being set up (chunks of 100 ms). */
const MAX_PENDING = 150;
/** How long Stop waits for the last turn's transcript before closing. */
const FINISH_MS = 20000;

const EVENTS = {
  delta: 'conversation.item.input_audio_transcription.delta',
  completed: 'conversation.item.input_audio_transcription.completed',
  failed: 'conversation.item.input_audio_transcription.failed',
};

/** What a close code means, for the message shown. */
const CLOSE_REASONS = {
  1001: 'the server is shutting down',
  1006: 'the connection was lost',
  1008: 'the server ended it (policy)',
  1009: 'a message was too large',
  1011: 'a server error',
  1013: 'the server is busy; try again later',
};

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function socketUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/v1/realtime?intent=transcription`;
}

/**
 * Wires the live panel. `languages` is a <select> whose options are copied
 * into the live language list (one list of languages for the page).
 */
export function setupLive({ languages } = {}) {
  const el = {
    toggle: $('live-toggle'), label: $('live-label'), time: $('live-time'), level: $('live-level'),
    language: $('live-language'), spinner: $('live-spinner'), status: $('live-status'), error: $('live-error'),
    transcript: $('live-transcript'), empty: $('live-empty'), download: $('live-download'), clear: $('live-clear'),
    panel: $('live-panel'),
  };
  if (!el.toggle) return null;
  if (languages && !el.language.options.length) {
    for (const o of languages.options) el.language.append(new Option(o.textContent, o.value));
    el.language.value = languages.value;
  }

  // phase: idle → connecting → live → finishing → idle
  let phase = 'idle';
  let s = null; // the running session's resources
  const turns = new Map(); // item_id -> { p, committed, partial, text, state }

  // ---- display ----

  function setStatus(status, text, busy = false) {
    el.status.dataset.status = status;
    el.status.textContent = text;
    el.spinner.hidden = !busy;
  }

  function showError(message) {
    el.error.textContent = message || '';
    el.error.hidden = !message;
  }

  function setPhase(next) {
    phase = next;
    const on = next !== 'idle';
    el.toggle.classList.toggle('recording', next === 'live');
    el.toggle.setAttribute('aria-pressed', String(on));
    el.label.textContent = { idle: 'Start', connecting: 'Cancel', live: 'Stop', finishing: 'Finishing…' }[next];
    el.toggle.disabled = next === 'finishing';
    el.language.disabled = on;
    if (el.panel) el.panel.dataset.phase = next;
    if (!on) el.level.value = 0;
  }

  function updateTools() {
    const any = turns.size > 0;
    el.empty.hidden = any;
    el.clear.disabled = !any;
    el.download.disabled = !finalText();
  }

  /** Keeps the newest text in view when the reader is at the bottom already. */
  function follow(atBottom) {
    if (atBottom) el.transcript.scrollTop = el.transcript.scrollHeight;
  }

  function nearBottom() {
    const t = el.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 40;
  }

  function turn(itemId) {
    let t = turns.get(itemId);
    if (t) return t;
    const p = document.createElement('p');
    p.className = 'turn';
    p.dataset.itemId = itemId;
    const committed = document.createElement('span');
    committed.className = 'committed';
    const partial = document.createElement('span');
    partial.className = 'partial';
    // The status line says what is going on; a reader hears the words only.
    partial.setAttribute('aria-hidden', 'true');
    p.append(committed, partial);
    const bottom = nearBottom();
    el.transcript.append(p);
    t = { p, committed, partial, text: '', state: 'open' };
    turns.set(itemId, t);
    render(t);
    updateTools();
    follow(bottom);
    return t;
  }

  function render(t) {
    t.p.dataset.state = t.state;
    t.p.classList.toggle('final', t.state === 'final');
    t.p.classList.toggle('failed', t.state === 'failed');
    t.committed.textContent = t.text;
    let hint = '';
    if (t.state === 'open') hint = t.text ? ' …' : 'listening…';
    else if (t.state === 'closing') hint = t.text ? ' …' : 'transcribing…';
    else if (t.state === 'failed') hint = t.text ? ' (not transcribed to the end)' : '(not transcribed)';
    else if (t.state === 'cut') hint = ' (stopped before the turn ended)';
    t.partial.textContent = hint;
    t.partial.hidden = !hint;
  }

  function openTurns() {
    return [...turns.values()].filter((t) => t.state === 'open' || t.state === 'closing');
  }

  function finalText() {
    return [...turns.values()].filter((t) => t.state !== 'open' && t.state !== 'closing' && t.text)
      .map((t) => t.text).join('\n');
  }

  function listeningStatus() {
    if (phase !== 'live') return;
    const speaking = [...turns.values()].some((t) => t.state === 'open');
    setStatus(speaking ? 'speaking' : 'listening', speaking ? 'Hearing speech…' : 'Listening…');
  }

  // ---- server events ----

  function onEvent(ev) {
    switch (ev.type) {
      case 'session.updated':
      case 'transcription_session.updated':
        if (!s.configured) {
          s.configured = true;
          for (const chunk of s.pending) send({ type: 'input_audio_buffer.append', audio: base64(chunk) });
          s.pending = [];
          setPhase('live');
          listeningStatus();
        }
        break;
      case 'input_audio_buffer.speech_started': {
        const t = turn(ev.item_id);
        t.state = 'open';
        render(t);
        listeningStatus();
        break;
      }
      case 'input_audio_buffer.speech_stopped':
      case 'input_audio_buffer.committed': {
        const t = turn(ev.item_id);
        if (t.state === 'open') {
          t.state = 'closing';
          render(t);
        }
        listeningStatus();
        break;
      }
      case EVENTS.delta: {
        const bottom = nearBottom();
        const t = turn(ev.item_id);
        t.text += ev.delta || '';
        render(t);
        follow(bottom);
        break;
      }
      case EVENTS.completed: {
        const bottom = nearBottom();
        const t = turn(ev.item_id);
        t.text = (ev.transcript || '').trim();
        if (!t.text) {
          // The VAD heard something that held no words: no paragraph.
          t.p.remove();
          turns.delete(ev.item_id);
        } else {
          t.state = 'final';
          render(t);
        }
        updateTools();
        follow(bottom);
        listeningStatus();
        s.onSettled?.();
        break;
      }
      case EVENTS.failed: {
        const t = turn(ev.item_id);
        t.state = 'failed';
        render(t);
        showError(`A turn could not be transcribed: ${(ev.error && ev.error.message) || 'unknown error'}.`);
        listeningStatus();
        s.onSettled?.();
        break;
      }
      case 'error': {
        const err = ev.error || {};
        // Stop commits the open turn; the VAD may have just ended it itself.
        if (phase === 'finishing' && err.code === 'input_audio_buffer_commit_empty') break;
        s.lastError = err.message || err.code || 'unknown error';
        showError(`The server reported an error: ${s.lastError}`);
        break;
      }
      default:
        break;
    }
  }

  function send(event) {
    if (s && s.ws && s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify(event));
  }

  function onChunk(data) {
    if (!s || !data || !data.pcm) return;
    el.level.value = Math.min(1, data.peak || 0);
    if (phase === 'finishing') return;
    if (s.configured) send({ type: 'input_audio_buffer.append', audio: base64(data.pcm) });
    else if (s.pending.length < MAX_PENDING) s.pending.push(data.pcm);
  }

  // ---- starting and stopping ----

  function sessionUpdate() {
    return {
      type: 'session.update',
      session: {
        type: 'transcription',
        audio: {
          input: {
            format: { type: 'audio/pcm', rate: RATE },
            transcription: { model: 'whisper-1', language: el.language.value || null },
            turn_detection: { type: 'server_vad', silence_duration_ms: 800 },
          },
        },
      },
    };
  }

  /** Stops the microphone and the audio graph (the socket is left alone). */
  function stopAudio(res) {
    if (!res) return;
    clearInterval(res.timer);
    res.timer = null;
    if (res.node) {
      res.node.port.onmessage = null;
      res.node.port.postMessage('stop');
      res.node.disconnect();
    }
    if (res.source) res.source.disconnect();
    if (res.stream) res.stream.getTracks().forEach((track) => track.stop());
    if (res.ctx && res.ctx.state !== 'closed') res.ctx.close().catch(() => {});
    res.node = null;
    res.source = null;
    res.stream = null;
    res.ctx = null;
  }

  /** Ends the session now: audio, socket, and any turn still open shows as cut short. */
  function teardown() {
    const res = s;
    s = null;
    if (!res) return;
    stopAudio(res);
    clearTimeout(res.finishTimer);
    if (res.ws) {
      res.closing = true;
      if (res.ws.readyState === WebSocket.OPEN || res.ws.readyState === WebSocket.CONNECTING) res.ws.close(1000);
    }
    for (const t of openTurns()) {
      // No completed event will come for these: keep what was committed.
      t.state = 'cut';
      if (!t.text) {
        t.p.remove();
        turns.delete(t.p.dataset.itemId);
      } else {
        render(t);
      }
    }
    updateTools();
    setPhase('idle');
  }

  /** Why the socket could not be opened, asked over plain HTTP. */
  async function handshakeError() {
    try {
      const key = getKey();
      const res = await fetch('/v1/realtime?intent=transcription', {
        headers: { Accept: 'application/json', ...(key ? { Authorization: `Bearer ${key}` } : {}) },
      });
      // 400: the route is there and admits us; the upgrade failed otherwise.
      if (res.status !== 400) return errorFromBody(res.status, await res.text(), res.statusText).message;
    } catch {
      // The server is unreachable: say so below.
    }
    return 'Could not connect to the server.';
  }

  async function start() {
    showError('');
    if (!navigator.mediaDevices || !window.AudioWorkletNode || !window.WebSocket) {
      showError('This browser cannot stream audio here (it needs HTTPS or localhost, and AudioWorklet support).');
      return;
    }
    const res = { pending: [], configured: false, closing: false, began: 0, lastError: '' };
    s = res;
    setPhase('connecting');
    setStatus('connecting', 'Connecting…', true);
    const cancelled = () => s !== res;
    try {
      // Asks for a key first when the server wants one (the socket cannot say 401).
      try {
        await apiFetch('/v1/models');
      } catch (err) {
        if (err.status === 401 || err.status === 0) throw err;
      }
      if (cancelled()) return;
      res.stream = await navigator.mediaDevices.getUserMedia(MICROPHONE);
      if (cancelled()) {
        res.stream.getTracks().forEach((track) => track.stop());
        return;
      }
      res.ctx = new AudioContext();
      await res.ctx.audioWorklet.addModule('/assets/pcm-worklet.js');
      if (cancelled()) return stopAudio(res);
      res.source = res.ctx.createMediaStreamSource(res.stream);
      res.node = new AudioWorkletNode(res.ctx, 'pcm-24k', { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
      res.node.port.onmessage = (event) => {
        if (s === res) onChunk(event.data);
      };
      // Silent, but connected to the output so that the graph runs.
      const mute = res.ctx.createGain();
      mute.gain.value = 0;
      res.source.connect(res.node);
      res.node.connect(mute).connect(res.ctx.destination);
      await res.ctx.resume();
    } catch (err) {
      if (cancelled()) return;
      stopAudio(res);
      s = null;
      setPhase('idle');
      setStatus('failed', 'Not started.');
      const name = err && err.name;
      if (name === 'NotAllowedError' || name === 'NotFoundError' || name === 'NotReadableError' || name === 'SecurityError') {
        showError(`The microphone is not available: ${err.message || name}.`);
      } else {
        showError(err && err.message ? err.message : String(err));
      }
      return;
    }
    if (cancelled()) return stopAudio(res);
    res.began = performance.now();
    el.time.textContent = '00:00';
    res.timer = setInterval(() => {
      el.time.textContent = clock((performance.now() - res.began) / 1000).slice(0, 5);
    }, 250);

    const key = getKey();
    let ws;
    try {
      ws = new WebSocket(socketUrl(), key ? ['realtime', `openai-insecure-api-key.${key}`] : ['realtime']);
    } catch (err) {
      teardown();
      setStatus('failed', 'Not started.');
      showError(`Could not open the live session: ${err.message || err}`);
      return;
    }
    res.ws = ws;
    let opened = false;
    ws.addEventListener('open', () => {
      opened = true;
      ws.send(JSON.stringify(sessionUpdate()));
    });
    ws.addEventListener('message', (event) => {
      if (s !== res || typeof event.data !== 'string') return;
      let ev;
      try {
        ev = JSON.parse(event.data);
      } catch {
        return;
      }
      onEvent(ev);
    });
    ws.addEventListener('close', async (event) => {
      if (res.closing) return; // we closed it
      const wasPhase = s === res ? phase : 'idle';
      if (s === res) teardown();
      if (wasPhase === 'finishing' || (event.code === 1000 && !res.lastError && wasPhase !== 'connecting')) {
        setStatus('stopped', 'Stopped.');
        return;
      }
      setStatus('failed', 'Disconnected.');
      if (!opened) {
        showError(`Could not open the live session: ${await handshakeError()}`);
        return;
      }
      const why = event.reason || CLOSE_REASONS[event.code] || 'closed by the server';
      const before = res.lastError ? `${res.lastError} ` : '';
      showError(`${before}The live session ended (${event.code}: ${why}).`);
    });
  }

  /** Stop: the microphone at once; the open turn is committed and its transcript awaited. */
  function stop() {
    if (phase === 'connecting') {
      teardown();
      setStatus('stopped', 'Cancelled.');
      return;
    }
    if (phase !== 'live' || !s) return;
    const res = s;
    stopAudio(res);
    setPhase('finishing');
    if (turns.size && [...turns.values()].some((t) => t.state === 'open')) {
      send({ type: 'input_audio_buffer.commit' });
    }
    const done = () => {
      if (s !== res) return;
      teardown();
      setStatus('stopped', 'Stopped.');
    };
    if (!openTurns().length) {
      done();
      return;
    }
    setStatus('finishing', 'Finishing the last turn…', true);
    res.onSettled = () => {
      if (!openTurns().length) done();
    };
    res.finishTimer = setTimeout(done, FINISH_MS);
  }

  el.toggle.addEventListener('click', () => {
    if (phase === 'idle') start();
    else stop();
  });

  el.clear.addEventListener('click', () => {
    for (const [id, t] of turns) {
      if (t.state !== 'open' && t.state !== 'closing') {
        t.p.remove();
        turns.delete(id);
      }
    }
    updateTools();
  });

  el.download.addEventListener('click', () => {
    const text = finalText();
    if (!text) return;
    const url = URL.createObjectURL(new Blob([`${text}\n`], { type: 'text/plain;charset=utf-8' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = 'live-transcript.txt';
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30000);
  });

  // Leaving the page ends the session (and frees the microphone).
  window.addEventListener('pagehide', () => {
    if (s) teardown();
  });

  setPhase('idle');
  updateTools();
  return {
    get phase() {
      return phase;
    },
    stop,
  };
}
