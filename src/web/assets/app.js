// The transcribe page: choose a file or record one, send it as a job
// (POST /v1/jobs, polled until done; the synchronous endpoint when the server
// has no job API), then show the transcript, its segments and downloads.
// The Live tab (live.js) streams the microphone and shows text as it comes.

import {
  ApiError, EXPORTS, apiFetch, authHeaders, bytes, clearError, clock, errorFromBody, getKey,
  handleUnauthorized, markCurrentNav, MICROPHONE, setupKeyButton, showError,
} from '/assets/common.js';
import { setupLive } from '/assets/live.js';

const $ = (id) => document.getElementById(id);
const el = {
  fileInput: $('file-input'), dropZone: $('drop-zone'), fileName: $('file-name'), player: $('player'),
  record: $('record'), recordLabel: $('record-label'), recordTime: $('record-time'),
  language: $('language'), task: $('task'), words: $('word-timestamps'), vad: $('vad'),
  transcribe: $('transcribe'), cancel: $('cancel'),
  progressBox: $('progress-box'), progress: $('upload-progress'), percent: $('upload-percent'),
  spinner: $('spinner'), status: $('job-status'), announce: $('status-announce'),
  result: $('result'), meta: $('result-meta'), text: $('transcript-text'), segments: $('segments'),
  wordsBox: $('words-box'), wordList: $('words'),
};

const POLL_MS = 400;
const FINAL = new Set(['completed', 'failed', 'cancelled']);

const state = {
  audio: null, // the File to send
  audioUrl: null, // its object URL, for the player
  recorder: null,
  busy: false,
  xhr: null,
  jobId: null,
  started: 0,
  tick: null,
  result: null,
  stopAt: null, // where segment playback stops
  segmentSeek: false, // the next seek is a segment's, not the user's
  accessChecked: false,
  noJobs: false, // POST /v1/jobs answered 404/405: use the synchronous endpoint
};

// ---- choosing audio ----

function chooseAudio(file) {
  if (state.audioUrl) URL.revokeObjectURL(state.audioUrl);
  state.audio = file;
  state.audioUrl = URL.createObjectURL(file);
  el.player.src = state.audioUrl;
  el.player.hidden = false;
  el.fileName.textContent = `${file.name} · ${bytes(file.size)}`;
  Object.assign(el.fileName.dataset, { name: file.name, type: file.type, size: String(file.size) });
  updateButtons();
}

el.fileInput.addEventListener('change', () => {
  const file = el.fileInput.files && el.fileInput.files[0];
  if (file) chooseAudio(file);
});

el.dropZone.addEventListener('click', () => el.fileInput.click());
el.dropZone.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' || event.key === ' ') {
    event.preventDefault();
    el.fileInput.click();
  }
});
el.dropZone.addEventListener('dragover', (event) => {
  event.preventDefault();
  el.dropZone.classList.add('dragging');
});
el.dropZone.addEventListener('dragleave', () => el.dropZone.classList.remove('dragging'));
el.dropZone.addEventListener('drop', (event) => {
  event.preventDefault();
  el.dropZone.classList.remove('dragging');
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) chooseAudio(file);
});

// ---- recording ----

const RECORD_TYPES = ['audio/webm;codecs=opus', 'audio/webm', 'audio/ogg;codecs=opus', 'audio/mp4'];

function extensionFor(mime) {
  if (mime.includes('webm')) return 'webm';
  if (mime.includes('ogg')) return 'ogg';
  // The server's default formats list .m4a, not .mp4; same container.
  if (mime.includes('mp4')) return 'm4a';
  return 'webm';
}

async function startRecording() {
  clearError();
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError('This browser cannot record audio here (it needs HTTPS or localhost).');
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(MICROPHONE);
  } catch (err) {
    showError(`The microphone is not available: ${err.message || err.name}.`);
    return;
  }
  const mimeType = RECORD_TYPES.find((t) => MediaRecorder.isTypeSupported(t));
  const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : {});
  const chunks = [];
  const began = performance.now();
  recorder.addEventListener('dataavailable', (event) => {
    if (event.data && event.data.size) chunks.push(event.data);
  });
  recorder.addEventListener('stop', () => {
    clearInterval(timer);
    stream.getTracks().forEach((track) => track.stop());
    const type = (recorder.mimeType || mimeType || 'audio/webm').split(';')[0];
    const file = new File(chunks, `recording.${extensionFor(type)}`, { type });
    state.recorder = null;
    setRecordingUi(false);
    if (file.size) chooseAudio(file);
    else showError('The recording is empty.');
  });
  const timer = setInterval(() => {
    el.recordTime.textContent = clock((performance.now() - began) / 1000).slice(0, 5);
  }, 250);
  el.recordTime.textContent = '00:00';
  recorder.start(250);
  state.recorder = recorder;
  setRecordingUi(true);
}

function setRecordingUi(on) {
  el.record.classList.toggle('recording', on);
  el.record.setAttribute('aria-pressed', String(on));
  el.recordLabel.textContent = on ? 'Stop' : 'Record';
  updateButtons();
}

