#!/usr/bin/env python3
"""Could a short request pay for less than a 30 s window? (issue 12)

CTranslate2's Whisper encoder accepts fewer than 3000 mel frames (whisper.cpp
calls this `audio_ctx`): the encoder's cost falls with the frames, but the
model was trained on 30 s windows. This decodes every corpus clip of <= 12 s
alone (beam 5, timestamps) with the full window and with shorter ones, and
scores, with Whisper's English normaliser, WER against the references and
against the full-window answers, and the time spent in the encoder.

  bench/encoder_context.py [tiny.en|base]
"""
import sys
import time

import ctranslate2
import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor

from packing_position import SR, load, short_clips
from packing_study import wer


def main():
    model, tok = load(sys.argv[1] if len(sys.argv) > 1 else "tiny.en")
    fe = FeatureExtractor()
    clips = short_clips()

    def run(frames_for):
        answers, encode_s = [], 0.0
        for audio, _ in clips:
            window = np.zeros(30 * SR, dtype=np.float32)
            window[: len(audio)] = audio
            feats = np.ascontiguousarray(fe(window)[None, :, : frames_for(len(audio) / SR)])
            started = time.time()
            encoded = model.encode(ctranslate2.StorageView.from_array(feats))
            encode_s += time.time() - started
            r = model.generate(encoded, [list(tok.sot_sequence)], beam_size=5)[0]
            answers.append(tok.decode([t for t in r.sequences_ids[0] if t < tok.eot]))
        return answers, encode_s

    refs = [r for _, r in clips]
    run(lambda s: 3000)  # warm-up: the first calls are slower
    full, full_s = run(lambda s: 3000)
    print(f"| window | WER vs references | WER vs 30 s answers | encoder time |")
    print(f"|---|---|---|---|")
    print(f"| 30 s (Whisper's) | {wer(refs, full):.2%} | 0 | {full_s:.2f} s |")
    for name, frames in [("15 s", lambda s: 1500),
                         ("clip + 5 s", lambda s: min(3000, int(np.ceil(s + 5)) * 100)),
                         ("clip + 2 s", lambda s: min(3000, int(np.ceil(s + 2)) * 100))]:
        answers, secs = run(frames)
        print(f"| {name} | {wer(refs, answers):.2%} | {wer(full, answers):.2%} | {secs:.2f} s |")


if __name__ == "__main__":
    main()
