#!/usr/bin/env python3
"""faster-whisper 1.2.1's VAD, for comparing our implementation with it.
Reads one JSON request on stdin, prints a JSON list, one entry per item:

  {"files": ["a.f32", ...], "options": {...}, "probs": false}
      Silero v6 (the model faster-whisper ships) on each file of 16 kHz mono
      float32 little-endian samples, so both sides score exactly the same
      samples. Entry: {"chunks": [[start, end], ...]} in samples, plus the
      per-window speech probabilities when "probs" is true.

  {"prob_sets": [{"probs": [...], "audio_len": N, "options": {...}}, ...]}
      get_speech_timestamps with the model replaced by the given
      probabilities (float32, audio_len // 512 + 1 of them): its logic
      alone. Entry: {"chunks": [[start, end], ...]}.

`options` are VadOptions fields; absent ones keep faster-whisper's defaults.
"""
import json
import sys

import numpy as np

import faster_whisper.vad as fv

req = json.load(sys.stdin)
out = []
if "prob_sets" in req:
    real = fv.get_vad_model
    for s in req["prob_sets"]:
        probs = np.array(s["probs"], dtype=np.float32)
        fv.get_vad_model = lambda probs=probs: (lambda padded: probs)
        audio = np.zeros(s["audio_len"], dtype=np.float32)
        chunks = fv.get_speech_timestamps(audio, fv.VadOptions(**s.get("options", {})))
        out.append({"chunks": [[c["start"], c["end"]] for c in chunks]})
    fv.get_vad_model = real
else:
    opts = fv.VadOptions(**req.get("options", {}))
    for path in req["files"]:
        audio = np.fromfile(path, dtype="<f4").astype(np.float32)
        entry = {"chunks": [[c["start"], c["end"]] for c in fv.get_speech_timestamps(audio, opts)]}
        if req.get("probs"):
            # The same padding get_speech_timestamps applies before the model.
            padded = np.pad(audio, (0, 512 - audio.shape[0] % 512))
            entry["probs"] = [float(p) for p in fv.get_vad_model()(padded)]
        out.append(entry)
json.dump(out, sys.stdout)
