# shellcheck shell=bash
# Helpers to install the external validators the tests run on generated
# documents: the official AsyncAPI parser (@asyncapi/parser, from npm), used by
# scripts/validate-asyncapi.cjs to check the AsyncAPI 3.0 document.
# Sourced by scripts/test.sh, after scripts/lib/broker.sh (which defines `log`
# and CACHE_DIR).
#
# The parser is installed once with npm and cached outside the clone, in
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
