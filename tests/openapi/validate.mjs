// validate.mjs - validates an OpenAPI document with
// @seriousme/openapi-schema-validator (the OpenAPI 3.x JSON schemas), then
// checks what that schema cannot: every $ref resolves, every schema of
// components compiles as JSON Schema 2020-12, and every example (of a
// media type, a parameter or a header) is valid against its schema.
//
// usage: node tests/openapi/validate.mjs OPENAPI.json NODE_MODULES_DIR
//            [--answer METHOD PATH STATUS FILE]...
// Each --answer checks the JSON body in FILE, an answer of the server to
// METHOD on the documented PATH ("/models/{name}") with STATUS, against
// the schema the document gives it. Prints every problem found and exits
// 1 if there was one.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [file, modules, ...rest] = process.argv.slice(2);
const answers = [];
while (rest.length >= 5 && rest[0] === "--answer") answers.push(rest.splice(0, 5).slice(1));
if (!file || !modules || rest.length > 0) {
    console.error("usage: node validate.mjs OPENAPI.json NODE_MODULES_DIR [--answer METHOD PATH STATUS FILE]...");
    process.exit(2);
}
const load = async (name) => import(pathToFileURL(createRequire(path.resolve(modules, "x.js")).resolve(name)));
const { Validator } = await load("@seriousme/openapi-schema-validator");
const Ajv2020 = (await load("ajv/dist/2020.js")).default;
const addFormats = (await load("ajv-formats")).default;

const doc = JSON.parse(readFileSync(file, "utf8"));
let problems = 0;
const problem = (msg) => {
    problems++;
    console.error(`${file}: ${msg}`);
};

// 1. The OpenAPI schema of the document's version.
const validator = new Validator();
const res = await validator.validate(structuredClone(doc));
if (!res.valid) {
    const errors = Array.isArray(res.errors) ? res.errors : [res.errors];
    for (const e of errors) problem(typeof e === "string" ? e : `${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
} else {
    console.log(`${file}: valid OpenAPI ${validator.version} (@seriousme/openapi-schema-validator)`);
    try {
        validator.resolveRefs();
    } catch (e) {
        problem(`a $ref does not resolve: ${e.message}`);
    }
}

// 2. The schemas and the examples, with Ajv (JSON Schema 2020-12, the
// dialect of OpenAPI 3.1). The document is added whole, so that a schema's
// "#/components/..." references resolve within it.
const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
addFormats(ajv);
ajv.addVocabulary(["example", "externalDocs", "xml", "discriminator"]);
ajv.addSchema(doc, "openapi.json");
const pointer = (parts) => parts.map((p) => String(p).replaceAll("~", "~0").replaceAll("/", "~1")).join("/");
const validatorOf = (where) => ajv.getSchema(`openapi.json#/${pointer(where)}`);

for (const name of Object.keys(doc.components?.schemas ?? {})) {
    try {
        validatorOf(["components", "schemas", name]);
    } catch (e) {
        problem(`components.schemas.${name} does not compile: ${e.message}`);
    }
}

// Follows a local $ref to the object it names (and its path), or returns the object.
const follow = (obj, at) => {
    while (obj && typeof obj.$ref === "string" && obj.$ref.startsWith("#/")) {
        at = obj.$ref.slice(2).split("/").map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"));
        obj = at.reduce((o, k) => (o == null ? undefined : o[k]), doc);
    }
    return [obj, at];
};

const checked = { n: 0 };
const checkExample = (value, schemaAt, where) => {
    let validate;
    try {
        validate = validatorOf(schemaAt);
    } catch (e) {
        problem(`${where}: its schema does not compile: ${e.message}`);
        return;
    }
    if (!validate) return;
    checked.n++;
    if (!validate(value))
        for (const e of validate.errors) problem(`${where}: example ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
};

// Checks the examples of a media type, parameter or header object at path at.
const checkExamples = (obj, at, where) => {
    [obj, at] = follow(obj, at);
    if (!obj || !obj.schema) return;
    const schemaAt = [...at, "schema"];
    if ("example" in obj) checkExample(obj.example, schemaAt, where);
    for (const [k, ex] of Object.entries(obj.examples ?? {})) {
        const [e] = follow(ex, []);
        if (e && "value" in e) checkExample(e.value, schemaAt, `${where} example ${k}`);
    }
};

const methods = ["get", "head", "post", "put", "delete", "options", "patch", "trace"];
for (const [p, item] of Object.entries(doc.paths ?? {})) {
    for (const [i, prm] of (item.parameters ?? []).entries()) checkExamples(prm, ["paths", p, "parameters", i], `${p} parameter ${i}`);
    for (const m of methods) {
        const o = item[m];
        if (!o) continue;
        const at = ["paths", p, m];
        for (const [i, prm] of (o.parameters ?? []).entries()) checkExamples(prm, [...at, "parameters", i], `${m.toUpperCase()} ${p} parameter ${i}`);
        for (const [t, media] of Object.entries(o.requestBody?.content ?? {}))
            checkExamples(media, [...at, "requestBody", "content", t], `${m.toUpperCase()} ${p} request body ${t}`);
        for (const [st, r] of Object.entries(o.responses ?? {})) {
            const [resp, rat] = follow(r, [...at, "responses", st]);
            for (const [t, media] of Object.entries(resp?.content ?? {}))
                checkExamples(media, [...rat, "content", t], `${m.toUpperCase()} ${p} response ${st} ${t}`);
        }
    }
}
for (const [name, prm] of Object.entries(doc.components?.parameters ?? {}))
    checkExamples(prm, ["components", "parameters", name], `components.parameters.${name}`);
for (const [name, h] of Object.entries(doc.components?.headers ?? {}))
    checkExamples(h, ["components", "headers", name], `components.headers.${name}`);

// 3. The server's own answers against their documented schemas.
for (const [method, p, status, body] of answers) {
    const where = `${method} ${p} ${status}`;
    const [resp, at] = follow(doc.paths?.[p]?.[method.toLowerCase()]?.responses?.[status], ["paths", p, method.toLowerCase(), "responses", status]);
    if (!resp?.content?.["application/json"]?.schema) {
        problem(`${where}: the server answered it, the document has no JSON schema for it`);
        continue;
    }
    let value;
    try {
        value = JSON.parse(readFileSync(body, "utf8"));
    } catch (e) {
        problem(`${where}: the answer is not JSON: ${e.message}`);
        continue;
    }
    const validate = validatorOf([...at, "content", "application/json", "schema"]);
    if (!validate(value))
        for (const e of validate.errors) problem(`${where}: the answer ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
    else console.log(`${file}: the answer to ${where} matches its schema`);
}

if (problems > 0) {
    console.error(`${file}: ${problems} problem(s)`);
    process.exit(1);
}
console.log(`${file}: every $ref resolves, every schema compiles, ${checked.n} examples match their schemas`);
