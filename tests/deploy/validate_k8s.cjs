// validate_k8s.cjs - validates Kubernetes manifests against the API
// schemas of the npm package kubernetes-models (4.5.1).
//
// usage: node tests/deploy/validate_k8s.cjs NODE_MODULES FILE...
//        node tests/deploy/validate_k8s.cjs NODE_MODULES --expect-invalid FILE...
//
// Each FILE is multi-document YAML (the output of `kubectl kustomize`).
// Every document must name an apiVersion and kind that kubernetes-models
// knows and pass its schema (required fields, types, enums, formats).
// Prints one line per document; exits 0 when all are valid, 1 otherwise.
// With --expect-invalid the sense is reversed: every document must be
// rejected (the test that this validator rejects broken manifests).
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const args = process.argv.slice(2);
if (args.length < 2) {
  console.error("usage: validate_k8s.cjs NODE_MODULES [--expect-invalid] FILE...");
  process.exit(2);
}
const nodeModules = path.resolve(args.shift());
const expectInvalid = args[0] === "--expect-invalid";
if (expectInvalid) args.shift();
const req = createRequire(path.join(nodeModules, "resolve-from-here.js"));
const YAML = req("yaml");

// apiVersion "apps/v1" -> module "kubernetes-models/apps/v1/Deployment";
// the core group ("v1") -> "kubernetes-models/v1/Service".
function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string") {
    throw new Error("no apiVersion or kind");
  }
  const mod = req(`kubernetes-models/${apiVersion}/${kind}`);
  if (typeof mod[kind] !== "function") throw new Error(`kubernetes-models has no ${apiVersion} ${kind}`);
  return mod[kind];
}

let bad = 0;
let count = 0;
for (const file of args) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      console.log(`INVALID ${file}: YAML: ${doc.errors[0].message}`);
      bad++;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    count++;
    const what = `${file}: ${obj.apiVersion} ${obj.kind} ${obj.metadata && obj.metadata.name}`;
    let problem = null;
    try {
      const Model = modelFor(obj.apiVersion, obj.kind);
      new Model(obj).validate();
    } catch (e) {
      problem = String(e.message || e).split("\n").slice(0, 3).join("; ");
    }
    if (problem === null) {
      console.log(`${expectInvalid ? "ACCEPTED" : "valid"}  ${what}`);
      if (expectInvalid) bad++;
    } else {
      console.log(`${expectInvalid ? "rejected" : "INVALID"}  ${what}: ${problem}`);
      if (!expectInvalid) bad++;
    }
  }
}
if (count === 0) {
  console.log("no documents");
  process.exit(1);
}
process.exit(bad === 0 ? 0 : 1);
