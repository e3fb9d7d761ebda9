#!/usr/bin/env python3
"""Drives whisper-serve's realtime transcription sessions with the official
OpenAI Python SDK (`client.realtime.connect`, and the beta
`client.beta.realtime.connect`), as a client of OpenAI's realtime API would.

Usage:
    realtime_check.py SCENARIO BASE_URL WAV [--api-key KEY] [--expect TEXT]
                      [--min-early-deltas N]

BASE_URL is like http://127.0.0.1:PORT/v1 (the SDK's websocket_base_url is
derived from it). WAV is 16-bit PCM mono (any rate; it is resampled to
24 kHz pcm16 here with the standard library's audioop-free linear method).

Scenarios:
  ga          GA session.update, server VAD, the WAV at real time then 2 s of
              silence: deltas, then one completed transcript.
  beta        the same with the beta client and transcription_session.update.
  manual      turn_detection null: append everything fast, commit, completed.
  two_turns   the WAV, 2 s of silence, the WAV again: two items.
  bad_events  unknown type, bad base64, audio before session.update, a 20 MB
              event, a wrong format: each an error event, then the session
              still transcribes.
  subprotocol a raw `websockets` client (as a browser connects) naming the key
              in the subprotocol `openai-insecure-api-key.<KEY>` beside
              `realtime`: session.created, the subprotocol `realtime`
              selected; a wrong key, or none, is refused 401 at the handshake.
  quota       with --api-key: a manual turn of the WAV (past the key's daily
              audio), then its completed transcript, an error event
              `quota_exceeded` and a close (1008).

Prints one JSON line with what it saw (events, transcripts, timings) and
exits 0 when every check held, 1 otherwise (the failures on stderr).
"""
import argparse
import asyncio
import base64
import json
import sys
import time
import wave

from openai import AsyncOpenAI

CHUNK_MS = 100
RATE = 24000


def load_pcm24k(path):
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2, "16-bit PCM expected"
        ch, rate, n = w.getnchannels(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    import array
    a = array.array("h")
    a.frombytes(raw)
    if ch > 1:
        a = array.array("h", a[::ch])
    if rate != RATE:
        out = array.array("h")
        step = rate / RATE
        m = int(len(a) / step)
        for i in range(m):
            x = i * step
            j = int(x)
            f = x - j
            y = a[j] if j + 1 >= len(a) else a[j] * (1 - f) + a[j + 1] * f
            out.append(int(y))
        a = out
    return a.tobytes()


def silence(seconds):
    return b"\x00\x00" * int(RATE * seconds)


def chunks(pcm):
    n = RATE * 2 * CHUNK_MS // 1000
    for i in range(0, len(pcm), n):
        yield pcm[i:i + n]


def words(s):
    import re
    return re.findall(r"[a-z0-9']+", s.lower())


def wer(ref, hyp):
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)] / max(1, len(r))


GA_SESSION = {
    "type": "transcription",
    "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": RATE},
        "transcription": {"model": "whisper-1", "language": "en"},
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 1200},
    }},
}
BETA_SESSION = {
    "input_audio_format": "pcm16",
    "input_audio_transcription": {"model": "whisper-1", "language": "en"},
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 1200},
}


class Run:
    def __init__(self):
        self.events = []
        self.failures = []
        self.t0 = time.monotonic()

    def check(self, ok, msg):
        if not ok:
            self.failures.append(msg)

    def seen(self, ev):
        d = ev.model_dump() if hasattr(ev, "model_dump") else dict(ev)
        d["_t"] = round(time.monotonic() - self.t0, 3)
        self.events.append(d)
        return d

    def of(self, kind):
        return [e for e in self.events if e.get("type") == kind]


async def reader(conn, run, done_items, want_items, stop_after=None):
    async for ev in conn:
        d = run.seen(ev)
        if d.get("type") == "conversation.item.input_audio_transcription.completed":
            done_items.append(d)
            if len(done_items) >= want_items:
                return
        if stop_after and d.get("type") == stop_after:
            return


