// validate_kserve.cjs - validates the KServe manifests of deploy/kserve:
// each object against its CustomResourceDefinition's schema, then what a
// schema cannot say and KServe or dae would only find out in a cluster.
//
// usage: node tests/deploy/validate_kserve.cjs NODE_MODULES [--context FILE]... FILE...
//        node tests/deploy/validate_kserve.cjs NODE_MODULES [--context FILE]... --expect-invalid FILE...
//
// The schemas are the openAPIV3Schema of KServe's CRDs, vendored in
// fixtures/kserve/ (its README names the commit); apiVersion and kind pick
// one, and an object of any other apiVersion or kind is invalid. They are
// checked with Ajv (from NODE_MODULES, where tools/deploy_deps.sh installs
// kubernetes-models and its Ajv) the way the API server and `kubectl apply`
// (strict field validation) would: an unknown field is an error, and the
// x-kubernetes-list-type "set" and "map" keys must be unique.
//
// Then, per object:
//   ServingRuntime, ClusterServingRuntime: protocolVersions has v2; a
//     supported model format dae; a container named kserve-container (the
//     one KServe merges the predictor into) with one port, DAE_PORT's;
//     probes on that port at /v2/health/live and /v2/health/ready;
//     DAE_MODELS_DIR = /mnt/models (where KServe mounts storageUri); no
//     loopback DAE_BIND; CPU and memory requests and limits; only
//     {{...}} placeholders KServe fills from the InferenceService's metadata.
//   InferenceService: a predictor.model with protocolVersion v2, whose
//     runtime is a (Cluster)ServingRuntime of these files that serves its
//     modelFormat (name, and version when given) and protocol, as KServe
//     matches them; a storageUri, and for pvc://CLAIM a PersistentVolumeClaim
//     CLAIM among the files.
//   All: a valid metadata.name, no two objects of one kind and name.
// Objects of --context files (deploy/k8s/pvc.yaml, the runtime when
// checking broken InferenceServices) are only looked up, not checked.
//
// Prints one line per object; exits 0 when all are valid, 1 otherwise.
// With --expect-invalid the sense is reversed: every object must be
// rejected, and with the reason its comment names on a line
// "# expect: TEXT" (a part of the message), so that a broken manifest
// rejected by accident does not pass for a working check.
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const usage = "usage: validate_kserve.cjs NODE_MODULES [--context FILE]... [--expect-invalid] FILE...";
const args = process.argv.slice(2);
if (args.length < 2) {
  console.error(usage);
  process.exit(2);
}
const req = createRequire(path.join(path.resolve(args.shift()), "resolve-from-here.js"));
const YAML = req("yaml");
const Ajv = req("ajv").default;
const addFormats = req("ajv-formats").default;

const contextFiles = [];
while (args[0] === "--context" && args.length >= 2) {
  args.shift();
  contextFiles.push(args.shift());
}
const expectInvalid = args[0] === "--expect-invalid";
if (expectInvalid) args.shift();
if (args.length === 0 || args.some((a) => a.startsWith("--"))) {
  console.error(usage);
  process.exit(2);
}

const MODEL_MOUNT = "/mnt/models"; // KServe's DefaultModelLocalMountPath
const CONTAINER = "kserve-container"; // KServe's InferenceServiceContainerName

// ------------------------------------------------------------ schemas

// x-kubernetes-list-type: "set" items are unique; "map" items are unique
// by their x-kubernetes-list-map-keys, a missing key counting as its
// schema default (as the API server defaults it first: ports' protocol).
function listTypeKeyword() {
  function validate(type, data, parentSchema) {
    if (!Array.isArray(data) || (type !== "set" && type !== "map")) return true;
    const keys = parentSchema["x-kubernetes-list-map-keys"] || [];
    const itemProps = (parentSchema.items && parentSchema.items.properties) || {};
    const seen = new Map();
    for (let i = 0; i < data.length; i++) {
      const id = type === "set" ? JSON.stringify(data[i])
        : JSON.stringify(keys.map((k) => (data[i] && data[i][k] !== undefined ? data[i][k]
          : itemProps[k] && itemProps[k].default)));
      if (seen.has(id)) {
        validate.errors = [{
          keyword: "x-kubernetes-list-type",
          message: `items ${seen.get(id)} and ${i} have the same ${type === "set" ? "value" : keys.join("+")} ${id}`,
          params: {},
        }];
        return false;
      }
      seen.set(id, i);
    }
    return true;
  }
  return { keyword: "x-kubernetes-list-type", type: "array", schemaType: "string", errors: true, validate };
}

