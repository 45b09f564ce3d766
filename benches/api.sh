#!/usr/bin/env bash
# The API benchmark: stores N consents (gen_consents.py), starts the daemon, and measures the two
# checks (/v1/checks/recording, /v1/checks/whatsapp) with wrk (64 connections, random stored numbers),
# next to /healthz (a bare handler returning a constant through the same server: the upper bound),
# then a bare axum JSON handler on the same paths (benches/bare_axum.rs, the peer), and end-to-end
# searches by trailing digits and by one creation day.
# Usage: benches/api.sh [N] [SECONDS]. Needs wrk (apt-get install wrk). Prints figures only.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
SECS=${2:-10}
GEN=${GEN:-../shared/bench/gen_consents.py}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
WORK=$(mktemp -d)
DAEMON=
trap '[ -n "$DAEMON" ] && kill $DAEMON 2>/dev/null; [ -n "${BARE_PID:-}" ] && kill $BARE_PID 2>/dev/null; rm -rf "$WORK"' EXIT
cargo build --release --quiet
BIN=$PWD/target/release/consentd
BARE=$(cargo bench --bench bare_axum --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["name"] == "bare_axum"]')
export CONSENTD_LOG=warn CONSENTD_DATA_DIR=$WORK/data
python3 "$GEN" "$N" csv > "$WORK/in.csv"
# Exit 2: some records refused (the generator writes some numbers with a digit too many), as expected.
$BIN import --mapping generic-csv "$WORK/in.csv" > /dev/null || [ $? -eq 2 ]
echo "store: $N consents"
# Numbers to ask about: every 97th stored one (and some we do not hold, as real callers are).
awk -F, 'NR > 1 && NR % 97 == 0 { sub(/^\+/, "", $1); print $1 } NR % 1000 == 0 { print "49170" NR }' "$WORK/in.csv" > "$WORK/numbers"
cat > "$WORK/check.lua" <<LUA
local numbers = {}
for line in io.lines("$WORK/numbers") do numbers[#numbers + 1] = line end
local kind = os.getenv("CHECK")
wrk.headers["Authorization"] = "Bearer bench-secret"
request = function()
  local n = numbers[math.random(#numbers)]
  local path = "/v1/checks/" .. kind .. "/%2B" .. n
  if kind == "whatsapp" then path = path .. "?last_customer_message_at=2024-06-01T10%3A00%3A00Z" end
  return wrk.format("GET", path)
end
LUA
cat > "$WORK/config.toml" <<TOML
[[tokens]]
name = "bench"
token_env = "BENCH_TOKEN"
rights = ["view"]
TOML
BENCH_TOKEN=bench-secret CONSENTD_LISTEN=127.0.0.1:0 $BIN --config "$WORK/config.toml" serve > "$WORK/addr" &
DAEMON=$!
while ! grep -q listening "$WORK/addr"; do sleep 0.1; done
URL=http://$(sed -n 's/^listening on //p' "$WORK/addr")
summary() {
  awk -v label="$1" '/Requests\/sec/ { rps = $2 } /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 } /Non-2xx/ { bad = $NF }
    END { printf "%-34s %10s req/s  p50 %8s  p99 %8s%s\n", label, rps, p50, p99, (bad ? "  non-2xx " bad : "") }'
}
wrk -t2 -c64 -d"${SECS}s" --latency "$URL/healthz" | summary "GET /healthz (constant, bound)"
CHECK=recording wrk -t2 -c64 -d"${SECS}s" --latency -s "$WORK/check.lua" "$URL" | tee "$WORK/recording.txt" | summary "GET /v1/checks/recording/{n}"
# The peer: a bare axum JSON handler (benches/bare_axum.rs) on the same paths, same wrk settings,
# measured while the daemon idles; then the ratio the issue asks to keep at 0.7 or more.
"$BARE" > "$WORK/bare_addr" &
BARE_PID=$!
while ! grep -q listening "$WORK/bare_addr"; do sleep 0.1; done
BARE_URL=http://$(sed -n 's/^listening on //p' "$WORK/bare_addr")
CHECK=recording wrk -t2 -c64 -d"${SECS}s" --latency -s "$WORK/check.lua" "$BARE_URL" | tee "$WORK/bare.txt" | summary "bare axum JSON handler (peer)"
kill $BARE_PID
awk '/Requests\/sec/ { r[FILENAME] = $2 } END { for (f in r) if (f ~ /bare/) b = r[f]; else c = r[f];
  printf "recording check / bare axum: %.2fx\n", c / b }' "$WORK/recording.txt" "$WORK/bare.txt"
CHECK=whatsapp wrk -t2 -c64 -d"${SECS}s" --latency -s "$WORK/check.lua" "$URL" | summary "GET /v1/checks/whatsapp/{n}"
# End to end, one client: best of 5 wall times through curl.
DIGITS=$(sed -n 5p "$WORK/numbers" | tail -c 5)
for q in "digits=$DIGITS" "created_from=2024-06-01&created_to=2024-06-01&limit=100"; do
  best=$(for _ in 1 2 3 4 5; do
    curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer bench-secret" "$URL/v1/consents?$q"
  done | sort -n | head -1)
  awk -v q="$q" -v t="$best" 'BEGIN { printf "search %-55s %7.2f ms end to end\n", q, t * 1000 }'
done
