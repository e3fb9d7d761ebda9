#!/usr/bin/env python3
"""shared/peers/fw_server.py for a machine without PyAV (faster-whisper's audio
decoder), such as a GPU host with no package index: the same server, model calls
and options, with faster-whisper's decode_audio replaced by a reader of 16 kHz
mono 16-bit WAV (what bench/gpu.sh's AUDIO_DIR holds). Only the decoding of the
upload differs; for such WAV files PyAV returns the same samples.

  fw_wav_server.py PATH/TO/fw_server.py MODEL_DIR [fw_server.py's options]
"""
import runpy, sys, types, wave
import numpy as np

sys.modules.setdefault("av", types.ModuleType("av"))  # imported at faster_whisper's import time only
import faster_whisper.transcribe as fwt  # noqa: E402


def decode_wav(input_file, sampling_rate=16000, split_stereo=False):
    with wave.open(input_file if isinstance(input_file, str) else input_file, "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (sampling_rate, 1, 2) or split_stereo:
            raise ValueError(f"fw_wav_server reads {sampling_rate} Hz mono 16-bit WAV only")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


fwt.decode_audio = decode_wav
server, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(server, run_name="__main__")
