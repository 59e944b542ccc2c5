#!/bin/bash
# Event-loop wake-ups and CPU of one idle banzai-peer on loopback (issue 12's idle CPU).
#   bash scripts/bench_idle_wakeups.sh [CHECKOUT] [SECONDS]
# Starts one peer from CHECKOUT (default: this one) with bench_mesh's flags, waits 10 s, then
# counts its main thread's epoll_wait calls under strace for SECONDS (default 30): those with a
# timeout are wake-ups of the event loop; the CPU ticks (10 ms) are read from /proc.
set -euo pipefail
code=$(cd "${1:-$(dirname "$0")/..}" && pwd); secs=${2:-30}
py=${PYTHON:-$code/.venv/bin/python}; [ -x "$py" ] || py=/work/main/.venv/bin/python
d=$(mktemp -d); name=idle$RANDOM
trap 'kill "${P:-}" 2>/dev/null || true; sleep 1; rm -rf "$d"' EXIT
head -c 32 /dev/urandom | base64 > "$d/secret"; chmod 600 "$d/secret"
(cd "$code" && PYTHONPATH=$code exec "$py" -m peer.main --data-dir "$d/data" --http 127.0.0.1:0 \
  --gossip 127.0.0.1:0 --mdns-interface 127.0.0.1 --mesh-name "$name" --slots 1 \
  --log-level warning --secret-file "$d/secret" > "$d/log" 2>&1) &
P=$!
sleep 10
a=$(awk '{print $14+$15}' "/proc/$P/stat")
timeout "$secs" strace -e trace=epoll_wait -p "$P" -o "$d/st.txt" 2>/dev/null || true
b=$(awk '{print $14+$15}' "/proc/$P/stat")
all=$(grep -c epoll_wait "$d/st.txt" || true); zero=$(grep -c ', 0)' "$d/st.txt" || true)
echo "$code: wake-ups/s $(( (all - zero) / secs )), epoll_wait/s $(( all / secs )), CPU ticks in ${secs} s $((b - a))"
