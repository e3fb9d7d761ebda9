#!/usr/bin/env python3
"""Realtime transcription at real time: commit latency, WER, and how many
live streams one machine holds. Plays the shared speech clips (refs.tsv)
into `GET /v1/realtime?intent=transcription` sessions as 24 kHz PCM16 in
100 ms appends, at real time, with server VAD (silence_duration_ms 500),
against a running whisper-serve (bench/realtime.sh starts one, runs the
standard set and stores the results).

    .venv/bin/python bench/realtime.py --url http://127.0.0.1:PORT \\
        [--streams 1,2,4,8,12,16] [--playlist-seconds 60] [--full-corpus] \\
        [--file-load 2 [--file-load-streams 8]] [--out results.json]

First every clip is transcribed once as a file (/v1/audio/transcriptions,
verbose_json, timestamp_granularities[]=word): its text is the file WER
baseline and its words' end times (the model's own alignment) are the
reference clock. Then, per run:

  latency   For each word a delta commits: the delta's arrival minus the
            moment the word's end was "spoken": word end time in the stream
            (clip offset + the file's word end), mapped to wall time through
            the send times of the 100 ms appends (ideally stream start +
            audio time; a client that falls behind is accounted for). A real
            client pays the chunking as well, so it is included (<= 100 ms);
            "after send" is the same from the send of the append holding the
            word's end (what the server adds). Streamed words are matched
            to the file's words by difflib on a normalised word sequence,
            per clip; unmatched words have no latency.
  WER       The `completed` transcripts of the turns in each clip (a turn
            belongs to the clip nearest its audio span), joined, against
            refs.tsv; the same clips as files beside it. Corpus WER with
            Whisper's English normaliser (as tests/support/wer.py).
  errors    `error` events, `...transcription.failed`, refused or dropped
            connections (close codes), turns not completed within
            --drain-timeout after the audio ends, connection failures.
  ok        median latency <= --max-latency (2 s) and no stream with errors.

Runs: --full-corpus plays every clip once in one stream (--tail s of
silence after each) for (a) latency and (b) WER; --streams N,... runs N
streams at once, each a ~--playlist-seconds playlist (the clips in a seeded
shuffled order, each stream from another place in it, --gap s between
clips, starts spread over --stagger s); --file-load K runs
--file-load-streams streams again with K clients posting the clips as files
in a loop meanwhile, and reports their throughput. Each stream opens with
0.5 s of silence and ends with --tail s; an open turn left at the end is
committed with input_audio_buffer.commit (counted). Clips with the same
reference (jfk.flac and jfk.wav) are played once.

Prints a table; --out writes the JSON (clips, file words, every run, each
stream) and a markdown table beside it (same name, .md).
Needs .venv (websockets, jiwer, whisper_normalizer) and ffmpeg or PyAV.
"""
import argparse
import asyncio
import base64
import difflib
import glob
import http.client
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import jiwer
import websockets
from websockets.asyncio.client import connect
from whisper_normalizer.english import EnglishTextNormalizer

RATE = 24_000
LEAD_S = 0.5
NORM = EnglishTextNormalizer()


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- corpus

class Clip:
    def __init__(self, name, path, ref, pcm):
        self.name, self.path, self.ref, self.pcm = name, path, ref, pcm
        self.dur = len(pcm) / 2 / RATE
        self.text = None   # file transcription
        self.words = []    # [(word, start, end)] from the file transcription


def pcm24k(path):
    """Mono PCM16 LE at 24 kHz."""
    if shutil.which("ffmpeg"):
        return subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "s16le", "-ac", "1", "-ar", str(RATE), "-"],
                              capture_output=True, check=True).stdout
    import av
    out = bytearray()
    with av.open(path) as c:
        rs = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        for frame in list(c.decode(audio=0)) + [None]:
            for f in rs.resample(frame):
                out += bytes(f.planes[0])[: f.samples * 2]
    return bytes(out)


