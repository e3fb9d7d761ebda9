#!/usr/bin/env python3
"""Transcribes one file with faster-whisper for side-by-side checks:
  fw_transcribe.py MODEL_DIR AUDIO [--threads 2] [--beam 5] [--compute int8]
Prints the text on stdout."""
import argparse

from faster_whisper import WhisperModel

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("audio")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--beam", type=int, default=5)
ap.add_argument("--compute", default="int8")
a = ap.parse_args()
m = WhisperModel(a.model, device="cpu", compute_type=a.compute, cpu_threads=a.threads)
segments, _ = m.transcribe(a.audio, beam_size=a.beam)
print("".join(s.text for s in segments).strip())
