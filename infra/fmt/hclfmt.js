// Formatting check for .tf files: each file must be a fixed point of hclwrite.Format, the HCL
// formatter that `terraform fmt` is built on (run here through @cdktf/hcl-tools, a WebAssembly
// build of it). terraform fmt's own extra rewrites (legacy quoted type names, interpolation-only
// strings "${x}") are not applied; this code uses neither.
// Usage: node hclfmt.js FILE...   (NODE_PATH must reach @cdktf/hcl-tools)
"use strict";
const fs = require("fs");
const { format } = require("@cdktf/hcl-tools");

function firstDiff(a, b) {
  const x = a.split("\n");
  const y = b.split("\n");
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (x[i] !== y[i]) {
      return `line ${i + 1}:\n    have: ${JSON.stringify(x[i])}\n    want: ${JSON.stringify(y[i])}`;
    }
  }
  return "";
}

(async () => {
  const bad = [];
  for (const file of process.argv.slice(2)) {
    const src = fs.readFileSync(file, "utf8");
    const out = await format(src);
    if (out !== src) {
      bad.push(file);
      console.log(`not formatted: ${file} ${firstDiff(src, out)}`);
    }
  }
  console.log(`${process.argv.length - 2 - bad.length} formatted, ${bad.length} not formatted`);
  process.exit(bad.length ? 1 : 0);
})().catch((err) => {
  console.error(err);
  process.exit(2);
});