// Unknown fields are rejected (strict field validation) except where the
// schema keeps them (x-kubernetes-preserve-unknown-fields) or declares no
// properties at all (metadata, which the API server checks itself).
function closeObjects(node) {
  if (Array.isArray(node)) {
    node.forEach(closeObjects);
  } else if (node && typeof node === "object") {
    if (node.properties && typeof node.properties === "object" && !("additionalProperties" in node) &&
        !node["x-kubernetes-preserve-unknown-fields"]) {
      node.additionalProperties = false;
    }
    for (const [k, v] of Object.entries(node)) {
      if (k === "properties") Object.values(v).forEach(closeObjects);
      else closeObjects(v);
    }
  }
}

// Ajv's code optimiser takes longer than it saves on these big schemas
// used once (the InferenceService's compiles in 2.5 s instead of 6 s).
const ajv = new Ajv({ allErrors: true, strictTypes: false, code: { optimize: false } });
addFormats(ajv);
ajv.addKeyword(listTypeKeyword());
for (const k of ["x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-int-or-string",
  "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource"]) {
  ajv.addKeyword({ keyword: k }); // annotations: no rule of their own
}

// "serving.kserve.io/v1alpha1 ServingRuntime" -> {scope, schema}; each
// is compiled when an object first needs it (validatorFor).
const schemas = new Map();
const fixtures = path.join(__dirname, "fixtures", "kserve");
for (const f of fs.readdirSync(fixtures).filter((n) => n.endsWith(".json")).sort()) {
  const crd = JSON.parse(fs.readFileSync(path.join(fixtures, f), "utf8"));
  for (const [version, schema] of Object.entries(crd.versions)) {
    schemas.set(`${crd.group}/${version} ${crd.kind}`, { scope: crd.scope, schema, validate: null });
  }
}
function validatorFor(entry) {
  if (!entry.validate) {
    closeObjects(entry.schema);
    entry.validate = ajv.compile(entry.schema);
  }
  return entry.validate;
}
if (schemas.size === 0) {
  console.error(`no schemas in ${fixtures}`);
  process.exit(2);
}

function schemaErrors(validate) {
  return validate.errors.map((e) => {
    const where = e.instancePath || "/";
    if (e.keyword === "additionalProperties") return `${where}: unknown field "${e.params.additionalProperty}"`;
    if (e.keyword === "enum") return `${where}: ${e.message} ${JSON.stringify(e.params.allowedValues)}`;
    return `${where}: ${e.message}`;
  });
}

// ------------------------------------------------------------ documents

// Every object of FILE, with its source text from the end of the one
// before (its comments, which the YAML library attaches to varying nodes).
function load(file) {
  const src = fs.readFileSync(file, "utf8");
  const out = [];
  let from = 0;
  for (const doc of YAML.parseAllDocuments(src)) {
    const text = src.slice(from, doc.range[2]);
    from = doc.range[2];
    if (doc.errors.length > 0) {
      out.push({ file, obj: null, text, yamlError: doc.errors[0].message });
      continue;
    }
    const obj = doc.toJS();
    if (obj !== null && obj !== undefined) out.push({ file, obj, text });
  }
  return out;
}
const context = contextFiles.flatMap(load);
const checked = args.flatMap(load);
const known = context.concat(checked).map((d) => d.obj).filter((o) => o && typeof o === "object");

const isRuntime = (o) => o && (o.kind === "ServingRuntime" || o.kind === "ClusterServingRuntime") &&
  typeof o.apiVersion === "string" && o.apiVersion.startsWith("serving.kserve.io/");
const nameOf = (o) => (o && o.metadata && o.metadata.name) || "";
const nsOf = (o) => (o && o.metadata && o.metadata.namespace) || "";
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function checkMetadata(obj, problems) {
  const name = nameOf(obj);
  if (!name) {
    problems.push("metadata.name is missing");
  } else if (obj.kind === "InferenceService") {
    // It names Services and hosts: a DNS-1035 label (KServe's own rule).
    if (!/^[a-z]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > 63) {
      problems.push(`metadata.name "${name}" is not a DNS-1035 label (a-z first, then a-z, 0-9, -)`);
    }
  } else if (!DNS_SUBDOMAIN.test(name) || name.length > 253) {
    problems.push(`metadata.name "${name}" is not a DNS-1123 subdomain`);
  }
  const ns = nsOf(obj);
  if (ns && (!DNS_LABEL.test(ns) || ns.length > 63)) problems.push(`metadata.namespace "${ns}" is not a DNS-1123 label`);
}

// KServe renders a runtime's container as a Go template over the
// InferenceService's ObjectMeta: anything but these fails at deploy time.
const PLACEHOLDER = /^\s*(\.Name|\.Namespace|\.(Labels|Annotations)\.[A-Za-z_][A-Za-z0-9_]*|index \.(Labels|Annotations) "[^"]+")\s*$/;