el.record.addEventListener('click', () => {
  if (state.recorder) state.recorder.stop();
  else startRecording();
});

// ---- status display ----

function setStatus(status, text) {
  el.status.dataset.status = status;
  el.status.textContent = text;
  if (el.announce.dataset.status !== status) {
    el.announce.dataset.status = status;
    el.announce.textContent = text;
  }
}

const LABELS = { uploading: 'Uploading', queued: 'Queued', running: 'Transcribing', transcribing: 'Transcribing' };

function elapsed() {
  return ((performance.now() - state.started) / 1000).toFixed(1);
}

function showProgress(status) {
  setStatus(status, `${LABELS[status] || status}… ${elapsed()} s`);
}

function setBusy(busy) {
  state.busy = busy;
  el.spinner.hidden = !busy;
  el.cancel.hidden = !busy;
  clearInterval(state.tick);
  if (busy) {
    state.tick = setInterval(() => {
      const status = el.status.dataset.status;
      if (LABELS[status]) showProgress(status);
    }, 200);
  }
  updateButtons();
}

function updateButtons() {
  el.transcribe.disabled = !state.audio || state.busy || Boolean(state.recorder);
  el.record.disabled = state.busy;
}

// ---- sending ----

function buildForm(sync) {
  const form = new FormData();
  form.append('file', state.audio, state.audio.name);
  if (sync) form.append('model', 'whisper-1');
  form.append('response_format', 'verbose_json');
  form.append('timestamp_granularities[]', 'segment');
  if (el.words.checked) form.append('timestamp_granularities[]', 'word');
  form.append('language', el.language.value);
  form.append('task', el.task.value);
  form.append('vad_filter', el.vad.checked ? 'true' : 'false');
  return form;
}

/** POSTs a form with XMLHttpRequest, so the upload's progress can be shown. */
function upload(url, form, onUploaded) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    state.xhr = xhr;
    xhr.open('POST', url);
    xhr.setRequestHeader('Accept', 'application/json');
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    el.progress.value = 0;
    el.percent.textContent = '0%';
    el.progressBox.hidden = false;
    xhr.upload.addEventListener('progress', (event) => {
      if (!event.lengthComputable) return;
      const fraction = event.loaded / event.total;
      el.progress.value = fraction;
      el.percent.textContent = `${Math.round(fraction * 100)}%`;
    });
    xhr.upload.addEventListener('load', () => {
      el.progress.value = 1;
      el.percent.textContent = '100%';
      onUploaded();
    });
    xhr.addEventListener('load', () => {
      state.xhr = null;
      resolve({ status: xhr.status, statusText: xhr.statusText, text: xhr.responseText });
    });
    xhr.addEventListener('error', () => {
      state.xhr = null;
      reject(new ApiError('Could not reach the server.', 0, 'network'));
    });
    xhr.addEventListener('abort', () => {
      state.xhr = null;
      reject(new ApiError('Cancelled.', 0, 'cancelled'));
    });
    xhr.send(form);
  });
}

/**
 * Without a stored key, checks with a cheap GET whether the server wants one,
 * so the prompt comes before the upload and not after it.
 */
async function ensureAccess() {
  if (state.accessChecked || getKey()) return;
  try {
    await apiFetch('/v1/models');
  } catch (err) {
    if (err.status === 401 || err.status === 0) throw err;
  }
  state.accessChecked = true;
}

