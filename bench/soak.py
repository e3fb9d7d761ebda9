#!/usr/bin/env python3
"""Soak: twice the saturating concurrency for a while, with API keys and
rate limits on. Starts `whisper-serve serve` (tiny.en, defaults), sends
LibriSpeech + JFK clips from CONC threads spread over 4 keys for DURATION
seconds, samples the server's RSS every 5 s, and checks: only 200, 429 and
503 come back, every request is answered (no connection errors or
timeouts), and RSS does not grow: the second half of the run's mean and
peak within 10 % of the first half's (after a 20 s warm-up).

    .venv/bin/python bench/soak.py [--duration 120] [--concurrency 32]
"""
import argparse, glob, json, os, random, subprocess, sys, tempfile, threading, time
from collections import Counter

import http.client, urllib.parse, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--duration", type=float, default=120)
ap.add_argument("--concurrency", type=int, default=32)
ap.add_argument("--rpm", type=int, default=20, help="rate_limit.requests_per_minute per key")
ap.add_argument("--burst", type=int, default=5)
args = ap.parse_args()

repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(repo)
clips = sorted(glob.glob("../shared/speech/librispeech_*/*.wav") + glob.glob("../shared/speech/librispeech_*/*.flac"))
clips.append("../shared/speech/jfk_whisper_cpp/jfk.wav")
audio = [(os.path.basename(p), open(p, "rb").read()) for p in clips]
keys = [f"sk-soak-{i}-0123456789" for i in range(4)]
work = tempfile.mkdtemp()
cfg = {
    "server": {"host": "127.0.0.1", "port": 0},
    "model": {"size": "tiny.en", "model_dir": "models", "device": "cpu"},
    "auth": {"api_keys": [{"id": f"soak{i}", "key": k} for i, k in enumerate(keys)]},
    "rate_limit": {"requests_per_minute": args.rpm, "burst": args.burst},
    "jobs": {"dir": os.path.join(work, "jobs")},
    "logging": {"level": "WARNING", "file": None},
}
path = os.path.join(work, "config.json")
json.dump(cfg, open(path, "w"))
srv = subprocess.Popen(["target/release/whisper-serve", "serve", "--config", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
url = None
for line in srv.stdout:
    if line.startswith("listening on "):
        url = "http://" + line.split()[-1]
        break
for _ in range(600):
    try:
        if urllib.request.urlopen(url + "/health").status == 200:
            break
    except OSError:
        pass
    time.sleep(0.1)

BOUNDARY = "soakboundary7f3a"
def multipart(name, data):
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"audio_file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()

def rss_mb():
    with open(f"/proc/{srv.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

statuses, failures, lock = Counter(), Counter(), threading.Lock()
stop_at = time.time() + args.duration
latencies = []

def client(i):
    rnd = random.Random(i)
    key = keys[i % len(keys)]
    host = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=600)
    while time.time() < stop_at:
        name, data = rnd.choice(audio)
        t = time.time()
        try:
            conn.request("POST", "/transcribe", body=multipart(name, data), headers={
                "Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
            r = conn.getresponse()
            r.read()
            with lock:
                statuses[r.status] += 1
                if r.status == 200:
                    latencies.append(time.time() - t)
            if r.status in (429, 503):
                time.sleep(min(float(r.getheader("retry-after") or "1"), 5))
        except (OSError, http.client.HTTPException) as e:
            with lock:
                failures[type(e).__name__] += 1
            conn.close()
            conn = http.client.HTTPConnection(host.hostname, host.port, timeout=600)

threads = [threading.Thread(target=client, args=(i,)) for i in range(args.concurrency)]
for t in threads:
    t.start()
samples = []
while any(t.is_alive() for t in threads):
    samples.append((round(time.time() - (stop_at - args.duration)), rss_mb()))
    time.sleep(5)
for t in threads:
    t.join()
srv.terminate()
srv.wait(60)

warm = [m for s, m in samples if s >= 20] or [m for _, m in samples]
base = warm[0]
spread = (max(warm) - min(warm)) / base
# Flat = no growth: the batches' working set moves RSS up and down by
# ~100 MB from one sample to the next, so compare the two halves of the
# run (mean and peak) rather than single samples.
half = len(warm) // 2 or 1
first, second = warm[:half], warm[half:] or warm[:half]
drift = (sum(second) / len(second)) / (sum(first) / len(first)) - 1
peak_growth = max(second) / max(first) - 1
latencies.sort()
p95 = latencies[int(len(latencies) * 0.95)] if latencies else 0
print(f"duration {args.duration:.0f} s, concurrency {args.concurrency}, {len(keys)} keys at {args.rpm}/min (burst {args.burst})")
print(f"statuses: {dict(sorted(statuses.items()))}; client errors: {dict(failures)}")
print(f"200s: {statuses[200]} ({statuses[200] / args.duration:.2f}/s), p95 {p95:.2f} s")
print(f"RSS MB after warm-up: first {base:.0f}, min {min(warm):.0f}, max {max(warm):.0f}, last {warm[-1]:.0f} (spread {spread * 100:.1f} %)")
print(f"second half vs first: mean {drift * 100:+.1f} %, peak {peak_growth * 100:+.1f} %")
print("RSS samples (s, MB):", samples)
ok = set(statuses) <= {200, 429, 503} and not failures and abs(drift) <= 0.10 and peak_growth <= 0.10
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
