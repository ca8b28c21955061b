#!/usr/bin/env bash
# scripts/test.sh — the project's one test command (the README's, and what
# .ci/run calls). On a fresh machine it installs and starts what the tests
# need, and is a no-op for what is already there:
#   - the brokers the enabled broker features test against
#     (scripts/brokers.sh up …: RabbitMQ from Debian, plus a spare RabbitMQ
#     node for the broker-restart test; Kafka from Maven Central);
#   - PostgreSQL from Debian when the postgres feature is tested (role and
#     database campusfood), at CAMPUSFOOD_TEST_DATABASE_URL [postgres://
#     campusfood:campusfood@127.0.0.1:${POSTGRES_PORT:-5432}/campusfood];
#   - schemathesis (PyPI, pinned) in a venv, .venv-schemathesis, for
#     tests/openapi, which fuzzes each HTTP service against its
#     /openapi.json (python3-venv from Debian when missing); its path is
#     exported as CAMPUSFOOD_SCHEMATHESIS_VENV;
#   - the AsyncAPI CLI (npm @asyncapi/cli, pinned) in .asyncapi-cli, for
#     tests/asyncapi, which validates Part B's and Part C's AsyncAPI
#     documents (nodejs and npm from Debian when missing); its folder is
#     exported as CAMPUSFOOD_ASYNCAPI_CLI;
#   - wrk (Debian) for tests/perf, which runs `lab perf` as scripts/perf.sh
#     does;
#   - then formatting, clippy (-D warnings), the docs (-D warnings) and
#     every test of the workspace, doctests included.
#
# CAMPUSFOOD_TEST_FEATURES overrides the features tested (comma-separated).
set -euo pipefail
cd "$(dirname "$0")/.."

features="${CAMPUSFOOD_TEST_FEATURES:-}"

# The broker features (and postgres, http, memory) are on by default; only
# an explicit feature list without them spares starting their broker (or,
# for http and memory, installing schemathesis).
need_broker() { [[ -z "$features" || ",$features," == *",$1,"* ]]; }
# rabbitmq-spare is a second RabbitMQ node that the broker-restart test restarts.
if need_broker rabbitmq; then scripts/brokers.sh up rabbitmq && scripts/brokers.sh up rabbitmq-spare; fi
if need_broker kafka; then scripts/brokers.sh up kafka; fi
if need_broker postgres; then scripts/brokers.sh up postgres; fi
export CAMPUSFOOD_TEST_DATABASE_URL="${CAMPUSFOOD_TEST_DATABASE_URL:-postgres://campusfood:campusfood@127.0.0.1:${POSTGRES_PORT:-5432}/campusfood}"

# tests/openapi (features http and memory, on by default) runs schemathesis.
SCHEMATHESIS_VERSION=4.32.5
export CAMPUSFOOD_SCHEMATHESIS_VENV="${CAMPUSFOOD_SCHEMATHESIS_VENV:-$PWD/.venv-schemathesis}"
if need_broker http && need_broker memory; then
  venv=$CAMPUSFOOD_SCHEMATHESIS_VENV
  if [[ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != *" $SCHEMATHESIS_VERSION" ]]; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
      # Debian splits venv (with ensurepip) out of python3.
      root=(); [[ $EUID -eq 0 ]] || root=(sudo -n)
      echo "== installing python3-venv with apt-get"
      "${root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
      "${root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
        install -y -q --no-install-recommends python3 python3-venv >/dev/null
    fi
    echo "== schemathesis $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
fi

