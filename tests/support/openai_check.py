#!/usr/bin/env python3
"""Checks whisper-serve's OpenAI-compatible audio API with the official
OpenAI Python SDK (the `openai` package), as a client of OpenAI would use it.

Usage:
    openai_check.py BASE_URL AUDIO_FILE [--expect WORDS] [--translate-file FILE]

BASE_URL is like http://127.0.0.1:PORT/v1. For each response_format (json,
text, srt, vtt, verbose_json) it transcribes AUDIO_FILE, then asks
verbose_json with timestamp_granularities ["word", "segment"] and ["word"],
and checks the answers against OpenAI's documented shapes. With
--translate-file it also calls the translations endpoint.

On success it prints one line of JSON (texts per format, counts) on stdout
and exits 0; on any failed check it prints the failures on stderr and
exits 1 (2 for bad usage, 3 when the server cannot be reached).
"""
import argparse
import json
import math
import os
import re
import sys
import time
import warnings
import wave

import openai
from openai import OpenAI

FORMATS = ["json", "text", "srt", "vtt", "verbose_json"]
CONTENT_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain",
    "srt": "text/plain",  # OpenAI answers text/plain for SRT
    "vtt": "text/vtt",
}
SEGMENT_FIELDS = {
    "id": int,
    "seek": int,
    "start": (int, float),
    "end": (int, float),
    "text": str,
    "tokens": list,
    "temperature": (int, float),
    "avg_logprob": (int, float),
    "compression_ratio": (int, float),
    "no_speech_prob": (int, float),
}
WORD_FIELDS = {"word": str, "start": (int, float), "end": (int, float)}
TOLERANCE = 0.5  # seconds, for cues past the end and words outside their segment


class CheckFailed(Exception):
    pass


failures = []


def check(cond, message):
    """Records a failed check; returns cond so callers can skip dependent checks."""
    if not cond:
        failures.append(message)
        print(f"FAIL: {message}", file=sys.stderr)
    return bool(cond)


def normalize(text):
    """Lowercase, punctuation removed, whitespace collapsed."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(text.split())


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def has_type(value, types):
    if isinstance(value, bool):
        return False
    if types == (int, float):
        return is_number(value)
    return isinstance(value, types)


def wav_duration(path):
    try:
        with wave.open(path, "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, OSError):
        return None  # not a WAV file the stdlib reads: no reference duration


# --- SRT / WebVTT ---------------------------------------------------------

SRT_TIME = r"(\d{2,}):(\d{2}):(\d{2}),(\d{3})"
SRT_TIMING = re.compile(rf"^{SRT_TIME} --> {SRT_TIME}$")
VTT_TIME = r"(?:(\d{2,}):)?(\d{2}):(\d{2})\.(\d{3})"
VTT_TIMING = re.compile(rf"^{VTT_TIME}[ \t]+-->[ \t]+{VTT_TIME}(?:[ \t]+.*)?$")


def to_seconds(h, m, s, ms):
    m, s = int(m), int(s)
    if m > 59 or s > 59:
        raise CheckFailed(f"minutes/seconds out of range in {h}:{m}:{s}.{ms}")
    return int(h or 0) * 3600 + m * 60 + s + int(ms) / 1000.0


def blocks(text):
    """Cue blocks: lists of non-empty lines, split on blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [b.split("\n") for b in re.split(r"\n{2,}", text.strip("\n")) if b.strip()]


def parse_srt(text):
    """[(start, end, text)]; raises CheckFailed on malformed SRT."""
    cues = []
    for n, block in enumerate(blocks(text), start=1):
        if len(block) < 2:
            raise CheckFailed(f"SRT cue {n} is too short: {block!r}")
        if block[0].strip() != str(n):
            raise CheckFailed(f"SRT cue {n} is numbered {block[0]!r}")
        m = SRT_TIMING.match(block[1].strip())
        if not m:
            raise CheckFailed(f"SRT cue {n} has a bad timing line {block[1]!r}")
        g = m.groups()
        cues.append((to_seconds(*g[:4]), to_seconds(*g[4:]), "\n".join(block[2:]).strip()))
    return cues


