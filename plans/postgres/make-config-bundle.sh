#!/usr/bin/env bash
# Rebuilds plans/postgres/config.bundle from plans/postgres/config-src, with fixed
# authors and dates so that the commit (pinned in plans/postgres.toml) is the same
# on every machine: 6a6e481d7686d16896d28df164ed20338b7cc7e9 for tag v3.1.0.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$here/config-src/." "$work/"
cd "$work"
export GIT_AUTHOR_NAME="Phoenix E2E" GIT_AUTHOR_EMAIL="e2e@phoenix.invalid"
export GIT_COMMITTER_NAME="Phoenix E2E" GIT_COMMITTER_EMAIL="e2e@phoenix.invalid"
export GIT_AUTHOR_DATE="2026-11-01T12:00:00Z" GIT_COMMITTER_DATE="2026-11-01T12:00:00Z"
git init -q -b main .
git add -A
git commit -q -m "postgres config 3.1.0"
git tag -a v3.1.0 -m "release 3.1.0"
git rev-parse HEAD
git bundle create "$here/config.bundle" --all
