#!/usr/bin/env node
// Validates an AsyncAPI document (YAML or JSON) with the official parser,
// @asyncapi/parser, installed by scripts/lib/validators.sh (ensure_asyncapi_parser).
// The tests run it on the AsyncAPI 3.0 document the connector generates.
//
// Usage: node scripts/validate-asyncapi.cjs <parser-dir> <document-file>
//   <parser-dir>: the npm install dir holding node_modules/@asyncapi/parser
//   (the tests get it from $WEBHOOK_CONNECTOR_ASYNCAPI_PARSER).
// Prints each diagnostic (severity, code, message, JSON path, line) to stderr
// and a one-line summary to stdout. Exit status: 0 when no diagnostic is an
// error, 1 when one is, 2 on a usage error (bad arguments, unreadable document,
// parser not found).
'use strict';

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const SEVERITIES = ['error', 'warning', 'info', 'hint'];

function usage(message) {
  process.stderr.write(`error: ${message}\n`);
  process.stderr.write('usage: node scripts/validate-asyncapi.cjs <parser-dir> <document-file>\n');
  process.exit(2);
}

// ['channels', 'a.b', 'x', 0] -> $.channels['a.b'].x[0]
function jsonPath(segments) {
  return (segments || []).reduce((out, segment) => {
    // Spectral gives array indexes as strings too.
    if (typeof segment === 'number' || /^[0-9]+$/.test(segment)) return `${out}[${segment}]`;
    if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(segment)) return `${out}.${segment}`;
    return `${out}[${JSON.stringify(String(segment))}]`;
  }, '$');
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 2) usage('expected 2 arguments');
  const [parserDir, documentFile] = args.map((arg) => path.resolve(arg));

  let Parser;
  try {
    // Resolve the package as a module inside <parser-dir> would.
    ({ Parser } = createRequire(path.join(parserDir, 'package.json'))('@asyncapi/parser'));
  } catch (err) {
    usage(`cannot load @asyncapi/parser from ${parserDir}: ${err.message}`);
  }
  let text;
  try {
    text = fs.readFileSync(documentFile, 'utf8');
  } catch (err) {
    usage(`cannot read ${documentFile}: ${err.message}`);
  }

  // `source` lets relative $refs resolve against the document's directory.
  const { diagnostics } = await new Parser().parse(text, { source: documentFile });
  const counts = [0, 0, 0, 0];
  for (const d of diagnostics) {
    const severity = SEVERITIES[d.severity] || `severity ${d.severity}`;
    counts[d.severity] = (counts[d.severity] || 0) + 1;
    const line = d.range ? `:${d.range.start.line + 1}` : '';
    process.stderr.write(
      `${documentFile}${line}: ${severity} [${d.code}] ${d.message} (at ${jsonPath(d.path)})\n`);
  }
  const errors = counts[0];
  const others = counts.slice(1).reduce((a, b) => a + b, 0);
  process.stdout.write(
    `${errors === 0 ? 'valid' : 'invalid'}: ${errors} errors, ${counts[1]} warnings` +
    `${others > counts[1] ? `, ${others - counts[1]} infos/hints` : ''}\n`);
  process.exit(errors === 0 ? 0 : 1);
}

main().catch((err) => {
  process.stderr.write(`error: ${err && err.stack ? err.stack : err}\n`);
  process.exit(2);
});