def parse_vtt(text):
    """[(start, end, text)]; raises CheckFailed on malformed WebVTT."""
    if text.startswith("\ufeff"):
        text = text[1:]
    first = text.replace("\r\n", "\n").split("\n", 1)[0]
    if not (first == "WEBVTT" or first.startswith("WEBVTT ") or first.startswith("WEBVTT\t")):
        raise CheckFailed(f"WebVTT does not start with a WEBVTT header line: {first!r}")
    cues = []
    for n, block in enumerate(blocks(text)[1:], start=1):
        if block[0].startswith(("NOTE", "STYLE", "REGION")):
            continue
        timing = 0 if "-->" in block[0] else 1  # optional cue identifier
        if timing >= len(block):
            raise CheckFailed(f"WebVTT block {n} has no timing line: {block!r}")
        m = VTT_TIMING.match(block[timing].strip())
        if not m:
            raise CheckFailed(f"WebVTT block {n} has a bad timing line {block[timing]!r}")
        g = m.groups()
        cues.append((to_seconds(*g[:4]), to_seconds(*g[4:]), "\n".join(block[timing + 1:]).strip()))
    return cues


def check_cues(name, cues, duration):
    check(len(cues) > 0, f"{name}: no cues")
    prev_start = -1.0
    for i, (start, end, text) in enumerate(cues, start=1):
        check(start < end, f"{name} cue {i}: start {start} is not before end {end}")
        check(start >= prev_start, f"{name} cue {i}: start {start} before the previous cue's {prev_start}")
        if duration is not None:
            check(0 <= start and end <= duration + TOLERANCE,
                  f"{name} cue {i}: [{start}, {end}] outside the audio [0, {duration}]")
        check(text, f"{name} cue {i}: empty text")
        prev_start = start


# --- verbose_json ---------------------------------------------------------

def check_fields(name, obj, fields):
    ok = check(isinstance(obj, dict), f"{name}: not an object: {obj!r}")
    if not ok:
        return False
    for field, types in fields.items():
        if check(field in obj, f"{name}: missing '{field}' in {sorted(obj)}"):
            ok &= check(has_type(obj[field], types),
                        f"{name}: '{field}' has the wrong type: {obj[field]!r}")
        else:
            ok = False
    return ok


