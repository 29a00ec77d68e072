#!/usr/bin/env bash
# The test suite, as CI runs it. Installs what the tests need when it is
# missing: moto's S3 server (PyPI) for the s3 store tests, git, openssl
# (certificates and a TLS server for the http step's `ca_cert`), and xz and
# bzip2 (archives made by the usual tools for the restore tests).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v git >/dev/null || missing+=(git)
command -v openssl >/dev/null || missing+=(openssl)
command -v xz >/dev/null || missing+=(xz-utils)
command -v bzip2 >/dev/null || missing+=(bzip2)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
if ! command -v moto_server >/dev/null; then
  python3 -m pip install --quiet 'moto[server]'
fi
cargo test "$@"
