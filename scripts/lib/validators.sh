# shellcheck shell=bash
# Helpers to install the external validators the tests run: the official
# AsyncAPI parser (@asyncapi/parser, from npm), used by
# scripts/validate-asyncapi.cjs to check the AsyncAPI 3.0 document, and the
# link checker of the docs (remark-cli with remark-validate-links, from npm),
# used by scripts/check-links.sh.
# Sourced by scripts/test.sh and scripts/check-links.sh, after
# scripts/lib/broker.sh (which defines `log` and CACHE_DIR).
#
# Both are installed once with npm and cached outside the clone, in
# $WEBHOOK_CONNECTOR_CACHE (default ~/.cache/webhook-connector), next to Tansu.

ASYNCAPI_PARSER_VERSION=3.6.6
ASYNCAPI_PARSER_DIR="$CACHE_DIR/asyncapi-parser-$ASYNCAPI_PARSER_VERSION"

# Installs @asyncapi/parser into $ASYNCAPI_PARSER_DIR unless it is there
# already (then prints nothing), and exports ASYNCAPI_PARSER_DIR. Fails naming
# what is missing when Node.js or npm is absent, or when the install fails.
ensure_asyncapi_parser() {
  export ASYNCAPI_PARSER_DIR
  if ! command -v node >/dev/null; then
    echo "error: node (Node.js 20) is missing; the AsyncAPI document is validated with it" >&2
    echo "  install it with: sudo apt-get install -y nodejs npm" >&2
    return 1
  fi
  if [ -f "$ASYNCAPI_PARSER_DIR/node_modules/@asyncapi/parser/package.json" ]; then
    return 0
  fi
  if ! command -v npm >/dev/null; then
    echo "error: npm is missing; it installs the AsyncAPI parser (@asyncapi/parser)" >&2
    echo "  install it with: sudo apt-get install -y nodejs npm" >&2
    return 1
  fi
  mkdir -p "$CACHE_DIR"
  (
    # One install at a time, even when two scripts start together. Its own lock,
    # so that it does not wait behind a Tansu build in another clone.
    flock 9
    if [ -f "$ASYNCAPI_PARSER_DIR/node_modules/@asyncapi/parser/package.json" ]; then exit 0; fi
    log "Installing the AsyncAPI parser $ASYNCAPI_PARSER_VERSION into $CACHE_DIR (once; about 20 s)"
    staging="$ASYNCAPI_PARSER_DIR.partial"
    rm -rf "$staging"
    mkdir -p "$staging"
    # A package.json of its own keeps npm from installing into a parent project.
    printf '{ "name": "asyncapi-parser-cache", "private": true }\n' >"$staging/package.json"
    # --ignore-scripts: the parser needs no install script; it skips a telemetry
    # postinstall (@scarf/scarf) of one of its dependencies.
    npm install --prefix "$staging" --no-audit --no-fund --omit=dev --ignore-scripts \
      --save-exact --no-update-notifier --loglevel=error \
      "@asyncapi/parser@$ASYNCAPI_PARSER_VERSION" >&2 || { rm -rf "$staging"; exit 1; }
    # Check that it loads before putting it in place.
    node -e 'require(require("path").join(process.argv[1], "node_modules/@asyncapi/parser"))' \
      "$staging" >&2 || { rm -rf "$staging"; exit 1; }
    rm -rf "$ASYNCAPI_PARSER_DIR"
    mv "$staging" "$ASYNCAPI_PARSER_DIR"
  ) 9>"$CACHE_DIR/asyncapi-parser.lock"
  [ -f "$ASYNCAPI_PARSER_DIR/node_modules/@asyncapi/parser/package.json" ] || {
    echo "error: installing the AsyncAPI parser (npm install @asyncapi/parser@$ASYNCAPI_PARSER_VERSION) failed" >&2
    echo "  see npm's messages above; npm must reach its registry, $(npm config get registry 2>/dev/null)" >&2
    return 1
  }
}

# The link checker of the docs: remark-cli with remark-validate-links (from npm),
# run by scripts/check-links.sh over README.md, docs/ and bench/HISTORY.md. It
# checks relative links and their headings only, offline; it never fetches an
# external link. Installed once, like the parser, into its own cache directory.
LINK_CHECKER_REMARK_VERSION=12.0.1
LINK_CHECKER_VALIDATE_LINKS_VERSION=13.1.0
LINK_CHECKER_DIR="$CACHE_DIR/link-checker-remark-$LINK_CHECKER_REMARK_VERSION-validate-links-$LINK_CHECKER_VALIDATE_LINKS_VERSION"

# Installs remark-cli and remark-validate-links into $LINK_CHECKER_DIR unless
# they are there already (then prints nothing), and exports LINK_CHECKER_DIR.
# Fails naming what is missing when Node.js or npm is absent, or when the
# install fails.
ensure_link_checker() {
  export LINK_CHECKER_DIR
  local ready="$LINK_CHECKER_DIR/node_modules/remark-validate-links/package.json"
  if ! command -v node >/dev/null; then
    echo "error: node (Node.js 20) is missing; the links of the docs are checked with it" >&2
    echo "  install it with: sudo apt-get install -y nodejs npm" >&2
    return 1
  fi
  if [ -f "$ready" ] && [ -f "$LINK_CHECKER_DIR/node_modules/remark-cli/package.json" ]; then
    return 0
  fi
  if ! command -v npm >/dev/null; then
    echo "error: npm is missing; it installs the link checker (remark-cli, remark-validate-links)" >&2
    echo "  install it with: sudo apt-get install -y nodejs npm" >&2
    return 1
  fi
  mkdir -p "$CACHE_DIR"
  (
    # One install at a time, even when two scripts start together.
    flock 9
    if [ -f "$ready" ] && [ -f "$LINK_CHECKER_DIR/node_modules/remark-cli/package.json" ]; then exit 0; fi
    log "Installing the link checker (remark-cli $LINK_CHECKER_REMARK_VERSION, remark-validate-links $LINK_CHECKER_VALIDATE_LINKS_VERSION) into $CACHE_DIR (once; about 10 s)"
    staging="$LINK_CHECKER_DIR.partial"
    rm -rf "$staging"
    mkdir -p "$staging"
    # A package.json of its own keeps npm from installing into a parent project.
    printf '{ "name": "link-checker-cache", "private": true }\n' >"$staging/package.json"
    npm install --prefix "$staging" --no-audit --no-fund --omit=dev --ignore-scripts \
      --save-exact --no-update-notifier --loglevel=error \
      "remark-cli@$LINK_CHECKER_REMARK_VERSION" \
      "remark-validate-links@$LINK_CHECKER_VALIDATE_LINKS_VERSION" >&2 || { rm -rf "$staging"; exit 1; }
    # Check that it runs before putting it in place.
    "$staging/node_modules/.bin/remark" --version >/dev/null || { rm -rf "$staging"; exit 1; }
    rm -rf "$LINK_CHECKER_DIR"
    mv "$staging" "$LINK_CHECKER_DIR"
  ) 9>"$CACHE_DIR/link-checker.lock"
  [ -f "$ready" ] || {
    echo "error: installing the link checker (npm install remark-cli@$LINK_CHECKER_REMARK_VERSION remark-validate-links@$LINK_CHECKER_VALIDATE_LINKS_VERSION) failed" >&2
    echo "  see npm's messages above; npm must reach its registry, $(npm config get registry 2>/dev/null)" >&2
    return 1
  }
}