async def send_audio(conn, pcm, realtime=True):
    for c in chunks(pcm):
        await conn.input_audio_buffer.append(audio=base64.b64encode(c).decode())
        if realtime:
            await asyncio.sleep(CHUNK_MS / 1000)


def connect(client, beta):
    q = {"intent": "transcription"}
    if beta:
        return client.beta.realtime.connect(model="whisper-1", extra_query=q)
    return client.realtime.connect(extra_query=q)


async def wait_type(conn, run, kind, timeout=10):
    async def go():
        async for ev in conn:
            d = run.seen(ev)
            if d.get("type") == kind:
                return d
    return await asyncio.wait_for(go(), timeout)


async def subprotocol(args, run):
    import websockets
    from websockets.asyncio.client import connect as ws_connect
    base = "ws" + args.base_url[len("http"):] if args.base_url.startswith("http") else args.base_url
    url = base + "/realtime?intent=transcription"
    key = args.api_key
    run.check(bool(key), "the subprotocol scenario needs --api-key")
    async with ws_connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{key}"], max_size=None) as ws:
        run.check(ws.subprotocol == "realtime", f"selected subprotocol {ws.subprotocol!r}, wanted 'realtime'")
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        run.seen(first)
        run.check(first.get("type") == "session.created", f"first event {first.get('type')!r}")
        session = json.loads(json.dumps(GA_SESSION))
        session["audio"]["input"]["turn_detection"] = None
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        upd = json.loads(await asyncio.wait_for(ws.recv(), 10))
        run.seen(upd)
        run.check(upd.get("type") == "session.updated", f"after session.update: {upd.get('type')!r}")
    statuses = {}
    for name, protocols in [("wrong", ["realtime", "openai-insecure-api-key.sk-wrong-key-000000"]), ("none", ["realtime"])]:
        try:
            async with ws_connect(url, subprotocols=protocols) as ws:
                statuses[name] = 101
        except websockets.exceptions.InvalidStatus as e:
            statuses[name] = e.response.status_code
    run.check(statuses == {"wrong": 401, "none": 401}, f"handshake statuses {statuses}, wanted 401 for both")
    run.summary = {"subprotocol": "realtime", "refused": statuses}


async def quota(args, run):
    from websockets.exceptions import ConnectionClosed
    ws_url = "ws" + args.base_url[len("http"):]
    client = AsyncOpenAI(base_url=args.base_url, websocket_base_url=ws_url, api_key=args.api_key or "none")
    pcm = load_pcm24k(args.wav)
    close_code = None
    async with connect(client, False) as conn:
        await wait_type(conn, run, "session.created")
        session = json.loads(json.dumps(GA_SESSION))
        session["audio"]["input"]["turn_detection"] = None
        await conn.session.update(session=session)
        await wait_type(conn, run, "session.updated")
        await send_audio(conn, pcm, realtime=False)
        await conn.input_audio_buffer.commit()

        async def read_all():
            while True:
                run.seen(await conn.recv())
        try:
            await asyncio.wait_for(read_all(), 120)
        except ConnectionClosed as e:
            close_code = e.rcvd.code if e.rcvd else None
    done = run.of("conversation.item.input_audio_transcription.completed")
    errors = [e["error"] for e in run.of("error")]
    run.check(len(done) == 1, f"completed items: {len(done)}")
    run.check(any(e.get("code") == "quota_exceeded" for e in errors), f"no quota_exceeded error event: {errors}")
    if done and errors:
        t_done = done[0]["_t"]
        t_err = [e["_t"] for e in run.of("error") if e["error"].get("code") == "quota_exceeded"]
        run.check(bool(t_err) and t_err[0] >= t_done, "the quota error comes after the turn it ends")
    run.check(close_code == 1008, f"close code {close_code}, wanted 1008")
    run.summary = {"transcripts": [d["transcript"] for d in done], "errors": [e.get("code") for e in errors], "close_code": close_code}


