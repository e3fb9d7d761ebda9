#!/usr/bin/env python3
"""Does Whisper's answer for a clip depend on where in the 30 s window it sits?

Packing (issue 12) lays short clips end to end in one window, so every clip
but the first starts seconds into it. This isolates that one change: each
corpus clip of <= 12 s is decoded ALONE, silence everywhere else, starting at
0, 5, 10, 15 and 20 s into the window (where it fits), with CTranslate2 and
the options whisper-serve uses (beam 5, timestamps; the first timestamp may
be anywhere, as it must be for a clip that starts late). Scored with
Whisper's English normaliser: WER of each offset's answers against the
answers at offset 0, and against the references.

  bench/packing_position.py [--models tiny.en,base] [--out bench/out/packing-position.md]
"""
import argparse
from pathlib import Path

import ctranslate2
import numpy as np
import tokenizers
from faster_whisper.audio import decode_audio
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer

from packing_study import ROOT, corpus, wer

SR = 16000
OFFSETS = [0, 5, 10, 15, 20]


def load(model_name):
    """CTranslate2's Whisper as whisper-serve runs it on CPU (int8, 2
    threads) and a tokenizer set for English transcription."""
    path = str(ROOT / "models" / model_name)
    model = ctranslate2.models.Whisper(path, device="cpu", compute_type="int8", intra_threads=2)
    ml = model.is_multilingual
    tok = Tokenizer(tokenizers.Tokenizer.from_file(path + "/tokenizer.json"), ml,
                    task="transcribe" if ml else None, language="en" if ml else None)
    return model, tok


def short_clips(max_s=12.0):
    """The corpus clips up to max_s long: (16 kHz samples, reference)."""
    clips = [(decode_audio(str(p), sampling_rate=SR), ref) for p, ref in corpus()]
    return [(a, r) for a, r in clips if len(a) / SR <= max_s]


def study(model_name, clips, fe):
    model, tok = load(model_name)
    prompt = list(tok.sot_sequence)
    answers = {}
    for off in OFFSETS:
        feats, keep = [], []
        for i, (audio, _) in enumerate(clips):
            if off + len(audio) / SR > 30.0:
                continue
            window = np.zeros(30 * SR, dtype=np.float32)
            window[off * SR: off * SR + len(audio)] = audio
            feats.append(fe(window)[:, :3000])
            keep.append(i)
        for start in range(0, len(feats), 8):
            batch = ctranslate2.StorageView.from_array(np.stack(feats[start:start + 8]))
            res = model.generate(batch, [prompt] * batch.shape[0], beam_size=5, max_initial_timestamp_index=1500)
            for i, r in zip(keep[start:start + 8], res):
                answers[(off, i)] = tok.decode([t for t in r.sequences_ids[0] if t < tok.eot])
    rows = []
    for off in OFFSETS:
        ids = [i for i in range(len(clips)) if (off, i) in answers]
        rows.append((off, len(ids),
                     wer([answers[(0, i)] for i in ids], [answers[(off, i)] for i in ids]),
                     wer([clips[i][1] for i in ids], [answers[(0, i)] for i in ids]),
                     wer([clips[i][1] for i in ids], [answers[(off, i)] for i in ids])))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--out", default=str(ROOT / "bench/out/packing-position.md"))
    args = ap.parse_args()
    fe = FeatureExtractor()
    clips = short_clips()
    lines = [f"# Where a clip sits in the window ({len(clips)} corpus clips <= 12 s, each alone)", "",
             "| model | starts at | clips | WER vs same clip at 0 s | WER vs refs at 0 s | WER vs refs here |",
             "|---|---|---|---|---|---|"]
    for m in args.models.split(","):
        for off, n, moved, ref0, ref in study(m, clips, fe):
            lines.append(f"| {m} | {off} s | {n} | {moved:.4f} | {ref0:.4f} | {ref:.4f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
