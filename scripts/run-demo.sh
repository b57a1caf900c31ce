#!/usr/bin/env bash
# Builds Varan and runs it in the foreground on its embedded defaults, in
# ./varan-demo (listeners on 127.0.0.1, SMTP 20025/20587/20465, IMAP 20143/20993, POP3 20110/20995).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p varan-shards
DIR=${VARAN_DEMO_DIR:-$PWD/varan-demo}
if [ ! -f "$DIR/varan.toml" ]; then
  target/release/varan quickstart "$DIR" --domain example.test --port-base 20000 --listen 127.0.0.1
  target/release/varan user add alice@example.test --password alice --config "$DIR/varan.toml"
fi
exec target/release/varan --config "$DIR/varan.toml"
