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
#   - then formatting, clippy (-D warnings) and every test of the workspace.
#
# CAMPUSFOOD_TEST_FEATURES overrides the features tested (comma-separated).
set -euo pipefail
cd "$(dirname "$0")/.."

features="${CAMPUSFOOD_TEST_FEATURES:-}"

# The broker features (and postgres) are on by default; only an explicit
# feature list without them spares starting their broker.
need_broker() { [[ -z "$features" || ",$features," == *",$1,"* ]]; }
# rabbitmq-spare is a second RabbitMQ node that the broker-restart test restarts.
if need_broker rabbitmq; then scripts/brokers.sh up rabbitmq && scripts/brokers.sh up rabbitmq-spare; fi
if need_broker kafka; then scripts/brokers.sh up kafka; fi
if need_broker postgres; then scripts/brokers.sh up postgres; fi
export CAMPUSFOOD_TEST_DATABASE_URL="${CAMPUSFOOD_TEST_DATABASE_URL:-postgres://campusfood:campusfood@127.0.0.1:${POSTGRES_PORT:-5432}/campusfood}"

feature_args=()
if [[ -n "$features" ]]; then
  feature_args=(--no-default-features --features "$features")
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets "${feature_args[@]}" -- -D warnings
echo "== cargo test"
cargo test --workspace "${feature_args[@]}"
