// Shared by the transcribe page and the dashboard: the API key (kept in
// sessionStorage only), a fetch wrapper that asks for the key on 401, error
// display and formatting helpers.

export const KEY_NAME = 'whisper-serve-key';

/**
 * getUserMedia's constraints for a recording or a live session. The
 * browser's voice processing is made for a listener on a call: its noise
 * suppression clips the first sounds of a word after a pause and its gain
 * control swells the noise between words, both of which Whisper (trained on
 * unprocessed audio) mishears ("Ask not" came out "Ask, knock!" and
 * "fast enough."). Echo cancellation stays: a loudspeaker near the
 * microphone would be transcribed too.
 */
export const MICROPHONE = {
  audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
};

export function getKey() {
  try {
    return sessionStorage.getItem(KEY_NAME) || '';
  } catch {
    return '';
  }
}

function setKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_NAME, key);
    else sessionStorage.removeItem(KEY_NAME);
  } catch {
    // Storage can be disabled; the key then lives for this page only.
  }
  document.dispatchEvent(new Event('apikeychange'));
}

export function authHeaders() {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** An error answered by the API (or a network failure when status is 0). */
export class ApiError extends Error {
  constructor(message, status = 0, code = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** Builds an ApiError from a response body in the `{"error": {...}}` shape. */
export function errorFromBody(status, text, statusText = '') {
  let message = '';
  let code = null;
  try {
    const body = JSON.parse(text);
    const err = body && body.error;
    if (err && typeof err === 'object') {
      message = err.message || '';
      code = err.code || err.type || null;
    } else if (typeof err === 'string') {
      message = err;
    } else if (body && typeof body.detail === 'string') {
      message = body.detail;
    }
  } catch {
    // Not JSON: fall through to the status line.
  }
  if (!message) message = `The server answered ${status}${statusText ? ` ${statusText}` : ''}.`;
  return new ApiError(message, status, code);
}

// One prompt at a time: callers that hit 401 while it is open wait for it.
let pendingPrompt = null;

/**
 * Opens the API key dialog (markup in each page: dialog#key-dialog holding
 * input#api-key and button#api-key-save) and resolves with the saved key.
 * Rejects with an ApiError (status 401) when the user cancels.
 */
export function askForKey(reason = '') {
  if (pendingPrompt) return pendingPrompt;
  const dialog = document.getElementById('key-dialog');
  const form = document.getElementById('api-key-form');
  const input = document.getElementById('api-key');
  const msg = document.getElementById('api-key-msg');
  const cancel = document.getElementById('api-key-cancel');
  pendingPrompt = new Promise((resolve, reject) => {
    msg.textContent = reason || 'This server needs an API key. It is kept in this tab only (sessionStorage).';
    input.value = '';
    const finish = (key) => {
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      pendingPrompt = null;
      if (key) resolve(key);
      else reject(new ApiError('An API key is needed to use this server.', 401, 'invalid_api_key'));
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) {
        input.focus();
        return;
      }
      setKey(key);
      finish(key);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish('');
    };
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    input.focus();
  });
  return pendingPrompt;
}

/** Prompts for a new key after a 401; forgets a key the server refused. */
export function handleUnauthorized() {
  const hadKey = Boolean(getKey());
  setKey('');
  return askForKey(hadKey ? 'The saved API key was not accepted. Enter another one.' : '');
}

/**
 * fetch() with the key attached; on 401 asks for a key and retries.
 * `timeoutMs` (optional) aborts an attempt that takes longer. Resolves with the Response when it is ok, rejects with ApiError otherwise.
 */
export async function apiFetch(path, options = {}) {
  const { timeoutMs, ...init } = options;
  for (;;) {
    let res;
    // A fresh timer per attempt: the key prompt may take any time.
    const ctrl = timeoutMs ? new AbortController() : null;
    const timer = ctrl && setTimeout(() => ctrl.abort(), timeoutMs);
    try {
      res = await fetch(path, {
        ...init,
        signal: ctrl ? ctrl.signal : init.signal,
        headers: { Accept: 'application/json', ...(init.headers || {}), ...authHeaders() },
      });
    } catch (err) {
      if (err && err.name === 'AbortError') throw new ApiError('The request timed out.', 0, 'timeout');
      throw new ApiError('Could not reach the server.', 0, 'network');
    } finally {
      clearTimeout(timer);
    }
    if (res.status === 401) {
      await handleUnauthorized();
      continue;
    }
    if (!res.ok) throw errorFromBody(res.status, await res.text(), res.statusText);
    return res;
  }
}

/** Shows a message in the page's #error (role="alert"); empty hides it. */
export function showError(message) {
  const el = document.getElementById('error');
  if (!el) return;
  el.textContent = message || '';
  el.hidden = !message;
}

export function clearError() {
  showError('');
}

/** Wires the header's "API key" button to the dialog (to set or change it). */
export function setupKeyButton(onSaved) {
  const button = document.getElementById('key-button');
  if (!button) return;
  const refresh = () => {
    button.textContent = getKey() ? 'API key (set)' : 'API key';
  };
  refresh();
  document.addEventListener('apikeychange', refresh);
  button.addEventListener('click', () => {
    askForKey('Enter the API key for this server. It is kept in this tab only (sessionStorage).')
      .then(() => {
        if (onSaved) onSaved();
      })
      .catch(() => {});
  });
}

// ---- formatting ----

const pad = (n, width = 2) => String(n).padStart(width, '0');

/** 75.25 -> "01:15.3" (minutes may exceed 59). */
export function clock(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  let m = Math.floor(s / 60);
  let rest = Math.round((s - m * 60) * 10) / 10;
  if (rest >= 60) {
    m += 1;
    rest -= 60;
  }
  return `${pad(m)}:${rest.toFixed(1).padStart(4, '0')}`;
}

/** Subtitle timestamp: "00:00:02,500" (srt) or "00:00:02.500" (vtt). */
export function subtitleTime(seconds, sep) {
  const ms = Math.max(0, Math.round((Number(seconds) || 0) * 1000));
  const h = Math.floor(ms / 3600000);
  const m = Math.floor((ms % 3600000) / 60000);
  const s = Math.floor((ms % 60000) / 1000);
  return `${pad(h)}:${pad(m)}:${pad(s)}${sep}${pad(ms % 1000, 3)}`;
}

function subtitles(result, sep) {
  return (result.segments || []).map((seg, i) => {
    const times = `${subtitleTime(seg.start, sep)} --> ${subtitleTime(seg.end, sep)}`;
    return `${sep === ',' ? `${i + 1}\n` : ''}${times}\n${(seg.text || '').trim()}\n\n`;
  }).join('');
}

/** Download formats of a verbose_json result: extension -> [MIME type, text builder]. */
export const EXPORTS = {
  txt: ['text/plain', (r) => `${(r.text || '').trim()}\n`],
  srt: ['application/x-subrip', (r) => subtitles(r, ',')],
  vtt: ['text/vtt', (r) => `WEBVTT\n\n${subtitles(r, '.')}`],
  json: ['application/json', (r) => `${JSON.stringify(r, null, 2)}\n`],
};

/** Time of day, "HH:MM:SS", from a Date or epoch milliseconds. */
export function timeOfDay(value = new Date()) {
  const d = value instanceof Date ? value : new Date(value);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** 3725 -> "1h 02m 05s"; 42.3 -> "42s". */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d) return `${d}d ${pad(h)}h ${pad(m)}m`;
  if (h) return `${h}h ${pad(m)}m ${pad(sec)}s`;
  if (m) return `${m}m ${pad(sec)}s`;
  return `${sec}s`;
}

/** A number with at most `digits` decimals, or "—" for null. */
export function num(value, digits = 2) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return '—';
  const n = Number(value);
  return String(Math.round(n * 10 ** digits) / 10 ** digits);
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Marks the nav link of the current page. */
export function markCurrentNav() {
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === location.pathname) a.setAttribute('aria-current', 'page');
  }
}
