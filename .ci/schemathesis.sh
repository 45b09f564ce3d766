#!/usr/bin/env bash
# Schemathesis against the daemon's own OpenAPI description (/openapi.json): it generates requests for
# every operation (examples, coverage, fuzzing, stateful) and fails on a 5xx, a status the description
# does not list, or an answer whose type or body does not match it. The daemon is the debug binary
# `cargo test` built, on port 0 with its store in a temp dir, with one token holding every right.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import schemathesis' 2>/dev/null; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo -E"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  # Debian's own Python refuses to install beside its packages unless told (PEP 668).
  python3 -m pip install --quiet schemathesis 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages schemathesis
fi
WORK=$(mktemp -d)
DAEMON=
trap '[ -n "$DAEMON" ] && kill $DAEMON 2>/dev/null; rm -rf "$WORK"' EXIT
cat > "$WORK/consentd.toml" <<TOML
[[tokens]]
name = "schemathesis"
token_env = "ST_TOKEN"
rights = ["view", "create", "modify", "delete", "manage", "dpo"]
TOML
# Where cargo put the binary (CARGO_TARGET_DIR or a config may move target/).
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
ST_TOKEN=st-secret CONSENTD_LOG=warn CONSENTD_LISTEN=127.0.0.1:0 CONSENTD_DATA_DIR="$WORK/data" \
  "$TARGET/debug/consentd" --config "$WORK/consentd.toml" serve > "$WORK/addr" 2> "$WORK/log" &
DAEMON=$!
for _ in $(seq 100); do grep -q listening "$WORK/addr" && break; sleep 0.1; done
if ! grep -q listening "$WORK/addr"; then
  echo "the daemon did not start:" >&2
  cat "$WORK/log" >&2
  exit 1
fi
URL=http://$(sed -n 's/^listening on //p' "$WORK/addr")
status=0
python3 -m schemathesis.cli run "$URL/openapi.json" -H "Authorization: Bearer st-secret" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples 50 --request-timeout 30 || status=$?
if grep -q panicked "$WORK/log"; then
  echo "the daemon panicked:" >&2
  cat "$WORK/log" >&2
  status=1
fi
exit $status