function checkRuntime(obj, problems) {
  const spec = obj.spec || {};
  const protocols = spec.protocolVersions || [];
  if (!protocols.includes("v2")) problems.push(`spec.protocolVersions ${JSON.stringify(protocols)} lacks v2`);
  const formats = spec.supportedModelFormats || [];
  if (!formats.some((f) => f.name === "dae")) problems.push("spec.supportedModelFormats has no format named dae");
  if (spec.disabled === true) problems.push("spec.disabled is true: KServe would never use it");
  if (spec.multiModel === true) problems.push("spec.multiModel is true: dae is a single-model (KServe) runtime");
  const containers = spec.containers || [];
  const names = containers.map((c) => c.name);
  if (new Set(names).size !== names.length) problems.push(`spec.containers: duplicate names ${JSON.stringify(names)}`);
  const c = containers.find((x) => x.name === CONTAINER);
  if (!c) {
    problems.push(`spec.containers has none named ${CONTAINER} (KServe merges the predictor into that one)`);
    return;
  }
  const where = `container ${CONTAINER}`;
  const env = Object.fromEntries((c.env || []).map((e) => [e.name, e]));
  const envValue = (n) => (env[n] && env[n].value !== undefined ? String(env[n].value) : undefined);

  const ports = c.ports || [];
  const daePort = Number(envValue("DAE_PORT") || 8080);
  if (ports.length !== 1) {
    problems.push(`${where}: ${ports.length} ports; KServe and Knative route to exactly one`);
  } else if (ports[0].containerPort !== daePort) {
    problems.push(`${where}: containerPort ${ports[0].containerPort} is not DAE_PORT ${daePort}`);
  }
  const probePort = (p) => (typeof p === "string" ? (ports.find((x) => x.name === p) || {}).containerPort : p);
  for (const [probe, want] of [["livenessProbe", "/v2/health/live"], ["readinessProbe", "/v2/health/ready"]]) {
    const get = c[probe] && c[probe].httpGet;
    if (!get) {
      problems.push(`${where}: no ${probe}.httpGet`);
      continue;
    }
    if (get.path !== want) problems.push(`${where}: ${probe} path ${get.path} is not ${want}`);
    if (probePort(get.port) !== daePort) problems.push(`${where}: ${probe} port ${get.port} is not the serving port ${daePort}`);
  }

  if (envValue("DAE_MODELS_DIR") !== MODEL_MOUNT) {
    problems.push(`${where}: DAE_MODELS_DIR is ${JSON.stringify(envValue("DAE_MODELS_DIR"))}, not ${MODEL_MOUNT} ` +
      "(where KServe mounts the storageUri)");
  }
  const bind = envValue("DAE_BIND");
  if (bind !== undefined && /^(127\.|::1$|localhost$)/.test(bind)) {
    problems.push(`${where}: DAE_BIND ${bind} is loopback: nothing outside the pod could reach it`);
  }
  const r = c.resources || {};
  for (const kind of ["requests", "limits"]) {
    for (const res of ["cpu", "memory"]) {
      if (!r[kind] || r[kind][res] === undefined) problems.push(`${where}: no resources.${kind}.${res}`);
    }
  }
  for (const m of JSON.stringify(c).matchAll(/\{\{(.*?)\}\}/g)) {
    if (!PLACEHOLDER.test(m[1])) {
      problems.push(`${where}: placeholder {{${m[1]}}} is none KServe fills (.Name, .Namespace, .Labels.X, .Annotations.X)`);
    }
  }
}

// KServe's runtime choice (ModelSpec.RuntimeSupportsModel and
// IsProtocolVersionSupported): with runtime given, any of its formats
// matches; without, only autoSelect ones, in any runtime.
function runtimeServes(rt, model) {
  const fmt = model.modelFormat || {};
  const protocol = model.protocolVersion || "v1";
  const spec = rt.spec || {};
  const formatOk = (spec.supportedModelFormats || []).some((f) =>
    (model.runtime !== undefined || f.autoSelect === true) && f.name === fmt.name &&
    (fmt.version === undefined || f.version === fmt.version));
  const protocols = spec.protocolVersions || [];
  return { formatOk, protocolOk: protocols.length === 0 || protocols.includes(protocol) };
}

