#!/usr/bin/env python3
"""Corpus WER with Whisper's English text normaliser, as the project scores
accuracy. Reads JSON [{"ref": ..., "hyp": ...}, ...] on stdin, prints the
WER (a float) on stdout.
"""
import json
import sys

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

norm = EnglishTextNormalizer()
pairs = json.load(sys.stdin)
refs = [norm(p["ref"]) for p in pairs]
hyps = [norm(p["hyp"]) for p in pairs]
# jiwer refuses empty references; a clip with no words counts as nothing.
keep = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
print(jiwer.wer([r for r, _ in keep], [h for _, h in keep]))
