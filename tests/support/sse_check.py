#!/usr/bin/env python3
"""Streams a transcription (or translation) from whisper-serve with the
official OpenAI Python SDK's `stream=True`, as a client of OpenAI would,
and reports what arrived and when.

Usage:
    sse_check.py BASE_URL AUDIO_FILE [--translate] [--model M]
                 [--response-format F] [--language L]

BASE_URL is like http://127.0.0.1:PORT/v1. Transcriptions go through
`client.audio.transcriptions.create(..., stream=True)`; the SDK's
translations have no `stream` argument, so --translate posts the same form
to /audio/translations through the SDK's own request and SSE machinery
(`client.post(..., stream=True, stream_cls=Stream[TranscriptionStreamEvent])`).

Prints one line of JSON and exits 0 whatever the server answered:
    {"status": 200 | <error status>, "content_type": ...,
     "deltas": [{"t": s, "delta": str}, ...], "done": {...} | null,
     "t_done": s | null, "error": {"message", "body"} | null,
     "error_after_start": bool, "events": [types in order]}
Times are seconds since the request was sent. Exits 1 on an unexpected
failure (an event the SDK cannot parse, an unknown event type).
"""
import argparse
import json
import sys
import time

import openai
from openai import OpenAI, Stream
from openai.types.audio import TranscriptionStreamEvent


def dump(obj):
    if obj is None:
        return None
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return obj


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("audio")
    ap.add_argument("--translate", action="store_true")
    ap.add_argument("--model", default="whisper-1")
    ap.add_argument("--response-format", default=None)
    ap.add_argument("--language", default=None)
    args = ap.parse_args()

    client = OpenAI(base_url=args.base, api_key="unused", max_retries=0, timeout=900)
    out = {"status": None, "content_type": None, "deltas": [], "done": None, "t_done": None,
           "error": None, "error_after_start": False, "events": []}
    t0 = time.monotonic()
    try:
        with open(args.audio, "rb") as f:
            extra = {}
            if args.response_format:
                extra["response_format"] = args.response_format
            if args.language:
                extra["language"] = args.language
            if args.translate:
                stream = client.post(
                    "/audio/translations",
                    body={"model": args.model, "stream": True, **extra},
                    files=[("file", (args.audio.rsplit("/", 1)[-1], f.read()))],
                    options={"headers": {"Content-Type": "multipart/form-data"}},
                    cast_to=object,
                    stream=True,
                    stream_cls=Stream[TranscriptionStreamEvent],
                )
            else:
                stream = client.audio.transcriptions.create(model=args.model, file=f, stream=True, **extra)
        out["status"] = stream.response.status_code
        out["content_type"] = stream.response.headers.get("content-type")
        try:
            for event in stream:
                t = time.monotonic() - t0
                out["events"].append(event.type)
                if event.type == "transcript.text.delta":
                    out["deltas"].append({"t": t, "delta": event.delta})
                elif event.type == "transcript.text.done":
                    out["done"] = {"text": event.text, "usage": dump(event.usage)}
                    out["t_done"] = t
                else:
                    print(f"unexpected event type {event.type!r}", file=sys.stderr)
                    sys.exit(1)
        except openai.APIError as e:
            # Raised by the SDK's stream for an event with an `error` object.
            out["error"] = {"message": e.message, "body": e.body}
            out["error_after_start"] = True
    except openai.APIStatusError as e:
        out["status"] = e.status_code
        out["content_type"] = e.response.headers.get("content-type")
        out["error"] = {"message": e.message, "body": e.body}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