function checkInferenceService(obj, problems) {
  const predictor = (obj.spec && obj.spec.predictor) || {};
  const model = predictor.model;
  if (!model) {
    problems.push("spec.predictor.model is missing (dae is a model-format runtime)");
    return;
  }
  const fmt = model.modelFormat || {};
  const protocol = model.protocolVersion || "v1";
  if (protocol !== "v2") problems.push(`protocolVersion is ${model.protocolVersion || "unset (v1)"}: dae speaks v2`);
  const reachable = (rt) => rt.kind === "ClusterServingRuntime" || nsOf(rt) === nsOf(obj);
  let candidates;
  if (model.runtime !== undefined) {
    const named = known.filter((o) => isRuntime(o) && nameOf(o) === model.runtime);
    candidates = named.filter(reachable);
    if (named.length === 0) {
      problems.push(`runtime ${model.runtime}: no ServingRuntime or ClusterServingRuntime of that name`);
    } else if (candidates.length === 0) {
      problems.push(`runtime ${model.runtime}: a ServingRuntime in namespace "${nsOf(named[0])}", ` +
        `not this InferenceService's "${nsOf(obj)}"`);
    }
  } else {
    candidates = known.filter((o) => isRuntime(o) && reachable(o));
  }
  const serving = candidates.filter((rt) => !(rt.spec && rt.spec.disabled));
  if (candidates.length > 0 && serving.length === 0) {
    problems.push(`runtime ${model.runtime}: disabled (spec.disabled)`);
  } else if (candidates.length > 0 || model.runtime === undefined) {
    const fits = serving.map((rt) => runtimeServes(rt, model));
    if (!fits.some((f) => f.formatOk)) {
      problems.push(`modelFormat ${fmt.name}${fmt.version ? " version " + fmt.version : ""}: ` +
        `not a supported model format of runtime ${model.runtime || "(any, autoSelect)"}`);
    } else if (!fits.some((f) => f.formatOk && f.protocolOk)) {
      problems.push(`protocolVersion ${protocol}: not among the runtime's protocolVersions`);
    }
  }
  const uri = model.storageUri;
  if (!uri) {
    problems.push("no storageUri: dae-server would have no models in " + MODEL_MOUNT);
  } else if (uri.startsWith("pvc://")) {
    const claim = uri.slice("pvc://".length).split("/")[0];
    const pvc = known.find((o) => o.kind === "PersistentVolumeClaim" && nameOf(o) === claim &&
      (!nsOf(o) || !nsOf(obj) || nsOf(o) === nsOf(obj)));
    if (!pvc) problems.push(`storageUri ${uri}: no PersistentVolumeClaim ${claim} in the files given`);
  }
}

// ------------------------------------------------------------ run

const seen = new Map();
let bad = 0;
for (const d of checked) {
  const obj = d.obj;
  const what = obj && typeof obj === "object"
    ? `${d.file}: ${obj.apiVersion} ${obj.kind} ${nsOf(obj) ? nsOf(obj) + "/" : ""}${nameOf(obj)}` : d.file;
  const problems = [];
  if (d.yamlError) {
    problems.push(`YAML: ${d.yamlError}`);
  } else if (typeof obj !== "object" || Array.isArray(obj)) {
    problems.push("not an object");
  } else {
    const entry = schemas.get(`${obj.apiVersion} ${obj.kind}`);
    if (!entry) {
      problems.push(`no schema for apiVersion ${obj.apiVersion} kind ${obj.kind} (have: ${[...schemas.keys()].join(", ")})`);
    } else {
      const validate = validatorFor(entry);
      if (!validate(obj)) problems.push(...schemaErrors(validate));
      checkMetadata(obj, problems);
      if (entry.scope === "Cluster" && nsOf(obj)) problems.push(`${obj.kind} is cluster-scoped: no metadata.namespace`);
      const key = `${obj.kind} ${nsOf(obj)}/${nameOf(obj)}`;
      if (seen.has(key)) problems.push(`the same kind and name as ${seen.get(key)}`);
      seen.set(key, what);
      if (isRuntime(obj)) checkRuntime(obj, problems);
      if (obj.kind === "InferenceService") checkInferenceService(obj, problems);
    }
  }
  const message = problems.slice(0, 6).join("; ");
  if (!expectInvalid) {
    console.log(problems.length === 0 ? `valid  ${what}` : `INVALID  ${what}: ${message}`);
    if (problems.length > 0) bad++;
    continue;
  }
  const expect = (d.text.match(/^#\s*expect:\s*(.+?)\s*$/m) || [])[1];
  if (problems.length === 0) {
    console.log(`ACCEPTED  ${what}`);
    bad++;
  } else if (!expect) {
    console.log(`NO-EXPECT  ${what}: rejected (${message}) but its comment has no "expect:" line`);
    bad++;
  } else if (!problems.some((p) => p.includes(expect))) {
    console.log(`WRONG-REASON  ${what}: expected "${expect}", got: ${message}`);
    bad++;
  } else {
    console.log(`rejected  ${what}: ${message}`);
  }
}
if (checked.length === 0) {
  console.log("no documents");
  process.exit(1);
}
process.exit(bad === 0 ? 0 : 1);