/** Sends the audio; resolves with the verbose_json result, or null when cancelled. */
async function send() {
  for (;;) {
    const sync = state.noJobs;
    showProgress('uploading');
    const res = await upload(sync ? '/v1/audio/transcriptions' : '/v1/jobs', buildForm(sync), () => {
      if (sync) showProgress('transcribing');
    });
    if (res.status === 401) {
      await handleUnauthorized();
      continue;
    }
    if (!sync && (res.status === 404 || res.status === 405)) {
      state.noJobs = true; // no job API on this server
      continue;
    }
    if (sync && res.status === 200) return JSON.parse(res.text);
    if (!sync && res.status === 202) return poll(JSON.parse(res.text));
    throw errorFromBody(res.status, res.text, res.statusText);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function poll(job) {
  state.jobId = job.id;
  let failures = 0;
  while (!FINAL.has(job.status)) {
    showProgress(job.status);
    await sleep(POLL_MS);
    try {
      job = await (await apiFetch(`/v1/jobs/${encodeURIComponent(job.id)}`)).json();
      failures = 0;
    } catch (err) {
      // Ride out a brief outage; give up on real errors (404: job gone).
      if (err.status !== 0 || ++failures > 15) throw err;
    }
  }
  state.jobId = null;
  if (job.status === 'cancelled') return null;
  if (job.status === 'failed') {
    throw new ApiError((job.error && job.error.message) || 'The transcription failed.', 500, job.error && job.error.code);
  }
  return typeof job.result === 'string' ? JSON.parse(job.result) : job.result;
}

el.transcribe.addEventListener('click', async () => {
  if (!state.audio || state.busy) return;
  clearError();
  el.result.hidden = true;
  state.started = performance.now();
  setBusy(true);
  try {
    await ensureAccess();
    const result = await send();
    if (result) {
      setStatus('completed', `Completed in ${elapsed()} s`);
      render(result);
    } else {
      setStatus('cancelled', 'Cancelled');
    }
  } catch (err) {
    if (err.code === 'cancelled') {
      setStatus('cancelled', 'Cancelled');
    } else {
      setStatus('failed', 'Failed');
      showError(err.message);
    }
  } finally {
    state.jobId = null;
    setBusy(false);
  }
});

el.cancel.addEventListener('click', async () => {
  if (state.xhr) {
    state.xhr.abort();
    return;
  }
  if (!state.jobId) return;
  el.cancel.disabled = true;
  try {
    await apiFetch(`/v1/jobs/${encodeURIComponent(state.jobId)}`, { method: 'DELETE' });
  } catch (err) {
    showError(err.message);
  } finally {
    el.cancel.disabled = false;
  }
});

// ---- the result ----

function languageName(code) {
  if (!code) return 'unknown';
  // verbose_json names the language in full ("english"), as OpenAI does.
  if (code.length > 3) return code[0].toUpperCase() + code.slice(1);
  try {
    const name = new Intl.DisplayNames(['en'], { type: 'language' }).of(code);
    return name && name !== code ? `${name} (${code})` : code;
  } catch {
    return code;
  }
}

function render(result) {
  state.result = result;
  const segments = result.segments || [];
  el.meta.textContent = `Language: ${languageName(result.language)} · Duration: ${clock(result.duration)} · `
    + `${segments.length} segment${segments.length === 1 ? '' : 's'}`;
  el.text.textContent = (result.text || '').trim();
  el.segments.replaceChildren(...segments.map((seg) => {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'segment';
    button.dataset.start = seg.start;
    button.dataset.end = seg.end;
    const time = document.createElement('span');
    time.className = 'time';
    time.textContent = `[${clock(seg.start)} → ${clock(seg.end)}]`;
    button.append(time, ` ${(seg.text || '').trim()}`);
    li.append(button);
    return li;
  }));
  const words = result.words || [];
  el.wordsBox.hidden = !words.length;
  el.wordsBox.querySelector('summary').textContent = `Words (${words.length})`;
  el.wordList.replaceChildren(...words.map((w) => {
    const span = document.createElement('span');
    span.className = 'word';
    span.title = `${clock(w.start)} → ${clock(w.end)}`;
    span.textContent = w.word.trim();
    return span;
  }));
  el.result.hidden = false;
}

// A <button> already fires click on Enter and Space.
el.segments.addEventListener('click', (event) => {
  const button = event.target.closest('button.segment');
  if (!button || !state.audioUrl) return;
  state.segmentSeek = true;
  el.player.currentTime = Number(button.dataset.start);
  state.stopAt = Number(button.dataset.end);
  for (const b of el.segments.querySelectorAll('.segment')) b.classList.toggle('playing', b === button);
  el.player.play().catch(() => {});
});

el.player.addEventListener('timeupdate', () => {
  if (state.stopAt !== null && el.player.currentTime >= state.stopAt) {
    state.stopAt = null;
    el.player.pause();
  }
});
el.player.addEventListener('pause', () => {
  for (const b of el.segments.querySelectorAll('.segment.playing')) b.classList.remove('playing');
});
// A seek made with the player's own controls ends segment playback.
el.player.addEventListener('seeking', () => {
  if (state.segmentSeek) state.segmentSeek = false;
  else state.stopAt = null;
});

// ---- downloads ----

for (const [ext, [type, make]] of Object.entries(EXPORTS)) {
  $(`download-${ext}`).addEventListener('click', () => {
    if (!state.result) return;
    const url = URL.createObjectURL(new Blob([make(state.result)], { type: `${type};charset=utf-8` }));
    const a = document.createElement('a');
    a.href = url;
    a.download = `transcript.${ext}`;
    document.body.append(a);
    a.click();
    a.remove();
    // Revoking at once can cancel the download in some browsers.
    setTimeout(() => URL.revokeObjectURL(url), 30000);
  });
}

// ---- modes: file or recording / live ----

const TABS = [$('tab-file'), $('tab-live')];

function selectMode(tab, focus = false) {
  for (const t of TABS) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute('aria-controls')).hidden = !on;
  }
  if (focus) tab.focus();
  const hash = tab.id === 'tab-live' ? '#live' : '';
  if (location.hash !== hash) history.replaceState(null, '', `${location.pathname}${location.search}${hash}`);
}

for (const [i, tab] of TABS.entries()) {
  tab.addEventListener('click', () => selectMode(tab));
  tab.addEventListener('keydown', (event) => {
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    selectMode(TABS[(next + TABS.length) % TABS.length], true);
  });
}
if (location.hash === '#live') selectMode($('tab-live'));

setupLive({ languages: el.language });

markCurrentNav();
setupKeyButton();
updateButtons();