def check_verbose(name, body, duration_ref, want_segments, want_words, expect):
    """Checks one verbose_json body (the parsed JSON); returns it."""
    ok = check_fields(name, body, {"task": str, "language": str, "duration": (int, float), "text": str})
    if not ok:
        return body
    check(body["task"] == "transcribe", f"{name}: task is {body['task']!r}, not 'transcribe'")
    check(re.fullmatch(r"[a-z][a-z ]+", body["language"]) is not None,
          f"{name}: language should be a lowercase name like 'english', got {body['language']!r}")
    duration = body["duration"]
    check(duration > 0, f"{name}: duration {duration} is not positive")
    if duration_ref is not None:
        check(abs(duration - duration_ref) <= max(0.1, 0.01 * duration_ref),
              f"{name}: duration {duration} but the file lasts {duration_ref:.3f} s")
    check_expect(name, body["text"], expect)

    if want_segments:
        segments = body.get("segments")
        if check(isinstance(segments, list) and segments, f"{name}: 'segments' missing or empty"):
            prev_start = -1.0
            for i, seg in enumerate(segments):
                sname = f"{name} segment {i}"
                if not check_fields(sname, seg, SEGMENT_FIELDS):
                    continue
                check(seg["id"] == i, f"{sname}: id {seg['id']}")
                check(seg["seek"] >= 0, f"{sname}: seek {seg['seek']}")
                check(all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in seg["tokens"]),
                      f"{sname}: tokens are not non-negative integers")
                check(seg["start"] <= seg["end"], f"{sname}: start {seg['start']} after end {seg['end']}")
                check(seg["start"] >= prev_start, f"{sname}: start {seg['start']} before the previous {prev_start}")
                check(0 <= seg["start"] and seg["end"] <= duration + TOLERANCE,
                      f"{sname}: [{seg['start']}, {seg['end']}] outside the audio [0, {duration}]")
                check(0 <= seg["temperature"] <= 1.0, f"{sname}: temperature {seg['temperature']}")
                check(seg["avg_logprob"] <= 0, f"{sname}: avg_logprob {seg['avg_logprob']} > 0")
                check(seg["compression_ratio"] >= 0, f"{sname}: compression_ratio {seg['compression_ratio']}")
                check(0 <= seg["no_speech_prob"] <= 1, f"{sname}: no_speech_prob {seg['no_speech_prob']}")
                prev_start = seg["start"]
            joined = normalize("".join(s.get("text", "") for s in segments if isinstance(s, dict)))
            check(joined == normalize(body["text"]),
                  f"{name}: the segment texts do not add up to the text: {joined!r} vs {normalize(body['text'])!r}")
    elif "segments" in body and body["segments"] is not None:
        # Not asked for. OpenAI leaves them out; tolerated, but said.
        print(f"note: {name}: 'segments' present though not asked for", file=sys.stderr)

    if want_words:
        words = body.get("words")
        if check(isinstance(words, list) and words, f"{name}: 'words' missing or empty"):
            prev_start = -1.0
            segments = body.get("segments") if isinstance(body.get("segments"), list) else []
            seg_i = 0
            for i, w in enumerate(words):
                wname = f"{name} word {i}"
                if not check_fields(wname, w, WORD_FIELDS):
                    continue
                check(w["word"] == w["word"].strip() and w["word"],
                      f"{wname}: {w['word']!r} is empty or has surrounding spaces")
                check(w["start"] <= w["end"], f"{wname}: start {w['start']} after end {w['end']}")
                check(w["start"] >= prev_start, f"{wname}: start {w['start']} before the previous {prev_start}")
                check(0 <= w["start"] and w["end"] <= duration + TOLERANCE,
                      f"{wname}: [{w['start']}, {w['end']}] outside the audio [0, {duration}]")
                prev_start = w["start"]
                # Its segment: the first, from the previous word's on, that holds it.
                fits = [j for j in range(seg_i, len(segments))
                        if segments[j]["start"] - TOLERANCE <= w["start"]
                        and w["end"] <= segments[j]["end"] + TOLERANCE]
                if segments and check(fits, f"{wname} {w['word']!r} [{w['start']}, {w['end']}] is in no "
                                            f"segment from {seg_i} on"):
                    seg_i = fits[0]
            joined = normalize(" ".join(w.get("word", "") for w in words if isinstance(w, dict)))
            check(joined == normalize(body["text"]),
                  f"{name}: the words do not add up to the text: {joined!r} vs {normalize(body['text'])!r}")
    else:
        check("words" not in body or body["words"] is None,
              f"{name}: 'words' present though not asked for")
    return body


def check_expect(name, text, expect):
    if expect:
        check(normalize(expect) in normalize(text),
              f"{name}: text does not mention {expect!r}: {text!r}")


# --- calls ----------------------------------------------------------------

def transcribe(client, audio, **kwargs):
    """One transcription; returns (parsed SDK result, raw body text, content-type)."""
    with open(audio, "rb") as f:
        raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=f, **kwargs)
    return raw.parse(), raw.http_response.text, raw.headers.get("content-type", "")


def check_content_type(name, fmt, content_type):
    want = CONTENT_TYPES[fmt]
    check(content_type.split(";")[0].strip().lower() == want,
          f"{name}: Content-Type {content_type!r}, expected {want}")


