#!/usr/bin/env bash
# Rebuilds plans/demo/config.bundle from plans/demo/config-src, with fixed
# authors and dates so that the commit (pinned in plans/demo.toml) is the same
# on every machine: b5c293c02469be4d515ce087251fae347dc7f2cf for tag v1.2.0.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$here/config-src/." "$work/"
cd "$work"
export GIT_AUTHOR_NAME="Phoenix Demo" GIT_AUTHOR_EMAIL="demo@phoenix.invalid"
export GIT_COMMITTER_NAME="Phoenix Demo" GIT_COMMITTER_EMAIL="demo@phoenix.invalid"
export GIT_AUTHOR_DATE="2026-11-01T12:00:00Z" GIT_COMMITTER_DATE="2026-11-01T12:00:00Z"
git init -q -b main .
git add -A
git commit -q -m "app config 1.2.0"
git tag -a v1.2.0 -m "release 1.2.0"
git rev-parse HEAD
git bundle create "$here/config.bundle" --all