def load_corpus(speech_dir):
    clips, seen = [], set()
    for refs in sorted(glob.glob(os.path.join(speech_dir, "*", "refs.tsv"))):
        d = os.path.dirname(refs)
        for line in open(refs, encoding="utf-8"):
            if "\t" not in line:
                continue
            name, ref = line.rstrip("\n").split("\t", 1)
            key = NORM(ref)
            if key in seen:  # the same recording in another container
                continue
            path = os.path.join(d, name)
            if not os.path.exists(path):
                continue
            seen.add(key)
            clips.append(Clip(f"{os.path.basename(d)}/{name}", path, ref, pcm24k(path)))
    return clips


# ---------------------------------------------------------------- files over HTTP

BOUNDARY = "rtbenchboundary5d1c"


def multipart(path, fields):
    body = bytearray()
    for k, v in fields:
        body += f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
    body += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{os.path.basename(path)}\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    body += open(path, "rb").read() + f"\r\n--{BOUNDARY}--\r\n".encode()
    return bytes(body)


class Http:
    def __init__(self, url, key, timeout=600):
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.key, self.timeout = u.hostname, u.port or 80, key, timeout
        self.conn = None

    def post(self, path, body):
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        for attempt in (0, 1):  # a kept-alive connection the server closed: once more on a new one
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


def transcribe_files(args, clips):
    """Each clip once as a file, with word timestamps; drops clips that fail."""
    def one(clip):
        fields = [("model", "whisper-1"), ("language", "en"), ("response_format", "verbose_json"),
                  ("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment")]
        try:
            status, body = Http(args.url, args.api_key).post("/v1/audio/transcriptions", multipart(clip.path, fields))
        except (OSError, http.client.HTTPException) as e:
            return clip, f"{type(e).__name__}: {e}"
        if status != 200:
            return clip, f"HTTP {status}: {body[:200]!r}"
        v = json.loads(body)
        clip.text = v.get("text", "")
        clip.words = [(w["word"], float(w["start"]), float(w["end"])) for w in v.get("words") or []]
        return clip, None

    ok, failed = [], []
    with ThreadPoolExecutor(2) as ex:
        for clip, err in ex.map(one, clips):
            if err:
                failed.append({"clip": clip.name, "error": err})
                log(f"file transcription failed, clip left out: {clip.name}: {err}")
            else:
                ok.append(clip)
    return ok, failed


# ---------------------------------------------------------------- one stream