async def scenario(args, run):
    if args.scenario == "subprotocol":
        return await subprotocol(args, run)
    if args.scenario == "quota":
        return await quota(args, run)
    ws_url = "ws" + args.base_url[len("http"):] if args.base_url.startswith("http") else args.base_url
    client = AsyncOpenAI(base_url=args.base_url, websocket_base_url=ws_url, api_key=args.api_key or "none")
    pcm = load_pcm24k(args.wav)
    expect = args.expect
    beta = args.scenario == "beta"
    async with connect(client, beta) as conn:
        created = await wait_type(conn, run, "transcription_session.created" if beta else "session.created")
        run.check(created["session"]["id"].startswith("sess_"), "session id")
        if args.scenario == "bad_events":
            await bad_events(conn, run, pcm)
            return
        if beta:
            await conn.send({"type": "transcription_session.update", "session": BETA_SESSION})
            await wait_type(conn, run, "transcription_session.updated")
        else:
            session = json.loads(json.dumps(GA_SESSION))
            if args.scenario == "manual":
                session["audio"]["input"]["turn_detection"] = None
            if args.model:
                session["audio"]["input"]["transcription"]["model"] = args.model
            await conn.session.update(session=session)
            upd = await wait_type(conn, run, "session.updated")
            run.check(upd["session"]["audio"]["input"]["format"]["rate"] == RATE, "updated format")
            if args.model:
                got = upd["session"]["audio"]["input"]["transcription"]["model"]
                run.check(got == args.model, f"session model {got}, wanted {args.model}")
        done = []
        if args.scenario == "manual":
            await send_audio(conn, pcm, realtime=False)
            await conn.input_audio_buffer.commit()
            await asyncio.wait_for(reader(conn, run, done, 1), 120)
        else:
            want = 2 if args.scenario == "two_turns" else 1
            audio = pcm + silence(2.0)
            if want == 2:
                audio = audio + pcm + silence(2.0)
            read = asyncio.create_task(reader(conn, run, done, want))
            await send_audio(conn, audio)
            # Keep the stream going (silence) until the turns are done: up
            # to 120 s, for a loaded host (a client that goes quiet would
            # meet realtime.idle_timeout_s).
            for _ in range(1200):
                if read.done():
                    break
                await conn.input_audio_buffer.append(audio=base64.b64encode(silence(0.1)).decode())
                await asyncio.sleep(0.1)
            await asyncio.wait_for(read, 60)
        deltas = run.of("conversation.item.input_audio_transcription.delta")
        run.check(len(done) == (2 if args.scenario == "two_turns" else 1), f"completed items: {len(done)}")
        for item in done:
            mine = [d["delta"] for d in deltas if d["item_id"] == item["item_id"]]
            run.check("".join(mine) == item["transcript"], f"deltas join to the transcript: {''.join(mine)!r} vs {item['transcript']!r}")
            if expect:
                w = wer(expect, item["transcript"])
                run.check(w <= 0.1, f"WER {w:.3f} > 0.1: {item['transcript']!r}")
            run.check(item["usage"]["type"] == "duration" and item["usage"]["seconds"] > 0, "usage")
        if args.scenario in ("ga", "beta", "two_turns"):
            first = done[0]["item_id"] if done else None
            before = [d for d in deltas if d["item_id"] == first and d["_t"] < done[0]["_t"]] if done else []
            run.check(len(before) >= args.min_early_deltas, f"deltas while speaking: {len(before)}")
            committed = [e["_t"] for e in run.of("input_audio_buffer.committed") if e.get("item_id") == first]
            run.summary_extra = {"early_deltas": len(before),
                                 "deltas_before_commit": len([d for d in before if committed and d["_t"] < committed[0]]),
                                 # The first turn's last decode (commit to completed): how fast the engine was.
                                 "final_s": round(done[0]["_t"] - committed[0], 3) if done and committed else None}
            run.check(len(run.of("input_audio_buffer.speech_started")) >= 1, "speech_started")
            run.check(len(run.of("input_audio_buffer.speech_stopped")) >= 1, "speech_stopped")
            run.check(len(run.of("input_audio_buffer.committed")) >= 1, "committed")
        if args.scenario == "two_turns" and len(done) == 2:
            run.check(done[0]["item_id"] != done[1]["item_id"], "two distinct items")
        run.summary = {"transcripts": [d["transcript"] for d in done], "deltas": len(deltas),
                       **getattr(run, "summary_extra", {})}


