#!/usr/bin/env bash
# Rebuilds a plan's configuration bundle from its source directory, with fixed
# author, committer and dates so that the commit pinned in the plan is the same
# on every machine.
#
#   scripts/make-config-bundle.sh SOURCE_DIR BUNDLE TAG MESSAGE
#
#   scripts/make-config-bundle.sh plans/demo/config-src plans/demo/config.bundle v1.2.0 "app config 1.2.0"
#     -> b5c293c02469be4d515ce087251fae347dc7f2cf (pinned in plans/demo.toml)
#   scripts/make-config-bundle.sh plans/postgres/config-src plans/postgres/config.bundle v3.1.0 "postgres config 3.1.0"
#     -> fdeb2c0009763f4722ecc7adda7054ff8587da9b (pinned in plans/postgres.toml)
set -euo pipefail
source_dir=$(cd "$1" && pwd)
bundle=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
tag=$3
message=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$source_dir/." "$work/"
cd "$work"
export GIT_AUTHOR_NAME="Phoenix Demo" GIT_AUTHOR_EMAIL="demo@phoenix.invalid"
export GIT_COMMITTER_NAME="Phoenix Demo" GIT_COMMITTER_EMAIL="demo@phoenix.invalid"
export GIT_AUTHOR_DATE="2026-11-01T12:00:00Z" GIT_COMMITTER_DATE="2026-11-01T12:00:00Z"
git init -q -b main .
git add -A
git commit -q -m "$message"
git tag -a "$tag" -m "release ${tag#v}"
git rev-parse HEAD
git bundle create "$bundle" --all 2>/dev/null
