// Validates AsyncAPI documents with the official parser, @asyncapi/parser,
// and prints each diagnostic. Exits 1 if any document has an error, or a
// warning when --strict is given.
import { readFile } from 'node:fs/promises';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const args = process.argv.slice(2);
const strict = args[0] === '--strict';
const files = strict ? args.slice(1) : args;
const parser = new Parser();
let failed = false;
for (const file of files) {
  const { document, diagnostics } = await parser.parse(await readFile(file, 'utf8'), { source: file });
  for (const d of diagnostics) {
    const severity = DiagnosticSeverity[d.severity] ?? d.severity;
    const line = d.range?.start ? d.range.start.line + 1 : 0;
    console.log(`${file}:${line}: ${severity}: ${d.code}: ${d.message} (at ${d.path.join('/')})`);
    if (d.severity === DiagnosticSeverity.Error || (strict && d.severity === DiagnosticSeverity.Warning)) {
      failed = true;
    }
  }
  if (!document) {
    console.log(`${file}: not parsed`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
