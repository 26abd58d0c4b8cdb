#!/usr/bin/env bash
# Checks the links of the manual, offline: every relative link of README.md,
# docs/*.md and bench/HISTORY.md must name a file that exists and, with a
# `#fragment`, a heading of that file. External (https) links are not followed.
# Uses remark-cli with remark-validate-links, installed once from npm into the
# cache outside the clone (scripts/lib/validators.sh, ensure_link_checker).
# Run by scripts/test.sh before `cargo test`; exits 1 on any broken link.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
source scripts/lib/validators.sh

ensure_link_checker
files=(README.md docs/*.md bench/HISTORY.md)
# --no-config/--no-ignore: no .remarkrc or ignore file changes what is checked;
# repository:false: no git remote is read and no link to github.com is taken
# for a link of this repository, so only relative links are checked, offline.
# --frail: a warning (a missing file or heading) fails the run.
if ! "$LINK_CHECKER_DIR/node_modules/.bin/remark" --no-config --no-ignore --no-stdout \
  --quiet --frail --no-color \
  --use "$LINK_CHECKER_DIR/node_modules/remark-validate-links/index.js=repository:false" \
  "${files[@]}"; then
  echo "error: broken links in the docs (above: file:line, and the missing file or heading)" >&2
  exit 1
fi
log "Links checked: ${files[*]}"
