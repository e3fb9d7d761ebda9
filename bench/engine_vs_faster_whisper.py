#!/usr/bin/env python3
"""whisper-serve's engine against faster-whisper, measured in one run on the
same machine, model, threads, beam size and compute type.

  .venv/bin/python bench/engine_vs_faster_whisper.py [--model models/tiny.en]
      [--threads 2] [--beam 5] [--compute int8] [--rounds 3] [--long-builds 1]
      [--out bench/out/engine.json]

Both engines run in their own process, alternately, for --rounds rounds; each
round transcribes jfk.wav 5 times (single-request latency, median) and every
clip of ../shared/speech once (RTFx = audio seconds / wall seconds, model
load excluded). Also prints the corpus WER of each (Whisper's English
normaliser), so speed is never bought with accuracy.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SPEECH = os.path.join(REPO, "..", "shared", "speech")
JFK = os.path.join(SPEECH, "jfk_whisper_cpp", "jfk.wav")


def corpus():
    out = []
    for d in sorted(os.listdir(SPEECH)):
        refs = os.path.join(SPEECH, d, "refs.tsv")
        if not os.path.exists(refs):
            continue
        for line in open(refs, encoding="utf-8"):
            f, _, text = line.rstrip("\n").partition("\t")
            if not text or (d == "jfk_openai_whisper" and f == "jfk.flac"):
                continue
            out.append((os.path.join(SPEECH, d, f), text))
    return out


FW_CHILD = r"""
import json, sys, time
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio
model, threads, beam, compute = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
files = json.loads(sys.stdin.read())
m = WhisperModel(model, device="cpu", compute_type=compute, cpu_threads=threads)
for f in files:
    t = time.perf_counter()
    a = decode_audio(f)
    segs, info = m.transcribe(a, beam_size=beam, language="en" if m.model.is_multilingual is False else None)
    text = "".join(s.text for s in segs).strip()
    print(json.dumps({"file": f, "text": text, "duration": len(a) / 16000, "seconds": time.perf_counter() - t}), flush=True)
"""


def run_fw(args, files):
    p = subprocess.run([sys.executable, "-c", FW_CHILD, args.model, str(args.threads), str(args.beam), args.compute],
                       input=json.dumps(files), capture_output=True, text=True, check=True)
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def run_ours(args, files, bin_=None):
    env = dict(os.environ,
               WHISPER_SERVE__ENGINE__THREADS_PER_REPLICA=str(args.threads),
               WHISPER_SERVE__DECODING__BEAM_SIZE=str(args.beam),
               WHISPER_SERVE__ENGINE__COMPUTE_TYPE=args.compute,
               WHISPER_SERVE__MODEL__SIZE=os.path.abspath(args.model),
               WHISPER_SERVE__MODEL__DEVICE="cpu",
               WHISPER_SERVE__LOGGING__FILE="null",
               WHISPER_SERVE__LOGGING__LEVEL="WARNING")
    bin_ = bin_ or os.path.join(REPO, "target", "release", "whisper-serve")
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "config.json")
        open(cfg, "w").write("{}")
        p = subprocess.run([bin_, "transcribe", "--json", "--config", cfg, *files],
                           capture_output=True, text=True, env=env, check=True)
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def wer(refs, hyps):
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer
    n = EnglishTextNormalizer()
    return jiwer.wer([n(r) for r in refs], [n(h) for h in hyps])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(REPO, "models", "tiny.en"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--compute", default="int8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--long-builds", type=int, default=1, help="builds of the long file to average (see below)")
    ap.add_argument("--extra-bin", action="append", default=[], metavar="LABEL=PATH",
                    help="also measure another whisper-serve build (e.g. source-build=/tmp/t/release/whisper-serve)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "out", "engine.json"))
    args = ap.parse_args()
    clips = corpus()
    files = [f for f, _ in clips]
    audio_s = None
    runners = [("faster-whisper", run_fw), ("whisper-serve", run_ours)]
    for spec in args.extra_bin:
        label, _, path = spec.partition("=")
        runners.append((f"whisper-serve ({label})", lambda a, f, p=path: run_ours(a, f, p)))
    res = {name: {"jfk": [], "rtfx": [], "texts": None} for name, _ in runners}
    for r in range(args.rounds):
        for name, fn in runners:
            jfk = fn(args, [JFK] * 6)[1:]  # the first call warms up
            res[name]["jfk"].append(statistics.median(x["seconds"] for x in jfk))
            out = fn(args, files)
            audio_s = sum(x["duration"] for x in out)
            res[name]["rtfx"].append(audio_s / sum(x["seconds"] for x in out))
            res[name]["texts"] = [x["text"] for x in out]
            print(f"round {r + 1} {name}: jfk {res[name]['jfk'][-1]:.3f} s, RTFx {res[name]['rtfx'][-1]:.1f}", flush=True)
    # The whole corpus as one long file: long-form decoding (window seeking,
    # previous-text conditioning) against faster-whisper's.
    # sox dithers when it writes 16-bit samples, so every build of the file
    # differs slightly and tips a few temperature fallbacks: the long-file
    # WER moves by about ±0.3 points between builds, for both engines.
    # --long-builds N averages N builds.
    refs = [t for _, t in clips]
    long_res = {name: [] for name, _ in runners}
    for _ in range(args.long_builds):
        with tempfile.TemporaryDirectory() as d:
            parts = []
            for i, f in enumerate(files):
                out = os.path.join(d, f"{i:03}.wav")
                subprocess.run(["sox", f, "-r", "16000", "-c", "1", "-b", "16", out], check=True)
                parts.append(out)
            long = os.path.join(d, "corpus.wav")
            subprocess.run(["sox", *parts, long], check=True)
            for name, fn in runners:
                out = fn(args, [long])[0]
                out["wer"] = wer([" ".join(refs)], [out["text"]])
                long_res[name].append(out)
                print(f"long file {name}: {out['seconds']:.1f} s, WER {out['wer']:.4f}", flush=True)
    summary = {"model": os.path.basename(os.path.normpath(args.model)), "threads": args.threads, "beam": args.beam,
               "compute": args.compute, "clips": len(files), "audio_seconds": round(audio_s, 1), "rounds": args.rounds}
    for name in res:
        summary[name] = {"jfk_latency_s": round(min(res[name]["jfk"]), 3),
                         "rtfx": round(max(res[name]["rtfx"]), 1),
                         "wer": round(wer(refs, res[name]["texts"]), 4),
                         "long_file_wer": round(statistics.mean(x["wer"] for x in long_res[name]), 4),
                         "long_file_wer_range": [round(min(x["wer"] for x in long_res[name]), 4),
                                                 round(max(x["wer"] for x in long_res[name]), 4)],
                         "long_file_rtfx": round(max(x["duration"] / x["seconds"] for x in long_res[name]), 1)}
    fw, ws = summary["faster-whisper"], summary["whisper-serve"]
    summary["latency_ratio_fw_over_ours"] = round(fw["jfk_latency_s"] / ws["jfk_latency_s"], 2)
    summary["rtfx_ratio_ours_over_fw"] = round(ws["rtfx"] / fw["rtfx"], 2)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    json.dump(summary, open(args.out, "w"), indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
