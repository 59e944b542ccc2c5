#!/usr/bin/env bash
# The README's first command: set up, start one peer on embedded defaults, run the seed
# pipeline (examples/seed.json) with live progress bars, print the output CIDs with their
# gateway URLs, and keep the peer running (web UI) until Ctrl-C.
#
#   bash scripts/run.sh            # cold: builds .cache/corpus with espeak-ng, ~1 min
#   bash scripts/run.sh --once     # stop the peer when the job ends (exit 1 if it failed)
#
# Settings (environment):
#   BANZAI_DATA_DIR   peer data dir        (default .cache/demo-peer, see below)
#   BANZAI_HTTP       peer HTTP HOST:PORT  (default 127.0.0.1:8700; busy -> a free port)
#   DEMO_CORPUS       corpus directory     (default .cache/corpus)
#   DEMO_SPEAKERS     speakers to build    (default awb; comma-separated, see make_corpus.py)
#   DEMO_UTTERANCES   utterances/speaker   (default 40)
#   DEMO_PORT         corpus HTTP port     (default 8765, as in examples/seed.json;
#                                           busy -> a free port, URLs rewritten)
#   DEMO_PIPELINE     pipeline to submit   (default examples/seed.json; e.g.
#                     DEMO_SPEAKERS=awb,bdl,clb,jmk DEMO_PIPELINE=examples/speakers-dag.json)
#
# Data dir: .cache/demo-peer (inside the checkout, git-ignored) rather than the peer's XDG
# default ($XDG_DATA_HOME/banzai): the demo must not share an event log or store with a
# real peer of this machine, and deleting the checkout removes everything it made. The
# peer keeps its cache there, so a second run finishes in seconds (every task cached).
# The demo peer runs alone (--no-mdns, mesh "banzai-demo"): it never joins a lab mesh or
# other peers of this machine, so all its outputs are in its own store. It lets
# FETCH_FESTVOX reach the corpus server on 127.0.0.1 (--fetch-allow 127.0.0.1/32; loopback
# and private addresses are refused by default). DEMO_PEER_ARGS adds
# flags (e.g. DEMO_PEER_ARGS="--slots 2").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

once=0
for a in "$@"; do
  case "$a" in
    --once) once=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $a (try --help)" >&2; exit 2 ;;
  esac
done

DATA=${BANZAI_DATA_DIR:-$ROOT/.cache/demo-peer}
HTTP=${BANZAI_HTTP:-127.0.0.1:8700}
CORPUS=${DEMO_CORPUS:-$ROOT/.cache/corpus}
SPEAKERS=${DEMO_SPEAKERS:-awb}
UTTERANCES=${DEMO_UTTERANCES:-40}
PORT=${DEMO_PORT:-8765}
PIPELINE=${DEMO_PIPELINE:-$ROOT/examples/seed.json}
PY=$ROOT/.venv/bin/python
LOGDIR=$ROOT/.cache
PEER_LOG=$LOGDIR/demo-peer.log
SERVE_LOG=$LOGDIR/demo-serve.log
START_TIMEOUT_S=60

if [[ -t 2 ]]; then B=$'\033[1m' N=$'\033[0m'; else B="" N=""; fi
say() { printf '%srun.sh:%s %s\n' "$B" "$N" "$*" >&2; }
die() { say "$*"; exit 1; }

# -- 1. set up --------------------------------------------------------------------------
t0=$(date +%s%N)
bash scripts/setup.sh
[[ -x $PY ]] || die "setup did not create .venv"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
mkdir -p "$DATA" "$CORPUS" "$LOGDIR"

exec 9>"$DATA/.run-sh.lock"
flock -n 9 || die "another scripts/run.sh is using $DATA (stop it, or set BANZAI_DATA_DIR)"

# -- 2. corpus --------------------------------------------------------------------------
IFS=, read -r -a spk_list <<<"$SPEAKERS"
if command -v espeak-ng >/dev/null 2>&1; then
  say "corpus: ${#spk_list[@]} speaker(s) x $UTTERANCES utterances in ${CORPUS#"$ROOT"/} (reused when up to date)"
  "$PY" scripts/make_corpus.py --speakers "$SPEAKERS" --utterances "$UTTERANCES" \
    --out "$CORPUS" >/dev/null
else
  for s in "${spk_list[@]}"; do
    [[ -f $CORPUS/cmu_us_${s}_arctic-0.90-release.zip ]] ||
      die "espeak-ng is missing and $CORPUS has no zip for $s (run as root, or apt-get install espeak-ng)"
  done
  say "corpus: espeak-ng not installed; using the existing zips in $CORPUS"
fi

# -- 3. processes, stopped on any exit --------------------------------------------------
PEER_PID="" SERVE_PID=""
stop() {
  local pid
  for pid in $PEER_PID $SERVE_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $PEER_PID $SERVE_PID; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  PEER_PID="" SERVE_PID=""
}
trap 'stop' EXIT
trap 'echo >&2; say "stopping"; exit 130' INT TERM

