// ort_bench.mjs - ONNX Runtime's speed on this machine for an exported dae
// network (tools/export_onnx.py), measured the way bench/bench_core.c
// measures dae: forward passes over synthetic images at batch 1, 64 and
// 1024, each repetition at least 0.1 s of work after a calibration that is
// also the warm-up, the median of the repetitions; batch 1 as us per
// image, the batches as images/s. Optionally first checks ONNX Runtime's
// outputs against expected ones (`dae forward`'s, PyTorch's).
//
//   node bench/ort_bench.mjs MODEL.onnx [--threads N] [--batch 1,64,1024] [--reps R] [--label NAME]
//        [--mflop X] [--check INPUT.safetensors EXPECTED.safetensors]... [--tolerance 1e-4]
//        [--api] [--npm-dir DIR]
//
// Session: intraOpNumThreads N, interOpNumThreads 1, sequential execution,
// all graph optimisations, subnormals as zeros. The timed call is the native
// session's run, synchronous, into a preallocated output, as dae's benchmark
// reuses its buffers: InferenceSession.run adds a setImmediate hop per call
// (~15 us on this machine) that is Node's cost, not ONNX Runtime's. --api
// times the public `await session.run()` instead. --reps 0 only checks. Rows
// are bench_core's: label, threads, measure, images/s, us/image, GFLOP/s
// (with --mflop, the forward MFLOP per image; "-" without). onnxruntime-node
// comes from DIR/node_modules (default build/npm: `npm install --prefix
// build/npm --no-audit --no-fund --ignore-scripts onnxruntime-node`); exit
// status 3 when it is not there, 1 when a check fails, 2 for bad usage.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const USAGE = 'usage: node bench/ort_bench.mjs MODEL.onnx [--threads N] [--batch 1,64,1024] [--reps R] ' +
    '[--label NAME] [--mflop X] [--check INPUT EXPECTED]... [--tolerance T] [--api] [--npm-dir DIR]';

function fail(status, message) {
    console.error(`ort_bench: ${message}`);
    process.exit(status);
}

function parseArgs(argv) {
    const args = {
        model: null, threads: 1, batches: [1, 64, 1024], reps: 5, label: null, mflop: null, checks: [],
        tolerance: 1e-4, api: false,
        npmDir: join(dirname(fileURLToPath(import.meta.url)), '..', 'build', 'npm'),
    };
    const positiveInt = (flag, v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1) fail(2, `${flag}: "${v}" is not a positive integer`);
        return n;
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i], value = () => {
            if (i + 1 >= argv.length) fail(2, `${a} needs a value\n${USAGE}`);
            return argv[++i];
        };
        if (a === '--threads') args.threads = positiveInt(a, value());
        else if (a === '--batch') args.batches = value().split(',').map((b) => positiveInt(a, b));
        else if (a === '--reps') {
            args.reps = Number(value());
            if (!Number.isInteger(args.reps) || args.reps < 0) fail(2, '--reps must be 0 or more');
        } else if (a === '--label') args.label = value();
        else if (a === '--mflop') args.mflop = Number(value());
        else if (a === '--check') args.checks.push([value(), value()]);
        else if (a === '--tolerance') args.tolerance = Number(value());
        else if (a === '--api') args.api = true;
        else if (a === '--npm-dir') args.npmDir = value();
        else if (a === '-h' || a === '--help') { console.log(USAGE); process.exit(0); }
        else if (a.startsWith('-') || args.model !== null) fail(2, `unknown argument ${a}\n${USAGE}`);
        else args.model = a;
    }
    if (args.model === null) fail(2, USAGE);
    args.label ??= basename(args.model, '.onnx');
    return args;
}

// One float32 tensor of a safetensors file: {shape, data}; `name` null
// takes the file's only tensor.
function readSafetensor(path, name) {
    let bytes;
    try {
        bytes = readFileSync(path);
    } catch (e) {
        fail(2, `${path}: ${e.message}`);
    }
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    delete header.__metadata__;
    const names = Object.keys(header);
    if (name === null && names.length !== 1) fail(2, `${path}: holds ${names.length} tensors, not one`);
    const info = header[name ?? names[0]];
    if (info === undefined) fail(2, `${path}: no tensor named "${name}"`);
    if (info.dtype !== 'F32') fail(2, `${path}: tensor is ${info.dtype}, not F32`);
    const [begin, end] = info.data_offsets;
    // A copy: Float32Array needs 4-byte alignment the file does not promise.
    const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + 8 + n + begin, bytes.byteOffset + 8 + n + end));
    return { shape: info.shape, data };
}