def run(args):
    client = OpenAI(base_url=args.base_url, api_key="unused", max_retries=args.max_retries,
                    timeout=args.timeout)
    duration_ref = wav_duration(args.audio)
    summary = {"texts": {}, "cues": {}, "segments": None, "words": None,
               "duration": None, "file_duration": duration_ref, "seconds": {}}

    for fmt in FORMATS:
        name = fmt
        t0 = time.monotonic()
        result, body, ctype = transcribe(client, args.audio, response_format=fmt)
        summary["seconds"][fmt] = round(time.monotonic() - t0, 3)
        check_content_type(name, fmt, ctype)
        try:
            if fmt == "json":
                check(isinstance(getattr(result, "text", None), str),
                      f"json: the SDK's result has no text: {result!r}")
                data = json.loads(body)
                check(isinstance(data, dict) and isinstance(data.get("text"), str),
                      f"json: body is not {{\"text\": ...}}: {body!r}")
                check("segments" not in data and "words" not in data, f"json: extra fields: {sorted(data)}")
                text = data["text"]
                check_expect(name, text, args.expect)
                summary["texts"][fmt] = text
            elif fmt == "text":
                text = result if isinstance(result, str) else getattr(result, "text", None)
                check(isinstance(text, str), f"text: the SDK did not return a string: {result!r}")
                check(not body.lstrip().startswith("{"), f"text: body looks like JSON: {body!r}")
                check_expect(name, body, args.expect)
                summary["texts"][fmt] = body.strip()
            elif fmt in ("srt", "vtt"):
                check(isinstance(result, str) or hasattr(result, "text"),
                      f"{fmt}: the SDK did not return a string: {result!r}")
                cues = parse_srt(body) if fmt == "srt" else parse_vtt(body)
                check_cues(fmt, cues, duration_ref)
                check_expect(name, " ".join(c[2] for c in cues), args.expect)
                summary["cues"][fmt] = len(cues)
                summary["texts"][fmt] = " ".join(c[2] for c in cues)
            else:
                check(hasattr(result, "duration") and hasattr(result, "segments"),
                      f"verbose_json: the SDK's result is not a TranscriptionVerbose: {result!r}")
                data = check_verbose(name, json.loads(body), duration_ref, True, False, args.expect)
                summary["texts"][fmt] = data.get("text")
                summary["duration"] = data.get("duration")
                summary["language"] = data.get("language")
                summary["segments"] = len(data.get("segments") or [])
        except CheckFailed as e:
            check(False, f"{fmt}: {e}")
        except (ValueError, KeyError, TypeError) as e:
            check(False, f"{fmt}: unreadable answer ({type(e).__name__}: {e}): {body[:500]!r}")

    for granularities in (["word", "segment"], ["word"]):
        name = "verbose_json[" + ",".join(granularities) + "]"
        t0 = time.monotonic()
        result, body, ctype = transcribe(client, args.audio, response_format="verbose_json",
                                         timestamp_granularities=granularities)
        summary["seconds"][name] = round(time.monotonic() - t0, 3)
        check_content_type(name, "verbose_json", ctype)
        try:
            data = check_verbose(name, json.loads(body), duration_ref,
                                 "segment" in granularities, True, args.expect)
            words = getattr(result, "words", None)
            check(words is not None and len(words) == len(data.get("words") or []),
                  f"{name}: the SDK's result has no words")
            if granularities == ["word", "segment"]:
                summary["words"] = len(data.get("words") or [])
                summary["words_segments"] = len(data.get("segments") or [])
        except (ValueError, KeyError, TypeError) as e:
            check(False, f"{name}: unreadable answer ({type(e).__name__}: {e}): {body[:500]!r}")

    if args.translate_file:
        with open(args.translate_file, "rb") as f, warnings.catch_warnings():
            # Newer SDKs mark translations deprecated; the endpoint is still OpenAI's.
            warnings.simplefilter("ignore", DeprecationWarning)
            translation = client.audio.translations.create(model="whisper-1", file=f, response_format="json")
        text = getattr(translation, "text", None)
        check(isinstance(text, str) and text.strip(), f"translation: empty or missing text: {translation!r}")
        print(f"translation: {text}", file=sys.stderr)
        summary["translation"] = text

    summary["ok"] = not failures
    summary["failures"] = len(failures)
    print(json.dumps(summary, ensure_ascii=False))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base_url", help="e.g. http://127.0.0.1:8000/v1")
    p.add_argument("audio", help="audio file to transcribe")
    p.add_argument("--expect", default="",
                   help="words the transcript must contain (case and punctuation ignored)")
    p.add_argument("--translate-file", help="also translate this file (to English)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=0, help="the SDK's retries (default none)")
    args = p.parse_args()
    for path in (args.audio, args.translate_file):
        if path and not os.path.isfile(path):
            p.error(f"no such file: {path}")
    try:
        run(args)
    except openai.APIConnectionError as e:
        print(f"FAIL: cannot reach {args.base_url}: {e!r} ({e.__cause__!r})", file=sys.stderr)
        sys.exit(3)
    except openai.APIStatusError as e:
        print(f"FAIL: {e.request.method} {e.request.url} answered HTTP {e.status_code}: "
              f"{e.response.text[:1000]}", file=sys.stderr)
        sys.exit(1)
    if failures:
        print(f"{len(failures)} check(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
