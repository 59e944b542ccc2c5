#!/usr/bin/env bash
# Throw-away test network for trying Banzai peers by hand (root; iproute2).
#
#   sudo bash scripts/netns.sh up [N]      bridge namespace + N host namespaces (default 3)
#   sudo bash scripts/netns.sh peer I ...  run banzai-peer in host I (extra flags appended)
#   sudo bash scripts/netns.sh exec I CMD  run CMD in host I (e.g. curl http://10.213.0.10:PORT/api/peers)
#   sudo bash scripts/netns.sh cut I | heal I   partition host I (its bridge port down/up)
#   sudo bash scripts/netns.sh down        kill everything in the namespaces and delete them
#
# Same layout as tests/integration/netns.py: namespace bzh-br holds bridge br0; host I is
# namespace bzh-hI with eth0 = 10.213.0.(10+I)/24, veth peer of bzh-br:vI. Nothing is added
# to the root namespace: the subnet exists only inside these namespaces, so no traffic can
# reach the machine's real interfaces. mDNS of the peers is bound to eth0's address.
set -euo pipefail

TAG=${BANZAI_NETNS_TAG:-bzh}
BR="$TAG-br"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
addr() { echo "10.213.0.$((10 + $1))"; }

up() {
  local n=${1:-3}
  ip netns add "$BR"
  ip -n "$BR" link add name br0 type bridge
  ip -n "$BR" link set br0 type bridge mcast_snooping 0
  ip -n "$BR" link set br0 up
  ip -n "$BR" link set lo up
  for ((i = 0; i < n; i++)); do
    local h="$TAG-h$i"
    ip netns add "$h"
    ip -n "$BR" link add name "v$i" type veth peer name eth0 netns "$h"
    ip -n "$BR" link set "v$i" master br0
    ip -n "$BR" link set "v$i" up
    ip -n "$h" link set lo up
    ip -n "$h" addr add "$(addr "$i")/24" dev eth0
    ip -n "$h" link set eth0 up
    echo "host $i: namespace $h, address $(addr "$i")"
  done
}

down() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$TAG-" || true); do
    for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" && echo "deleted $ns"
  done
}

peer() {
  local i=$1; shift
  local a; a=$(addr "$i")
  mkdir -p "/tmp/$TAG-data"
  PYTHONPATH="$ROOT" exec ip netns exec "$TAG-h$i" "$ROOT/.venv/bin/banzai-peer" \
    --data-dir "/tmp/$TAG-data/h$i" --http "$a:8700" --gossip "$a:0" --mdns-interface "$a" \
    --mesh-name "$TAG" "$@"
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  down) down ;;
  peer) shift; peer "$@" ;;
  exec) i=$2; shift 2; exec ip netns exec "$TAG-h$i" "$@" ;;
  cut) ip -n "$BR" link set "v$2" down ;;
  heal) ip -n "$BR" link set "v$2" up ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