function median(v) {
    const s = [...v].sort((a, b) => a - b), m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function nowS() {
    return Number(process.hrtime.bigint()) / 1e9;
}

const args = parseArgs(process.argv.slice(2));
const requireOrt = createRequire(resolve(args.npmDir, 'package.json'));
let ort;
try {
    ort = requireOrt('onnxruntime-node');
} catch (e) {
    fail(3, `onnxruntime-node is not installed in ${args.npmDir} (npm install --prefix ${args.npmDir} ` +
            '--no-audit --no-fund --ignore-scripts onnxruntime-node)');
}
// Subnormal floats as zeros, as dae's engine takes them (core/denormals.h):
// the shipped networks' weights are up to 15% subnormal, and on an Intel
// core each multiply-add with one takes a microcode assist (the U-Net at
// batch 1, one thread: 549 us an image without, 127 with).
const options = {
    intraOpNumThreads: args.threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all', extra: { session: { set_denormal_as_zero: '1' } },
};
const session = await ort.InferenceSession.create(args.model, options);
if (session.inputNames[0] !== 'input' || session.outputNames[0] !== 'output') {
    fail(2, `${args.model}: expected input "input" and output "output", found ${session.inputNames} -> ${session.outputNames}`);
}
const imageShape = session.inputMetadata?.[0]?.shape?.slice(1) ?? [1, 28, 28];
const imageSize = imageShape.reduce((a, b) => a * b, 1);

// The native session behind InferenceSession (what its run() calls after
// a setImmediate); null when this onnxruntime-node does not expose it.
function nativeSession() {
    try {
        const { binding, initOrt } = createRequire(requireOrt.resolve('onnxruntime-node'))('./binding');
        initOrt();
        const s = new binding.InferenceSession();
        s.loadModel(args.model, options);
        return s;
    } catch (e) {
        return null;
    }
}

let failed = false;
for (const [inputPath, expectedPath] of args.checks) {
    const x = readSafetensor(inputPath, 'input'), want = readSafetensor(expectedPath, null);
    const got = (await session.run({ input: new ort.Tensor('float32', x.data, x.shape) })).output;
    if (got.dims.join() !== want.shape.join()) {
        fail(1, `check: output is [${got.dims}], ${expectedPath} holds [${want.shape}]`);
    }
    let worst = 0;
    for (let i = 0; i < want.data.length; i++) worst = Math.max(worst, Math.abs(got.data[i] - want.data[i]));
    const ok = worst < args.tolerance;
    failed ||= !ok;
    console.log(`check ${args.label}: max abs diff ${worst.toExponential(2)} against ${basename(expectedPath)} ` +
                `(${want.data.length} values) ${ok ? 'ok' : `FAILED (tolerance ${args.tolerance})`}`);
}
if (failed) process.exit(1);
if (args.reps === 0) process.exit(0);

const native = args.api ? null : nativeSession();
console.log(`ONNX Runtime ${ort.env.versions?.common ?? '?'} (onnxruntime-node), ${args.threads} threads, ` +
            `median of ${args.reps}, timing ${native ? 'the native run, synchronous' : 'await session.run()'}\n`);
console.log(`${'arch'.padEnd(6)} ${'threads'.padEnd(8)} ${'measure'.padEnd(26)} ${'images/s'.padStart(14)} ` +
            `${'us/image'.padStart(12)} ${'GFLOP/s'.padStart(10)}`);

// Seconds per image, the median of args.reps repetitions of forward
// passes over `batch` images; each repetition runs at least 0.1 s.
async function timeForward(batch) {
    const shape = [batch, ...imageShape];
    const data = new Float32Array(batch * imageSize);
    let seed = 1;
    for (let i = 0; i < data.length; i++) { // speed does not depend on the values
        seed = (seed * 1103515245 + 12345) >>> 0;
        data[i] = seed / 4294967296;
    }
    const feeds = { input: new ort.Tensor('float32', data, shape) };
    const fetches = { output: new ort.Tensor('float32', new Float32Array(batch * imageSize), shape) };
    const pass = native
        ? async (inner) => { for (let i = 0; i < inner; i++) native.run(feeds, fetches, {}); }
        : async (inner) => { for (let i = 0; i < inner; i++) await session.run(feeds, fetches); };
    let inner = 1;
    for (;;) { // calibrate: enough passes for 0.1 s
        const t0 = nowS();
        await pass(inner);
        if (nowS() - t0 > 0.1 || inner > 1 << 20) break;
        inner *= 2;
    }
    const perImage = [];
    for (let rep = 0; rep < args.reps; rep++) {
        const t0 = nowS();
        await pass(inner);
        perImage.push((nowS() - t0) / (inner * batch));
    }
    return median(perImage);
}

for (const batch of args.batches) {
    const s = await timeForward(batch);
    const gflops = args.mflop === null ? '-' : (args.mflop * 1e6 / s / 1e9).toFixed(1);
    console.log(`${args.label.padEnd(6)} ${String(args.threads).padEnd(8)} ${`forward, batch ${batch}`.padEnd(26)} ` +
                `${(1 / s).toFixed(0).padStart(14)} ${(s * 1e6).toFixed(2).padStart(12)} ${gflops.padStart(10)}`);
}