class Stream:
    """One realtime session playing `clips` with silence between them."""

    def __init__(self, sid, clips, gap, tail, chunk_s):
        self.sid, self.chunk_s = sid, chunk_s
        silence = lambda s: b"\0\0" * int(round(s * RATE))
        pcm, self.layout = bytearray(silence(LEAD_S)), []  # layout: (clip, offset_s)
        for i, c in enumerate(clips):
            self.layout.append((c, len(pcm) / 2 / RATE))
            pcm += c.pcm + silence(tail if i == len(clips) - 1 else gap)
        step = int(RATE * chunk_s) * 2
        self.chunks = [bytes(pcm[i:i + step]) for i in range(0, len(pcm), step)]
        self.audio_s = len(pcm) / 2 / RATE
        self.speech_s = sum(c.dur for c in clips)
        self.sent_at = []      # monotonic time each chunk was sent
        self.t0 = None         # stream start: chunk i is due at t0 + (i + 1) * chunk_s
        self.items = {}        # item_id -> {start_ms, end_ms, committed, deltas: [(t, text)], transcript, failed}
        self.order = []        # item ids in order of speech_started
        self.errors = []       # strings
        self.events = Counter()
        self.forced_commits = 0
        self.close = None      # (code, reason) when the server closed the session
        self.changed = asyncio.Event()

    def item(self, item_id):
        if item_id not in self.items:
            self.items[item_id] = {"start_ms": None, "end_ms": None, "stopped_at": None, "committed": False, "deltas": [], "transcript": None, "failed": None}
            self.order.append(item_id)
        return self.items[item_id]

    def pending(self):
        """Turns begun and not yet completed or failed."""
        return [i for i, it in self.items.items() if it["transcript"] is None and it["failed"] is None]

    def on_event(self, t, raw):
        try:
            ev = json.loads(raw)
        except ValueError:
            self.errors.append(f"not JSON: {raw[:80]!r}")
            return
        kind = ev.get("type", "?")
        self.events[kind] += 1
        if kind == "error":
            e = ev.get("error") or {}
            self.errors.append(f"error event {e.get('code')}: {str(e.get('message'))[:160]}")
        elif kind == "input_audio_buffer.speech_started":
            self.item(ev["item_id"])["start_ms"] = ev.get("audio_start_ms")
        elif kind == "input_audio_buffer.speech_stopped":
            it = self.item(ev["item_id"])
            it["end_ms"], it["stopped_at"] = ev.get("audio_end_ms"), t
        elif kind == "input_audio_buffer.committed":
            self.item(ev["item_id"])["committed"] = True
        elif kind == "conversation.item.input_audio_transcription.delta":
            self.item(ev["item_id"])["deltas"].append((t, ev.get("delta", "")))
        elif kind == "conversation.item.input_audio_transcription.completed":
            it = self.item(ev["item_id"])
            it["transcript"] = ev.get("transcript", "")
            joined = "".join(d for _, d in it["deltas"])
            if joined != it["transcript"]:
                self.errors.append(f"deltas do not join to the transcript: {ev['item_id']}: {joined!r} vs {it['transcript']!r}")
        elif kind == "conversation.item.input_audio_transcription.failed":
            e = ev.get("error") or {}
            self.item(ev["item_id"])["failed"] = e.get("code")
            self.errors.append(f"transcription.failed {e.get('code')}: {str(e.get('message'))[:160]}")
        self.changed.set()

    async def run(self, args, delay):
        await asyncio.sleep(delay)
        u = urllib.parse.urlparse(args.url)
        uri = f"{'wss' if u.scheme == 'https' else 'ws'}://{u.netloc}/v1/realtime?intent=transcription"
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        try:
            async with connect(uri, additional_headers=headers, max_size=None, open_timeout=30,
                               ping_interval=20, ping_timeout=60, close_timeout=5) as ws:
                await self.session(ws, args)
        except websockets.exceptions.InvalidStatus as e:
            self.errors.append(f"connect refused (HTTP {e.response.status_code}): {e.response.body[:160]!r}")
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
            self.errors.append(f"connection failed ({type(e).__name__}): {e}")

    async def expect(self, ws, kind, timeout):
        end = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(ws.recv(), max(0.01, end - time.monotonic()))
            ev = json.loads(raw)
            self.events[ev.get("type", "?")] += 1
            if ev.get("type") == kind:
                return True
            if ev.get("type") == "error":
                e = ev.get("error") or {}
                self.errors.append(f"error event {e.get('code')} before {kind}: {str(e.get('message'))[:160]}")
                return False

    async def session(self, ws, args):
        if not await self.expect(ws, "session.created", 30):
            return
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": RATE},
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": args.silence_ms}}}}}))
        if not await self.expect(ws, "session.updated", 30):
            return
        closing = False

        async def receive():
            try:
                async for raw in ws:
                    self.on_event(time.monotonic(), raw)
            except websockets.exceptions.ConnectionClosed:
                pass
            if not closing:
                self.close = (ws.close_code, ws.close_reason)
                self.errors.append(f"server closed the session ({ws.close_code}): {ws.close_reason!r}")
            self.changed.set()

        receiver = asyncio.create_task(receive())
        self.t0 = time.monotonic()
        try:
            for i, chunk in enumerate(self.chunks):
                wait = self.t0 + (i + 1) * self.chunk_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if receiver.done():
                    break
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
                self.sent_at.append(time.monotonic())
            # The tail's silence should have ended the last turn; if one is
            # still open a little later, commit it.
            deadline = time.monotonic() + 2.0
            while not receiver.done() and time.monotonic() < deadline and any(
                    not self.items[i]["committed"] for i in self.pending()):
                await self.wait_change(deadline)
            if not receiver.done() and any(not self.items[i]["committed"] for i in self.pending()):
                self.forced_commits += 1
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            deadline = time.monotonic() + args.drain_timeout
            while not receiver.done() and self.pending() and time.monotonic() < deadline:
                await self.wait_change(deadline)
            if self.pending() and not receiver.done():
                self.errors.append(f"turns not completed {args.drain_timeout:.0f} s after the audio ended: {len(self.pending())}")
        except websockets.exceptions.ConnectionClosed:
            pass
        closing = not receiver.done()
        await ws.close()
        await receiver

    async def wait_change(self, deadline):
        self.changed.clear()
        try:
            await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            pass

    # ------------------------------------------------------------ analysis

    def wall(self, audio_t):
        """(wall time the audio at audio_t was spoken, send time of the append holding it)."""
        i = min(max(math.ceil(audio_t / self.chunk_s) - 1, 0), len(self.sent_at) - 1)
        sent = self.sent_at[i]
        return sent - max(0.0, (i + 1) * self.chunk_s - audio_t), sent

    def analyse(self):
        """Per clip: hypothesis text, and latencies of the matched words."""
        per_clip = {k: {"clip": c, "offset": off, "items": []} for k, (c, off) in enumerate(self.layout)}
        for item_id in self.order:
            it = self.items[item_id]
            if it["start_ms"] is None:
                continue
            a = it["start_ms"] / 1000
            b = (it["end_ms"] / 1000) if it["end_ms"] is not None else a + 0.5
            mid = (a + b) / 2
            dist = lambda k: max(per_clip[k]["offset"] - mid, mid - per_clip[k]["offset"] - per_clip[k]["clip"].dur, 0.0)
            k = min(per_clip, key=dist)
            per_clip[k]["items"].append(item_id)
        lat, lat_sent, lat_end, rows = [], [], [], []
        for k, pc in per_clip.items():
            clip, off = pc["clip"], pc["offset"]
            texts, words = [], []  # words: (norm, arrival, after the turn ended)
            for item_id in pc["items"]:
                it = self.items[item_id]
                texts.append(it["transcript"] if it["transcript"] is not None else "".join(d for _, d in it["deltas"]))
                text, owner = "", []
                for t, d in it["deltas"]:
                    text += d
                    owner += [t] * len(d)
                for m in re.finditer(r"\S+", text):
                    w = norm_word(m.group())
                    if w:
                        t = owner[m.end() - 1]
                        words.append((w, t, it["stopped_at"] is not None and t >= it["stopped_at"]))
            ref_words = [(norm_word(w), min(e, clip.dur)) for w, _, e in clip.words]
            ref_words = [(w, e) for w, e in ref_words if w]
            sm = difflib.SequenceMatcher(None, [w[0] for w in words], [w for w, _ in ref_words], autojunk=False)
            matched = 0
            if self.sent_at:
                for blk in sm.get_matching_blocks():
                    for j in range(blk.size):
                        arrival = words[blk.a + j][1]
                        spoken, sent = self.wall(off + ref_words[blk.b + j][1])
                        lat.append(arrival - spoken)
                        if words[blk.a + j][2]:
                            lat_end.append(arrival - spoken)
                        lat_sent.append(arrival - sent)
                        matched += 1
            rows.append({"clip": clip.name, "offset_s": round(off, 3), "turns": len(pc["items"]), "hyp": " ".join(t.strip() for t in texts),
                         "words_streamed": len(words), "words_file": len(ref_words), "words_matched": matched})
        crossing = 0
        for it in self.items.values():
            if it["start_ms"] is None or it["end_ms"] is None:
                continue
            a, b = it["start_ms"] / 1000, it["end_ms"] / 1000
            crossing += sum(1 for c, off in self.layout if a < off + c.dur and b > off) > 1
        return rows, lat, lat_sent, lat_end, crossing