async def bad_events(conn, run, pcm):
    async def expect_error(code=None, param=None):
        e = await wait_type(conn, run, "error")
        err = e["error"]
        if code:
            run.check(err.get("code") == code, f"error code {err.get('code')!r}, wanted {code!r}: {err}")
        if param:
            run.check(err.get("param") == param, f"error param {err.get('param')!r}, wanted {param!r}")
        return err
    # Audio before the session says its format.
    await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[:4800]).decode())
    await expect_error("session_not_configured")
    await conn.send({"type": "no.such.event", "event_id": "evt_1"})
    err = await expect_error(param="type")
    run.check(err.get("event_id") == "evt_1", "error names the event")
    bad_format = json.loads(json.dumps(GA_SESSION))
    bad_format["audio"]["input"]["format"] = {"type": "audio/opus"}
    await conn.session.update(session=bad_format)
    await expect_error(param="session.audio.input.format.type")
    session = json.loads(json.dumps(GA_SESSION))
    session["audio"]["input"]["turn_detection"] = None
    await conn.session.update(session=session)
    await wait_type(conn, run, "session.updated")
    await conn.send({"type": "input_audio_buffer.append", "audio": "@@not base64@@"})
    await expect_error(param="audio")
    big = "A" * (20 * 1024 * 1024)
    await conn.send({"type": "input_audio_buffer.append", "audio": big})
    await expect_error("event_too_large")
    await conn.input_audio_buffer.commit()
    await expect_error("input_audio_buffer_commit_empty")
    # Still usable.
    await send_audio(conn, pcm, realtime=False)
    await conn.input_audio_buffer.commit()
    done = []
    await asyncio.wait_for(reader(conn, run, done, 1), 120)
    run.check(len(done) == 1 and len(words(done[0]["transcript"])) > 5, f"transcribed after bad events: {done}")
    run.summary = {"errors": [e["error"]["code"] for e in run.of("error")], "transcripts": [d["transcript"] for d in done]}


def timeline(run):
    """When each server event came (s from the start), deltas shortened."""
    out = []
    for e in run.events:
        kind = e.get("type") or "?"
        short = kind.replace("conversation.item.input_audio_transcription.", "").replace("input_audio_buffer.", "")
        if kind.endswith(".delta"):
            short += ":" + repr(e.get("delta", ""))[:40]
        elif kind == "error":
            short += ":" + str((e.get("error") or {}).get("code"))
        out.append(f"{e['_t']:.1f} {short}")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["ga", "beta", "manual", "two_turns", "bad_events", "subprotocol", "quota"])
    p.add_argument("base_url")
    p.add_argument("wav")
    p.add_argument("--api-key")
    p.add_argument("--expect")
    # The session's transcription model (ga scenarios; default whisper-1).
    p.add_argument("--model")
    # Deltas of the first turn that must come before its `completed` (ga,
    # beta, two_turns). Interim text needs an engine faster than real time:
    # a caller on a loaded host may lower it and judge the count itself
    # (the report's early_deltas).
    p.add_argument("--min-early-deltas", type=int, default=2)
    args = p.parse_args()
    run = Run()
    run.summary = {}
    try:
        asyncio.run(scenario(args, run))
    except Exception as e:  # noqa: BLE001 - any failure is reported
        run.failures.append(f"{type(e).__name__}: {e}")
    out = {"scenario": args.scenario, **run.summary, "failures": run.failures,
           "types": sorted({e.get("type") for e in run.events}),
           "timeline": timeline(run)}
    print(json.dumps(out))
    if run.failures:
        for f in run.failures:
            print("FAIL:", f, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
