#!/usr/bin/env bash
# Disk and compaction figures (issue 13). With the release binary on a store of N generated consents
# (the generator's impossible prefixes mended, as benches/run.sh does):
#   1. the fresh import: time and size on disk;
#   2. W single API writes (adds and toggles, as agents and the IVR make them): bytes on disk per
#      write, and the store's size after them;
#   3. a compaction (POST /v1/store/compact) while the recording check is asked in a loop: time,
#      writes' wait, size after, and the check's p50/p99 before and during;
#   4. the same compaction from the command line (daemon stopped): time and peak RSS;
#   5. a purge under the default settings: seconds until the DPO report says it is physically done.
# Prints figures only. Usage: benches/disk.sh [N] [W]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
W=${2:-20000}
GEN=${GEN:-../shared/bench/gen_consents.py}
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/consentd
python3 "$GEN" "$N" csv | sed -e 's/+1212/+121/g; s/+1415/+141/g; s/+3312/+331/g; s/+3461/+346/g' > "$WORK/in.csv"
python3 - "$BIN" "$WORK" "$N" "$W" <<'PY'
import http.client, json, os, random, resource, statistics, subprocess, sys, threading, time
bin_, work, n, w = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = os.path.join(work, "data")
cfg = os.path.join(work, "c.toml")
open(cfg, "w").write('[[tokens]]\nname = "admin"\ntoken_env = "T"\nrights = ["view","create","modify","delete","manage","dpo"]\n')
env = dict(os.environ, T="s", CONSENTD_DATA_DIR=data, CONSENTD_LOG="warn", CONSENTD_LISTEN="127.0.0.1:0")

def du():
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(data) for f in fs)

def mb(b):
    return f"{b / 1e6:,.1f} MB"

t = time.perf_counter()
subprocess.run([bin_, "--config", cfg, "import", "--mapping", "generic-csv", os.path.join(work, "in.csv")], env=env, check=True, stdout=subprocess.DEVNULL)
fresh = du()
print(f"fresh import of {n:,} consents: {time.perf_counter() - t:.2f} s, {mb(fresh)} on disk")

def start():
    p = subprocess.Popen([bin_, "--config", cfg, "serve"], env=env, stdout=subprocess.PIPE)
    open(os.path.join(work, "pid"), "w").write(str(p.pid))
    host, port = p.stdout.readline().decode().split()[-1].split(":")
    return p, host, int(port)

p, host, port = start()
H = {"Authorization": "Bearer s", "Content-Type": "application/json"}
def call(c, method, path, body=None):
    c.request(method, path, json.dumps(body) if body is not None else None, H)
    r = c.getresponse()
    return r.status, r.read()

c = http.client.HTTPConnection(host, port)
numbers = [l.split(",")[0] for l in open(os.path.join(work, "in.csv")).read().splitlines()[1:2001]]
before = du()
t = time.perf_counter()
for i in range(w):
    if i % 2 == 0:
        call(c, "POST", "/v1/consents", {"number": "+4917%08d" % random.randrange(10**8), "usage": "whatsapp"})
    else:
        call(c, "POST", "/v1/ivr/answer", {"number": random.choice(numbers), "digit": random.choice("12")})
dt = time.perf_counter() - t
time.sleep(1)
after = du()
print(f"{w:,} single writes (adds, IVR answers) in {dt:.1f} s: {mb(before)} -> {mb(after)}, {(after - before) / w:,.0f} bytes on disk a write")

# The recording check, in a loop on its own connection, before and during a compaction.
def checks(seconds, out):
    cc = http.client.HTTPConnection(host, port)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        call(cc, "GET", "/v1/checks/recording/" + random.choice(numbers).replace("+", "%2B"))
        out.append(time.perf_counter() - t0)

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] * 1000

base = []
checks(3, base)
during = []
stop = threading.Event()
def loop():
    while not stop.is_set():
        checks(0.2, during)
th = threading.Thread(target=loop); th.start()
t = time.perf_counter()
status, body = call(c, "POST", "/v1/store/compact")
dt = time.perf_counter() - t
stop.set(); th.join()
done = json.loads(body)
print(f"compaction over the API: {dt:.2f} s, writes waited {done.get('writes_waited_ms')} ms, {mb(done['bytes_before'])} -> {mb(done['bytes_after'])} (live {mb(done['live_bytes'])}; fresh import {mb(fresh)})")
print(f"recording check p50/p99: before {pct(base, .5):.2f}/{pct(base, .99):.2f} ms ({len(base)} checks), during the compaction {pct(during, .5):.2f}/{pct(during, .99):.2f} ms ({len(during)} checks)")

# A purge under the default settings (compact_after_purge_secs = 60).
target = numbers[7]
t = time.perf_counter()
call(c, "POST", "/v1/dpo/purge", {"number": target})
while True:
    _, body = call(c, "GET", "/v1/dpo/report?number=" + target.replace("+", "%2B"))
    purges = json.loads(body)["numbers"][0]["purges"]
    if purges and purges[-1].get("physically_done_at"):
        break
    time.sleep(1)
print(f"purge to physically done under the default settings: {time.perf_counter() - t:.0f} s")
p.terminate(); p.wait()

# Measured in a process of its own, so its peak RSS is the compaction's alone.
probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
         "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
         "print(f'{time.perf_counter() - t:.2f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f}')")
secs, rss = subprocess.run([sys.executable, "-c", probe, bin_, "--config", cfg, "store", "compact"], env=env, check=True, capture_output=True, text=True).stdout.split()
print(f"compaction from the command line: {secs} s, peak RSS {rss} MB, {mb(du())} after")
PY