# start_bg VAR LOG PATTERN CMD... : start CMD in the background, wait until LOG has a line
# matching PATTERN (extended regex with one group), set VAR to that group. Returns 1 if the
# process exits first (e.g. port in use), dies on timeout.
start_bg() {
  local var=$1 log=$2 pat=$3 pid deadline line
  shift 3
  : >"$log"
  "$@" >"$log" 2>&1 &
  pid=$!
  deadline=$(( $(date +%s) + START_TIMEOUT_S ))
  while (( $(date +%s) < deadline )); do
    line=$(grep -m1 -oE "$pat" "$log" || true)
    if [[ -n $line ]]; then
      [[ $line =~ $pat ]]
      printf -v "$var" '%s' "${BASH_REMATCH[1]}"
      LAST_PID=$pid
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null || true
  die "$1 did not start within ${START_TIMEOUT_S} s; see $log"
}

serve() {
  start_bg SERVE_URL "$SERVE_LOG" '^(http://127\.0\.0\.1:[0-9]+/)' \
    "$PY" scripts/serve_dir.py "$CORPUS" --port "$1"
}
if ! serve "$PORT"; then
  grep -q "Address already in use" "$SERVE_LOG" || { cat "$SERVE_LOG" >&2; die "file server failed"; }
  say "port $PORT is busy: serving the corpus on a free port instead"
  serve 0 || { cat "$SERVE_LOG" >&2; die "file server failed"; }
fi
SERVE_PID=$LAST_PID
say "corpus served at $SERVE_URL"

peer() {
  start_bg PEER_URL "$PEER_LOG" '^web UI: (http://[^ ]+[^/ ])/?$' \
    "$ROOT/.venv/bin/banzai-peer" --data-dir "$DATA" --http "$1" --store embedded \
    --no-mdns --mesh-name banzai-demo --fetch-allow 127.0.0.1/32 ${DEMO_PEER_ARGS:-}
}
if ! peer "$HTTP"; then
  grep -q "Address already in use" "$PEER_LOG" || { cat "$PEER_LOG" >&2; die "peer failed"; }
  say "$HTTP is busy: starting the peer on a free port instead"
  peer "${HTTP%:*}:0" || { cat "$PEER_LOG" >&2; die "peer failed"; }
fi
PEER_PID=$LAST_PID

# healthy = the API answers /api/health (bounded wait)
"$PY" - "$PEER_URL" "$START_TIMEOUT_S" <<'EOF' || die "peer not healthy; see $PEER_LOG"
import json, sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url + "/api/health", timeout=2) as r:
            if json.load(r).get("ok"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
EOF
say "peer up at $PEER_URL (data ${DATA#"$ROOT"/}, log ${PEER_LOG#"$ROOT"/})"

# -- 4. submit ----------------------------------------------------------------------------
SUBMIT=$PIPELINE
if [[ $SERVE_URL != "http://127.0.0.1:8765/" ]]; then
  SUBMIT=$LOGDIR/demo-pipeline.${PIPELINE##*.}
  sed "s#http://127\.0\.0\.1:8765/#$SERVE_URL#g" "$PIPELINE" >"$SUBMIT"
fi
t1=$(date +%s%N)
rc=0
"$ROOT/.venv/bin/banzai" --peer "$PEER_URL" submit "$SUBMIT" --wait >"$LOGDIR/demo-submit.out" || rc=$?
t2=$(date +%s%N)

# Summary from the API (the newest job: this script holds the data dir's lock).
"$PY" - "$PEER_URL" <<'EOF' || true
import json, sys, urllib.request
base = sys.argv[1]
def get(path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return r.read()
job = json.loads(get("/api/jobs"))["jobs"][0]["id"]
v = json.loads(get(f"/api/jobs/{job}"))
print(f"\njob {job}: {v['state']}" + (f" in {v['duration_s']:.1f} s" if v["duration_s"] else ""))
for t in v["tasks"]:
    if t["output"]:
        note = " (cached)" if t["cached"] else ""
        print(f"  {t['name']:<14} {t['output']}{note}\n  {'':<14} {base}/ipfs/{t['output']}/")
    elif t["error"]:
        print(f"  {t['name']:<14} {t['state']}: {t['error']}")
last = v["tasks"][-1]
if last["state"] == "done" and last["call"] in ("LEARN", "container"):
    for name in ("summary.txt", "report.md"):  # LEARN's; examples/mixed-kinds.yaml's summary
        try:
            print("\n" + get(f"/ipfs/{last['output']}/{name}").decode().rstrip())
        except OSError:
            pass
EOF
printf '\nweb UI: %s/\n' "$PEER_URL"
LOGIN=$(grep -m1 -oE '^login: +[^ ]+' "$PEER_LOG" | awk '{print $2}' || true)
[[ -n $LOGIN ]] && printf 'login:  %s   (opens the UI logged in)\n' "$LOGIN"
secs() { printf '%d.%d' $(( $1 / 1000000000 )) $(( $1 / 100000000 % 10 )); }
say "set-up and start $(secs $(( t1 - t0 ))) s, pipeline $(secs $(( t2 - t1 ))) s"

if (( once )); then
  exit "$rc"
fi
say "the peer keeps running; Ctrl-C stops it and the file server"
wait "$PEER_PID" || true
PEER_PID=""
die "the peer exited; see $PEER_LOG"
