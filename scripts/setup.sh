#!/usr/bin/env bash
# Install what Banzai needs on a fresh Debian machine, idempotently.
#   scripts/setup.sh          runtime: a virtual environment in .venv with the package
#   scripts/setup.sh --test   also: test tools, espeak-ng/sox, Chromium, Kubo
#   scripts/setup.sh --bench  --test and the benchmarks' extra (Dask, py-spy: scripts/bench_*)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0 want_bench=0
[[ "${1:-}" == "--test" ]] && want_test=1
[[ "${1:-}" == "--bench" ]] && want_test=1 want_bench=1

# bubblewrap: shell tasks run confined (peer/jobs/confine.py: --allow-shell)
apt_pkgs=(espeak-ng sox bubblewrap)
# systemd: systemd-analyze checks contrib/banzai-peer.service; util-linux (setpriv, unshare)
# and passwd (useradd) run a peer as a second, unprivileged local user (security tests)
(( want_test )) && apt_pkgs+=(chromium iproute2 systemd util-linux passwd)
# container task kinds: podman with runc (crun cannot set rlimits here), static busybox for
# the test image (tests/integration/test_kinds.py)
(( want_test )) && apt_pkgs+=(podman runc busybox-static)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if (( ${#missing[@]} )); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (need root to install): ${missing[*]}" >&2
  fi
fi

if (( want_test )) && command -v podman >/dev/null 2>&1; then
  # podman's defaults fail on this kind of machine (../shared/MACHINE.md): runc, cgroupfs and
  # no default ulimits; then the tests' image, built locally from busybox when missing
  conf=/etc/containers/containers.conf.d/banzai.conf
  if [[ $(id -u) -eq 0 && ! -f $conf ]]; then
    mkdir -p "$(dirname "$conf")"
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' > "$conf"
  fi
  bash scripts/build-test-image.sh podman || echo "setup: the container test image could not be built; container tests will skip" >&2
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.banzai-installed-$want_test$want_bench
if [[ ! -f $stamp || pyproject.toml -nt $stamp || constraints.txt -nt $stamp ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  extra=""
  (( want_test )) && extra="[test]"
  (( want_bench )) && extra="[test,bench]"
  echo "setup: installing Python packages (pinned by constraints.txt)"
  .venv/bin/python -m pip install -q -c constraints.txt -e ".${extra}"
  # numba compiles librosa's cache=True functions at their first import (~20 s of CPU) and
  # caches them next to librosa: once here, not in the first worker that runs EXTRACT_MFCC
  echo "setup: compiling librosa's numba functions once"
  .venv/bin/python -c "from tasks.audio import warm_mfcc; warm_mfcc()" \
    || echo "setup: numba's cache not warmed; the first EXTRACT_MFCC compiles it" >&2
  touch "$stamp"
fi

if (( want_test )) && command -v go >/dev/null 2>&1 && [[ -f scripts/install-kubo.sh ]]; then
  bash scripts/install-kubo.sh >/dev/null || echo "setup: Kubo build failed; Kubo tests will skip" >&2
fi
if (( want_test )) && command -v go >/dev/null 2>&1; then
  # the gateway conformance suite, from ../shared/vendor (tests/integration/test_conformance.py)
  bash scripts/install-conformance.sh >/dev/null || echo "setup: gateway-conformance build failed" >&2
fi

# Byte-compile the project once: every peer process (the suite starts ~100) would otherwise
# compile its sources again at each start when PYTHONDONTWRITEBYTECODE is set.
.venv/bin/python -m compileall -q -j 0 peer tasks tests scripts >/dev/null