# tests/asyncapi (features rabbitmq and kafka, on by default) runs the
# AsyncAPI CLI. 4.x: 5.0 and later need Node 24, Debian ships 20.
ASYNCAPI_CLI_VERSION=4.1.1
export CAMPUSFOOD_ASYNCAPI_CLI="${CAMPUSFOOD_ASYNCAPI_CLI:-$PWD/.asyncapi-cli}"
if need_broker rabbitmq && need_broker kafka; then
  cli=$CAMPUSFOOD_ASYNCAPI_CLI
  installed=$(node -p 'require(process.argv[1]).version' \
    "$cli/node_modules/@asyncapi/cli/package.json" 2>/dev/null || true)
  if [[ "$installed" != "$ASYNCAPI_CLI_VERSION" ]]; then
    if ! command -v npm >/dev/null 2>&1; then
      root=(); [[ $EUID -eq 0 ]] || root=(sudo -n)
      echo "== installing nodejs and npm with apt-get"
      "${root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
      "${root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
        install -y -q --no-install-recommends nodejs npm >/dev/null
    fi
    echo "== @asyncapi/cli $ASYNCAPI_CLI_VERSION into $cli"
    npm install --prefix "$cli" --no-audit --no-fund --loglevel=error "@asyncapi/cli@$ASYNCAPI_CLI_VERSION"
  fi
fi

# tests/perf (features http, rabbitmq and kafka) runs `lab perf`, which
# loads the services with wrk (Debian's package), as scripts/perf.sh does.
if need_broker http && need_broker rabbitmq && need_broker kafka && ! command -v wrk >/dev/null 2>&1; then
  root=(); [[ $EUID -eq 0 ]] || root=(sudo -n)
  echo "== installing wrk with apt-get"
  "${root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  "${root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -q --no-install-recommends wrk >/dev/null
fi

feature_args=()
if [[ -n "$features" ]]; then
  feature_args=(--no-default-features --features "$features")
  # Kafka is two crates, not a feature; without `kafka` they and what
  # depends on them (the lab, Part C's example) are left out.
  if ! need_broker kafka; then
    for p in campusfood-kafka campusfood-streaming-kafka campusfood-lab \
             campusfood-example-streaming-kafka campusfood-example-lab \
             campusfood-example-embed; do
      feature_args+=(--exclude "$p")
    done
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets "${feature_args[@]}" -- -D warnings
# The docs build without a warning (broken intra-doc links and the like),
# with every feature, as docs.rs builds them.
echo "== cargo doc (-D warnings)"
doc_features=(--all-features)
[[ -n "$features" ]] && doc_features=("${feature_args[@]}")
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --workspace --no-deps "${doc_features[@]}"
# …and, with their default features, the two crates whose docs name
# feature-gated modules, as a user's `cargo doc -p <crate>` builds them.
# One at a time: built together, their features would be unified.
if [[ -z "$features" ]]; then
  for crate in campusfood-transport campusfood-services; do
    RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --no-deps -p "$crate"
  done
fi
echo "== cargo test"
cargo test --workspace "${feature_args[@]}"
# The OTLP exporter (feature `otel`, off by default) posts spans to an
# OTLP/HTTP endpoint.
echo "== cargo test (feature otel)"
cargo test -p campusfood-services --features otel --lib telemetry
# The publishable crates package, and the three librdkafka-free ones build
# from their packages alone. The Kafka two are only packaged (verifying them
# would build librdkafka once more), with the crates they depend on in the
# same call: cargo finds unpublished dependencies only among those.
echo "== cargo package"
# cargo verifies each package against its siblings through a local registry
# under target/package, unpacked into ~/.cargo/registry/src/-<hash of that
# path>/ and built into target/debug like any registry crate: never
# rebuilt once built, since a registry crate cannot change. Ours do,
# between two runs of this script (same path, same version), so the
# previous run's copies — sources and builds — are removed first.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/campusfood-*-[0-9]*
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
for dep_info in "$target_dir"/debug/deps/campusfood_*.d; do
  [[ -e "$dep_info" ]] && grep -q "/registry/src/-" "$dep_info" || continue
  hash=${dep_info%.d}; hash=${hash##*-}
  rm -rf "$target_dir"/debug/deps/*-"$hash".* "$target_dir"/debug/.fingerprint/*-"$hash"
done
cargo package --quiet --allow-dirty -p campusfood-core -p campusfood-transport -p campusfood-services
cargo package --quiet --allow-dirty --no-verify -p campusfood-core -p campusfood-transport \
  -p campusfood-services -p campusfood-kafka -p campusfood-streaming-kafka
