#!/usr/bin/env bash
# The test suite, as CI runs it. Installs what the tests need when it is
# missing: moto's S3 server (PyPI) for the s3 store tests, and git.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v git >/dev/null; then
  apt-get update -qq && apt-get install -y -qq git
fi
if ! command -v moto_server >/dev/null; then
  python3 -m pip install --quiet 'moto[server]'
fi
cargo test "$@"
