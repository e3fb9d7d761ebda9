#!/usr/bin/env python3
"""Accuracy study for batching.pack_short_clips (issue 12).

For each set of clips and each setting (packing off, packing on with a gap),
starts the real server (tiny.en by default), sends every clip of the set at
once (16 at a time, in a shuffled order per repeat), and scores:
  - WER against the references (sets that have them), Whisper's normaliser;
  - WER of each packed answer against the same clip's unpacked answer
    ("moved text": anything one request gained or lost next to others).
Sets: the corpus of ../shared/speech; the same clips padded with 1 s of
silence on both sides; every other clip 20 dB quieter (loud/quiet mixed);
clips cut at 70 % of their length (ending mid-word; no reference); the first
1.5 s of each clip (one or two words; no reference).

  bench/packing_study.py [--model tiny.en] [--gaps 300,1000] [--repeats 3] [--out bench/out/packing.md]
"""
import argparse
import concurrent.futures as cf
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import urllib.request
import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT.parent / "shared" / "speech"
BIN = ROOT / "target" / "release" / "whisper-serve"
NORM = EnglishTextNormalizer()


def corpus():
    out = []
    for d in sorted(p for p in SPEECH.iterdir() if (p / "refs.tsv").exists()):
        for line in (d / "refs.tsv").read_text().splitlines():
            if "\t" not in line:
                continue
            f, text = line.split("\t", 1)
            if f == "file" or (d.name == "jfk_openai_whisper" and f == "jfk.flac"):
                continue
            out.append((d / f, text))
    return out


def sox(*args):
    subprocess.run(["sox", *map(str, args)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_sets(tmp):
    base = []
    for i, (p, ref) in enumerate(corpus()):
        wav = tmp / f"c{i:03}.wav"
        sox(p, "-r", "16000", "-c", "1", "-b", "16", wav)
        base.append((wav, ref))
    sets = {"corpus": base, "padded 1 s": [], "loud/quiet": [], "cut mid-word": [], "first 1.5 s": []}
    for i, (wav, ref) in enumerate(base):
        dur = float(subprocess.run(["soxi", "-D", str(wav)], capture_output=True, text=True).stdout)
        padded = tmp / f"pad{i:03}.wav"
        sox(wav, padded, "pad", "1", "1")
        sets["padded 1 s"].append((padded, ref))
        quiet = tmp / f"lq{i:03}.wav"
        sox(wav, quiet, "gain", "-20" if i % 2 else "0")
        sets["loud/quiet"].append((quiet, ref))
        cut = tmp / f"cut{i:03}.wav"
        sox(wav, cut, "trim", "0", f"{dur * 0.7:.2f}")
        sets["cut mid-word"].append((cut, None))
        head = tmp / f"head{i:03}.wav"
        sox(wav, head, "trim", "0", "1.5")
        sets["first 1.5 s"].append((head, None))
    return sets


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, model, pack, gap, tmp):
        self.port = free_port()
        cfg = {
            "server": {"host": "127.0.0.1", "port": self.port, "num_cpus": 2},
            "model": {"size": model, "device": "cpu", "model_dir": str(ROOT / "models")},
            "deployment": {"num_replicas": 1, "cpu_per_replica": 2},
            "batching": {"max_batch_size": 8, "max_wait_ms": 200, "pack_short_clips": pack, "pack_gap_ms": gap},
            "jobs": {"dir": str(tmp / f"jobs-{self.port}")},
            "logging": {"level": "WARNING", "file": None},
        }
        path = tmp / f"cfg-{self.port}.json"
        path.write_text(json.dumps(cfg))
        self.proc = subprocess.Popen([str(BIN), "serve", "--config", str(path)], stdout=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(600):
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not healthy")

    def metric(self, name):
        with urllib.request.urlopen(self.url + "/metrics") as r:
            text = r.read().decode()
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def transcribe_all(server, files, seed):
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    out = [None] * len(files)

    def one(i):
        out = subprocess.run(["curl", "-sf", "-F", f"file=@{files[i]}", "-F", "model=whisper-1",
                              server.url + "/v1/audio/transcriptions"], capture_output=True, check=True)
        return i, json.loads(out.stdout)["text"]

    with cf.ThreadPoolExecutor(16) as pool:
        for i, text in pool.map(one, order):
            out[i] = text
    return out


def wer(refs, hyps):
    pairs = [(NORM(r), NORM(h)) for r, h in zip(refs, hyps) if NORM(r).strip()]
    if not pairs:
        return 0.0
    return jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--gaps", default="300,1000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "packing.md"))
    a = ap.parse_args()
    gaps = [int(g) for g in a.gaps.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="packing-study-"))
    try:
        sets = make_sets(tmp)
        settings = [("off", False, 0)] + [(f"on, gap {g} ms", True, g) for g in gaps]
        rows = []
        for name, pack, gap in settings:
            server = Server(a.model, pack, gap, tmp)
            try:
                for set_name, items in sets.items():
                    files = [p for p, _ in items]
                    runs = [transcribe_all(server, files, seed) for seed in range(a.repeats)]
                    rows.append((set_name, name, items, runs))
                windows, requests, redo = (server.metric(f"whisper_serve_packed_{k}_total") for k in ("windows", "requests", "redo"))
                print(f"{name}: {windows:.0f} packed windows, {requests:.0f} requests, {redo:.0f} decoded again", file=sys.stderr)
            finally:
                server.stop()
        alone = {s: runs for s, n, _, runs in rows if n == "off"}
        lines = [f"Model {a.model}, 1 replica x 2 threads, batches of 8, {a.repeats} shuffled bursts per set.", "",
                 "| set | clips | setting | WER vs reference | WER vs unpacked (moved text) |", "|---|---|---|---|---|"]
        for set_name, name, items, runs in rows:
            refs = [r for _, r in items]
            vs_ref = "-" if refs[0] is None else " / ".join(f"{wer(refs, run) * 100:.2f} %" for run in runs)
            base = alone[set_name][0]
            moved = " / ".join(f"{wer(base, run) * 100:.2f} %" for run in runs)
            lines.append(f"| {set_name} | {len(items)} | {name} | {vs_ref} | {moved} |")
        table = "\n".join(lines)
        print(table)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(table + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
