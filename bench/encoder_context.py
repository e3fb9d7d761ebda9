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
import jiwer
import numpy as np
import tokenizers
from faster_whisper.audio import decode_audio
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer
from whisper_normalizer.english import EnglishTextNormalizer

from packing_study import ROOT, corpus

NORM = EnglishTextNormalizer()
SR = 16000


def wer(refs, hyps):
    pairs = [(NORM(r), NORM(h) or "-") for r, h in zip(refs, hyps) if NORM(r).strip()]
    return jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def main():
    path = str(ROOT / "models" / (sys.argv[1] if len(sys.argv) > 1 else "tiny.en"))
    model = ctranslate2.models.Whisper(path, device="cpu", compute_type="int8", intra_threads=2)
    ml = model.is_multilingual
    tok = Tokenizer(tokenizers.Tokenizer.from_file(path + "/tokenizer.json"), ml,
                    task="transcribe" if ml else None, language="en" if ml else None)
    fe = FeatureExtractor()
    clips = [(decode_audio(str(p), sampling_rate=SR), r) for p, r in corpus()]
    clips = [(a, r) for a, r in clips if len(a) / SR <= 12.0]

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