def norm_word(w):
    return re.sub(r"[^a-z0-9']", "", w.lower()).strip("'")


# ---------------------------------------------------------------- a run

def playlists(clips, n, seconds, seed=0):
    order = list(clips)
    random.Random(seed).shuffle(order)
    out = []
    for j in range(n):
        start, pl, total = (j * max(1, len(order) // max(n, 1))) % len(order), [], 0.0
        while total < seconds or not pl:
            c = order[(start + len(pl)) % len(order)]
            pl.append(c)
            total += c.dur
        out.append(pl)
    return out


def file_load(args, clips, k, stop, stats):
    """Client k posts the clips as files in a loop until `stop` is set."""
    h = Http(args.url, args.api_key)
    fields = [("model", "whisper-1"), ("language", "en"), ("response_format", "json")]
    bodies = [(c, multipart(c.path, fields)) for c in clips]
    i = k * 7
    while not stop.is_set():
        c, body = bodies[i % len(bodies)]
        i += 1
        t = time.monotonic()
        try:
            status, _ = h.post("/v1/audio/transcriptions", body)
        except (OSError, http.client.HTTPException) as e:
            status = type(e).__name__
        done = time.monotonic()
        with stats["lock"]:
            stats["statuses"][str(status)] += 1
            if status == 200 and not stop.is_set():
                stats["ok"] += 1
                stats["audio_s"] += c.dur
                stats["latencies"].append(done - t)
        if status != 200:
            time.sleep(0.5)


async def run_streams(args, name, lists, file_clients=0, clips=None, gap=None):
    gap = args.gap if gap is None else gap
    streams = [Stream(j, pl, gap, args.tail, args.chunk_ms / 1000) for j, pl in enumerate(lists)]
    n = len(streams)
    log(f"run {name}: {n} stream(s) x ~{max(s.audio_s for s in streams):.0f} s" + (f", {file_clients} file client(s)" if file_clients else ""))
    stop, threads = threading.Event(), []
    fstats = {"lock": threading.Lock(), "statuses": Counter(), "ok": 0, "audio_s": 0.0, "latencies": []}
    for k in range(file_clients):
        threads.append(threading.Thread(target=file_load, args=(args, clips, k, stop, fstats), daemon=True))
        threads[-1].start()
    t_start = time.monotonic()
    budget = max(s.audio_s for s in streams) + args.stagger + args.drain_timeout + 120
    tasks = [asyncio.create_task(s.run(args, args.stagger * j / n)) for j, s in enumerate(streams)]
    done, late = await asyncio.wait(tasks, timeout=budget)
    for t in late:
        t.cancel()
    for s, t in zip(streams, tasks):
        if t in late:
            s.errors.append(f"cancelled: still running after {budget:.0f} s")
        elif t.exception():
            s.errors.append(f"client failure ({type(t.exception()).__name__}): {t.exception()}")
    stop.set()
    window = time.monotonic() - t_start
    for th in threads:
        th.join(timeout=120)
    return summarise(args, name, streams, file_clients, fstats, window)


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (pos - lo)


def wer(pairs):
    keep = [(NORM(r), NORM(h)) for r, h in pairs]
    keep = [(r, h) for r, h in keep if r.strip()]
    return jiwer.wer([r for r, _ in keep], [h for _, h in keep]) if keep else None


def summarise(args, name, streams, file_clients, fstats, window):
    lat, lat_sent, lat_end, per_stream, stream_pairs, file_pairs = [], [], [], [], [], []
    words = Counter()
    for s in streams:
        rows, l, ls, le, crossing = s.analyse() if s.sent_at else ([], [], [], [], 0)
        lat += l
        lat_sent += ls
        lat_end += le
        for r, (c, _) in zip(rows, s.layout):
            stream_pairs.append((c.ref, r["hyp"]))
            file_pairs.append((c.ref, c.text))
            for k in ("words_streamed", "words_file", "words_matched"):
                words[k] += r[k]
        if not s.sent_at:  # never got to send: its clips count as unheard
            for c, _ in s.layout:
                stream_pairs.append((c.ref, ""))
                file_pairs.append((c.ref, c.text))
        lag = max((t - (s.t0 + (i + 1) * s.chunk_s) for i, t in enumerate(s.sent_at)), default=None)
        per_stream.append({
            "stream": s.sid, "audio_s": round(s.audio_s, 2), "speech_s": round(s.speech_s, 2), "clips": len(s.layout),
            "sent_s": round(len(s.sent_at) * s.chunk_s, 2), "max_send_lag_s": None if lag is None else round(lag, 3),
            "turns": len(s.items), "turns_completed": sum(it["transcript"] is not None for it in s.items.values()),
            "turns_crossing_clips": crossing, "forced_commits": s.forced_commits,
            "latency_p50_s": rnd(pct(l, 0.5)), "latency_p90_s": rnd(pct(l, 0.9)), "words_matched": len(l),
            "errors": s.errors, "close": s.close, "events": dict(s.events), "per_clip": rows,
        })
    ws, wf = wer(stream_pairs), wer(file_pairs)
    lags = [p["max_send_lag_s"] for p in per_stream if p["max_send_lag_s"] is not None]
    errs = Counter(e.split(": ")[0] for s in streams for e in s.errors)
    r = {
        "name": name, "streams": len(streams), "file_clients": file_clients,
        "audio_s_per_stream": round(sum(s.audio_s for s in streams) / len(streams), 1),
        "latency_s": {"p50": rnd(pct(lat, 0.5)), "p90": rnd(pct(lat, 0.9)), "mean": rnd(sum(lat) / len(lat)) if lat else None,
                      "max": rnd(max(lat, default=None)), "words": len(lat)},
        "latency_after_send_s": {"p50": rnd(pct(lat_sent, 0.5)), "p90": rnd(pct(lat_sent, 0.9))},
        # Words sent after speech_stopped (the turn's last decode) against
        # words committed by agreement while the turn was open.
        "latency_turn_end_s": {"p50": rnd(pct(lat_end, 0.5)), "p90": rnd(pct(lat_end, 0.9)), "words": len(lat_end)},
        "words": dict(words),
        "wer_stream": rnd(ws, 4), "wer_file": rnd(wf, 4), "wer_diff_points": rnd((ws - wf) * 100, 2) if ws is not None and wf is not None else None,
        "streams_with_errors": sum(bool(s.errors) for s in streams), "errors": dict(errs),
        "max_send_lag_s": max(lags, default=None),
        "per_stream": per_stream,
    }
    if file_clients:
        fl = fstats["latencies"]
        r["file_load"] = {"clients": file_clients, "window_s": round(window, 1), "ok": fstats["ok"],
                          "statuses": dict(fstats["statuses"]), "files_per_s": round(fstats["ok"] / window, 3),
                          "audio_s_per_s": round(fstats["audio_s"] / window, 2),
                          "latency_p50_s": rnd(pct(fl, 0.5)), "latency_p95_s": rnd(pct(fl, 0.95))}
    p50 = r["latency_s"]["p50"]
    r["ok"] = p50 is not None and p50 <= args.max_latency and not r["streams_with_errors"]
    if r["max_send_lag_s"] is not None and r["max_send_lag_s"] > 0.25:
        log(f"run {name}: the client fell behind real time by up to {r['max_send_lag_s']:.2f} s (an overloaded machine?)")
    le = r["latency_turn_end_s"]
    log(f"run {name}: p50 {fmt(p50)} s, p90 {fmt(r['latency_s']['p90'])} s "
        f"(turn-end words {le['words']}/{len(lat)}: p50 {fmt(le['p50'])} s), WER {fmt(pc(ws))} % vs file {fmt(pc(wf))} %, "
        f"streams with errors {r['streams_with_errors']}" + (f": {dict(errs)}" if errs else ""))
    return r


def rnd(x, n=3):
    return None if x is None else round(x, n)


def pc(x):
    return None if x is None else x * 100


def fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


# ---------------------------------------------------------------- report

def table(res):
    head = ("| run | streams | file clients | audio/stream (s) | words matched | latency p50 (s) | p90 (s) | after send p50 / p90 (s) "
            "| WER stream % | WER file % | diff (pts) | streams with errors | file load | ok |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in res["runs"]:
        w = r["words"]
        f = r.get("file_load")
        fl = f"{f['files_per_s']:.2f} files/s, {f['audio_s_per_s']:.1f} audio-s/s, p50 {fmt(f['latency_p50_s'])} s, {f['statuses']}" if f else "-"
        errs = f"{r['streams_with_errors']}" + (f" ({'; '.join(f'{k} x{v}' for k, v in r['errors'].items())})" if r["errors"] else "")
        lines.append(f"| {r['name']} | {r['streams']} | {r['file_clients']} | {r['audio_s_per_stream']:.0f} "
                     f"| {w.get('words_matched', 0)}/{w.get('words_file', 0)} | {fmt(r['latency_s']['p50'])} | {fmt(r['latency_s']['p90'])} "
                     f"| {fmt(r['latency_after_send_s']['p50'])} / {fmt(r['latency_after_send_s']['p90'])} "
                     f"| {fmt(pc(r['wer_stream']))} | {fmt(pc(r['wer_file']))} | {fmt(r['wer_diff_points'], '+.2f')} "
                     f"| {errs} | {fl} | {'yes' if r['ok'] else 'no'} |")
    return "\n".join(lines)


def markdown(res, args):
    a = res["args"]
    md = [f"# Realtime transcription at real time ({res['date']})\n",
          f"Server {a['url']}; {res['corpus']['clips']} clips, {res['corpus']['speech_s']:.0f} s of speech (shared/speech, refs.tsv); "
          f"24 kHz PCM16 in {a['chunk_ms']} ms appends at real time; server VAD, silence {a['silence_ms']} ms; "
          f"{a['gap']} s between clips in a playlist, {a['tail']} s after the last (and after each clip of the full corpus).  ",
          "Latency: a committed word's delta arrival minus the end of the word in the audio (the file transcription's word "
          "timestamps), as a live client sees it (includes up to one append of chunking); 'after send' counts from the send of "
          "the append holding the word's end. WER: corpus WER, Whisper's English normaliser; stream = completed transcripts per clip, "
          "file = the same clips posted to /v1/audio/transcriptions. ok: p50 <= "
          f"{a['max_latency']} s and no stream with errors.\n",
          table(res), ""]
    if res.get("capacity") is not None or res.get("sweep"):
        md.append(f"Streams held at p50 <= {a['max_latency']} s with no errors: **{res['capacity'] if res['capacity'] else 'none'}** "
                  f"(largest N of the sweep {res['sweep']} with every N up to it ok).")
    if res.get("file_failures"):
        md.append(f"Clips left out (file transcription failed): {res['file_failures']}")
    return "\n".join(md) + "\n"


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    ap.add_argument("--streams", default="1,2,4,8,12,16", help="concurrent stream counts to sweep ('' for none)")
    ap.add_argument("--playlist-seconds", type=float, default=60, help="speech per stream in the sweep (s)")
    ap.add_argument("--full-corpus", action="store_true", help="first play every clip once in one stream")
    ap.add_argument("--file-load", type=int, default=0, help="file clients beside --file-load-streams streams (0: no such run)")
    ap.add_argument("--file-load-streams", type=int, default=8)
    ap.add_argument("--gap", type=float, default=1.0, help="silence between clips in a playlist (s)")
    ap.add_argument("--tail", type=float, default=1.5, help="silence after a stream's last clip, and after each clip of --full-corpus (s)")
    ap.add_argument("--chunk-ms", type=int, default=100, help="audio per append (ms)")
    ap.add_argument("--silence-ms", type=int, default=500, help="server_vad silence_duration_ms")
    ap.add_argument("--stagger", type=float, default=1.0, help="stream starts spread over this many seconds")
    ap.add_argument("--drain-timeout", type=float, default=30, help="wait this long for open turns after the audio (s)")
    ap.add_argument("--max-latency", type=float, default=2.0, help="median latency a stream count must stay within (s)")
    ap.add_argument("--speech-dir", default=None, help="default: ../shared/speech from the repo, else shared/speech")
    ap.add_argument("--api-key", default=os.environ.get("WHISPER_SERVE_API_KEY"))
    ap.add_argument("--out", help="JSON results; a markdown table goes beside it (.md)")
    args = ap.parse_args()
    args.url = args.url.rstrip("/")
    sweep = [int(x) for x in args.streams.split(",") if x.strip()]

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    speech = args.speech_dir or next((d for d in (os.path.join(repo, "..", "shared", "speech"), os.path.join(repo, "shared", "speech"))
                                      if os.path.isdir(d)), None)
    if not speech or not os.path.isdir(speech):
        sys.exit("no speech corpus: pass --speech-dir")
    clips = load_corpus(speech)
    log(f"{len(clips)} clips, {sum(c.dur for c in clips):.0f} s of speech from {os.path.normpath(speech)}; transcribing them as files")
    t = time.monotonic()
    clips, failures = transcribe_files(args, clips)
    if not clips:
        sys.exit("every file transcription failed: is the server up at --url?")
    log(f"files done in {time.monotonic() - t:.0f} s; WER as files {fmt(pc(wer([(c.ref, c.text) for c in clips])))} %")

    async def runs():
        out = []
        if args.full_corpus:
            out.append(await run_streams(args, "full corpus", [sorted(clips, key=lambda c: c.name)], gap=args.tail))
        for n in sweep:
            out.append(await run_streams(args, f"N={n}", playlists(clips, n, args.playlist_seconds)))
        if args.file_load:
            n = args.file_load_streams
            out.append(await run_streams(args, f"N={n} + files", playlists(clips, n, args.playlist_seconds), args.file_load, clips))
        return out

    t = time.monotonic()
    results = asyncio.run(runs())
    capacity = None
    for n in sweep:
        r = next(r for r in results if r["name"] == f"N={n}")
        if not r["ok"]:
            break
        capacity = n
    res = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "args": {**vars(args), "api_key": "set" if args.api_key else None}, "sweep": sweep, "capacity": capacity,
        "corpus": {"dir": os.path.normpath(speech), "clips": len(clips), "speech_s": round(sum(c.dur for c in clips), 1)},
        "file": {"wer": rnd(wer([(c.ref, c.text) for c in clips]), 4),
                 "clips": [{"clip": c.name, "duration_s": round(c.dur, 3), "ref": c.ref, "text": c.text,
                            "words": [[w, s, e] for w, s, e in c.words]} for c in clips]},
        "file_failures": failures, "runs": results, "elapsed_s": round(time.monotonic() - t, 1),
    }
    print(table(res))
    if sweep:
        print(f"streams held at p50 <= {args.max_latency} s with no errors: {capacity if capacity else 'none'} (sweep {sweep})")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        md = os.path.splitext(args.out)[0] + ".md"
        with open(md, "w") as f:
            f.write(markdown(res, args))
        log(f"wrote {args.out} and {md}")
    bad = sum(r["streams_with_errors"] for r in results)
    sys.exit(1 if bad or failures else 0)


if __name__ == "__main__":
    main()
