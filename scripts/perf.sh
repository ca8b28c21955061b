#!/usr/bin/env bash
# scripts/perf.sh — the six headline figures of README "Performance", as a
# user sees them: the shipped example binaries (release, default settings
# and logging, one process per service for Part B), loaded with wrk, each
# figure beside the original assignment's and beside this machine's limit.
#
#   scripts/perf.sh                  # all three parts (starts RabbitMQ and Kafka)
#   scripts/perf.sh A                # one part: A, B or C
#   scripts/perf.sh --limits         # first `cargo bench --bench limits` (about 4 min)
#   scripts/perf.sh -- --duration 5  # anything after -- goes to `lab perf` (see --help)
#
# Installs wrk (Debian) when missing, starts the brokers the parts need
# (scripts/brokers.sh up …; a no-op when they run), builds the examples,
# then runs `lab perf`. Measure on a quiet machine: the figures share two
# cores with whatever else runs. Exit 1 when a figure could not be measured.
set -euo pipefail
cd "$(dirname "$0")/.."

parts=(); limits=0; rest=()
while (($#)); do
  case $1 in
    --limits) limits=1 ;;
    --) shift; rest=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) parts+=("$1") ;;
  esac
  shift
done
wants() { ((${#parts[@]} == 0)) || [[ " ${parts[*]^^} " == *" $1 "* ]]; }

if ! command -v wrk >/dev/null; then
  root=(); [[ $EUID -eq 0 ]] || root=(sudo -n)
  echo "== installing wrk with apt-get"
  "${root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  "${root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -q --no-install-recommends wrk >/dev/null
fi
if wants B || ((limits)); then scripts/brokers.sh up rabbitmq; fi
if wants C || ((limits)); then scripts/brokers.sh up kafka; fi

cargo build --release --examples
if ((limits)); then cargo bench --bench limits; fi
exec target/release/examples/lab perf "${parts[@]}" "${rest[@]}"
