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

# The link checker checks relative links and their headings only, offline; it
# never fetches an external link.
LINK_CHECKER_REMARK_VERSION=12.0.1
LINK_CHECKER_VALIDATE_LINKS_VERSION=13.1.0
LINK_CHECKER_DIR="$CACHE_DIR/link-checker-remark-$LINK_CHECKER_REMARK_VERSION-validate-links-$LINK_CHECKER_VALIDATE_LINKS_VERSION"

# npm_tool DIR WHAT CHECK PACKAGE...: installs the npm PACKAGEs (name@version)
# into DIR unless DIR/CHECK exists already (then prints nothing). WHAT names the
# tool in messages. The install goes to DIR.partial and is moved in place only
# once it is complete, one install at a time (`install_once` of
# scripts/lib/broker.sh, with a lock of its own per tool, so it never waits
# behind a Tansu build in another clone). Fails naming what is
# missing when Node.js or npm is absent, or when the install fails.
npm_tool() {
  local dir="$1" what="$2" check="$3"
  shift 3
  if ! command -v node >/dev/null; then
    echo "error: node (Node.js 20) is missing; it runs $what" >&2
    echo "  install it with: sudo apt-get install -y nodejs npm" >&2
    return 1
  fi
  if [ -e "$dir/$check" ]; then
    return 0
  fi
  if ! command -v npm >/dev/null; then
    echo "error: npm is missing; it installs $what ($*)" >&2
    echo "  install it with: sudo apt-get install -y nodejs npm" >&2
    return 1
  fi
  install_once "$dir" "$check" "$dir.lock" "Installing $what ($*) into $CACHE_DIR (once)" \
    npm_install "$@" || {
    echo "error: installing $what (npm install $*) failed" >&2
    echo "  see npm's messages above; npm must reach its registry, $(npm config get registry 2>/dev/null)" >&2
    return 1
  }
}

# npm_install STAGING PACKAGE...: installs the npm PACKAGEs into STAGING.
npm_install() {
  local staging="$1"
  shift
  # A package.json of its own keeps npm from installing into a parent project.
  printf '{ "name": "webhook-connector-tool-cache", "private": true }\n' >"$staging/package.json"
  # --ignore-scripts: no tool here needs an install script (it also skips a
  # telemetry postinstall, @scarf/scarf, of one of the parser's dependencies).
  npm install --prefix "$staging" --no-audit --no-fund --omit=dev --ignore-scripts \
    --save-exact --no-update-notifier --loglevel=error "$@" >&2
}

# Installs @asyncapi/parser into $ASYNCAPI_PARSER_DIR unless it is there
# already, checks that it loads, and exports ASYNCAPI_PARSER_DIR.
ensure_asyncapi_parser() {
  export ASYNCAPI_PARSER_DIR
  npm_tool "$ASYNCAPI_PARSER_DIR" "the AsyncAPI parser" \
    node_modules/@asyncapi/parser/package.json \
    "@asyncapi/parser@$ASYNCAPI_PARSER_VERSION" || return 1
  node -e 'require(require("path").join(process.argv[1], "node_modules/@asyncapi/parser"))' \
    "$ASYNCAPI_PARSER_DIR" >&2 ||
    { echo "error: the AsyncAPI parser in $ASYNCAPI_PARSER_DIR does not load; delete it to reinstall" >&2; return 1; }
}

# Installs remark-cli and remark-validate-links into $LINK_CHECKER_DIR unless
# they are there already, checks that remark runs, and exports LINK_CHECKER_DIR.
ensure_link_checker() {
  export LINK_CHECKER_DIR
  npm_tool "$LINK_CHECKER_DIR" "the link checker of the docs" \
    node_modules/remark-validate-links/package.json \
    "remark-cli@$LINK_CHECKER_REMARK_VERSION" \
    "remark-validate-links@$LINK_CHECKER_VALIDATE_LINKS_VERSION" || return 1
  "$LINK_CHECKER_DIR/node_modules/.bin/remark" --version >/dev/null ||
    { echo "error: remark in $LINK_CHECKER_DIR does not run; delete it to reinstall" >&2; return 1; }
}
