"""Drives whisper-serve's Wyoming listener with the `wyoming` package's own
client and event classes, as Home Assistant does; prints one JSON report
line on stdout.

    wyoming_check.py describe HOST PORT
    wyoming_check.py transcribe HOST PORT WAV [--chunk-bytes N] [--language L]
                     [--name MODEL] [--no-transcribe] [--no-audio-start]
                     [--repeat N] [--term-pid PID]
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import wave

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info

TIMEOUT = 300


async def describe(args) -> dict:
    async with AsyncTcpClient(args.host, args.port) as client:
        await client.write_event(Describe().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), TIMEOUT)
            if event is None:
                return {"error": "connection closed"}
            if Info.is_type(event.type):
                info = Info.from_event(event)
                return {
                    "asr": [
                        {
                            "name": p.name,
                            "installed": p.installed,
                            "version": p.version,
                            "attribution": p.attribution.to_dict(),
                            "supports_transcript_streaming": p.supports_transcript_streaming,
                            "models": [m.to_dict() for m in p.models],
                        }
                        for p in info.asr
                    ],
                    "raw": event.data,
                }


async def transcribe_once(client, args, frames: bytes, rate: int, width: int, channels: int) -> dict:
    report = {"types": [], "chunks": [], "text": None, "language": None, "error": None, "latency_s": None}
    try:
        if not args.no_transcribe:
            await client.write_event(Transcribe(name=args.name, language=args.language).event())
        if not args.no_audio_start:
            await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        for i in range(0, len(frames), args.chunk_bytes):
            chunk = frames[i : i + args.chunk_bytes]
            await client.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=chunk).event())
            if args.term_pid and i <= len(frames) // 2 < i + args.chunk_bytes:
                # The server is told to stop half-way through the utterance.
                os.kill(args.term_pid, signal.SIGTERM)
                await asyncio.sleep(0.5)
        await client.write_event(AudioStop().event())
    except ConnectionError as e:
        # The server refused the audio part-way (a limit): its error event
        # is waiting to be read.
        report["write_error"] = str(e)
    stopped = time.monotonic()
    while True:
        try:
            event = await asyncio.wait_for(client.read_event(), TIMEOUT)
        except ConnectionError:
            event = None
        if event is None:
            report["closed"] = True
            break
        report["types"].append(event.type)
        if TranscriptStart.is_type(event.type):
            report["start_language"] = TranscriptStart.from_event(event).language
        elif TranscriptChunk.is_type(event.type):
            report["chunks"].append(TranscriptChunk.from_event(event).text)
        elif Transcript.is_type(event.type):
            t = Transcript.from_event(event)
            report["text"], report["language"] = t.text, t.language
            report["latency_s"] = time.monotonic() - stopped
            if "transcript-start" not in report["types"]:
                break  # a server that does not stream ends here
        elif TranscriptStop.is_type(event.type):
            break
        elif Error.is_type(event.type):
            e = Error.from_event(event)
            report["error"] = {"text": e.text, "code": e.code}
            break
    return report


async def transcribe(args) -> dict:
    with wave.open(args.wav, "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        frames = w.readframes(w.getnframes())
    runs = []
    # Several utterances on one connection, one after the other.
    async with AsyncTcpClient(args.host, args.port) as client:
        for _ in range(args.repeat):
            runs.append(await transcribe_once(client, args, frames, rate, width, channels))
    report = dict(runs[-1])
    report["runs"] = runs
    report["format"] = {"rate": rate, "width": width, "channels": channels}
    return report


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["describe", "transcribe"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("wav", nargs="?")
    p.add_argument("--chunk-bytes", type=int, default=1024)
    p.add_argument("--language")
    p.add_argument("--name")
    p.add_argument("--no-transcribe", action="store_true")
    p.add_argument("--no-audio-start", action="store_true")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--term-pid", type=int, help="SIGTERM this process half-way through the audio")
    args = p.parse_args()
    if args.command == "describe":
        report = asyncio.run(describe(args))
    else:
        report = asyncio.run(transcribe(args))
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
