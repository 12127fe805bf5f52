// app.js - the page of dae-server (GET /): denoise an uploaded or drawn
// image, list the models, start and follow a training job. It talks only to
// the server that served it, with fetch and EventSource; no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "dae-admin-token";

// ------------------------------------------------------------ requests and errors

// An answer that was not 2xx, or a request that never got one (status 0).
class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId || "";
  }
}

// The admin token: the field's value, kept in sessionStorage (this tab only).
function authHeaders() {
  const t = $("token").value.trim();
  return t ? { Authorization: "Bearer " + t } : {};
}

// fetch() that throws an ApiError for a network failure or a non-2xx answer,
// reading the server's {"error":{...}} body when there is one.
async function api(method, path, { body, type, admin } = {}) {
  const headers = Object.assign({}, admin ? authHeaders() : {});
  if (type) headers["Content-Type"] = type;
  let res;
  try {
    res = await fetch(path, { method, headers, body });
  } catch (e) {
    throw new ApiError(0, "network_error", `${method} ${path}: the server did not answer (${e.message})`);
  }
  if (res.ok) return res;
  let code = "http_" + res.status, message = `${method} ${path} answered ${res.status} ${res.statusText}`;
  let requestId = res.headers.get("X-Request-Id") || "";
  try {
    const j = await res.json();
    if (j && j.error) {
      code = j.error.code || code;
      message = j.error.message || message;
      requestId = j.error.request_id || requestId;
    }
  } catch (e) { /* not JSON: keep the status line */ }
  throw new ApiError(res.status, code, message, requestId);
}

async function apiJSON(method, path, opts) {
  return (await api(method, path, opts)).json();
}

function showError(err) {
  const e = err instanceof ApiError ? err : new ApiError(0, "page_error", String(err && err.message || err));
  $("error-code").textContent = e.code + (e.status ? ` (${e.status})` : "");
  $("error-message").textContent = e.message;
  $("error-request").textContent = e.requestId ? "request id " + e.requestId : "";
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-code").textContent = $("error-message").textContent = $("error-request").textContent = "";
}

// ------------------------------------------------------------ PNG and pixels

// CRC-32 of PNG chunks (the zlib polynomial).
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// An 8-bit gray PNG of w x h pixels: canvas.toBlob only makes RGBA, and the
// models are gray, so the drawing goes out as the gray image it is. The
// zlib stream uses stored (uncompressed) blocks: 28x28 needs no more.
function encodeGrayPNG(gray, w, h) {
  const raw = new Uint8Array((w + 1) * h);
  for (let y = 0; y < h; y++) raw.set(gray.subarray(y * w, y * w + w), y * (w + 1) + 1);
  const blocks = [];
  for (let off = 0; off < raw.length || off === 0; off += 65535) {
    const part = raw.subarray(off, Math.min(off + 65535, raw.length));
    const last = off + 65535 >= raw.length ? 1 : 0;
    blocks.push(Uint8Array.of(last, part.length & 255, part.length >> 8, ~part.length & 255, (~part.length >> 8) & 255), part);
    if (last) break;
  }
  let a = 1, b = 0;
  for (const v of raw) { a = (a + v) % 65521; b = (b + a) % 65521; }
  const zlib = concat([Uint8Array.of(0x78, 0x01), ...blocks, u32(((b << 16) | a) >>> 0)]);
  const ihdr = concat([u32(w), u32(h), Uint8Array.of(8, 0, 0, 0, 0)]);
  return concat([Uint8Array.of(137, 80, 78, 71, 13, 10, 26, 10), chunk("IHDR", ihdr), chunk("IDAT", zlib), chunk("IEND", new Uint8Array(0))]);
}

function u32(v) { return Uint8Array.of(v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255); }
function chunk(type, data) {
  const td = concat([new TextEncoder().encode(type), data]);
  return concat([u32(data.length), td, u32(crc32(td))]);
}
function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}

// The luminance (0..1, Rec. 601 weights) of every pixel of an encoded image,
// decoded by the browser as it is (no colour management, no premultiplying).
async function lumaOf(bytes) {
  const bmp = await createImageBitmap(new Blob([bytes]), { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const c = document.createElement("canvas");
  c.width = bmp.width;
  c.height = bmp.height;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  const y = new Float64Array(c.width * c.height);
  for (let i = 0; i < y.length; i++) y[i] = (0.299 * d[4 * i] + 0.587 * d[4 * i + 1] + 0.114 * d[4 * i + 2]) / 255;
  return { w: c.width, h: c.height, y };
}

// PSNR in dB of b against the reference a, on a 0..1 scale: 10 log10(1/MSE).
function psnr(a, b) {
  if (a.w !== b.w || a.h !== b.h) return NaN;
  let se = 0;
  for (let i = 0; i < a.y.length; i++) { const d = a.y[i] - b.y[i]; se += d * d; }
  const mse = se / a.y.length;
  return mse === 0 ? Infinity : 10 * Math.log10(1 / mse);
}

function fmtDB(v) {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? "—" : "∞ dB";
  return v.toFixed(2) + " dB";
}

// ------------------------------------------------------------ the drawing canvas

const draw = { drawn: false, last: null };

function clearCanvas() {
  const c = $("canvas"), ctx = c.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, c.width, c.height);
  draw.drawn = false;
  if (source && source.kind === "canvas") setSource(null);
}

function canvasPoint(ev) {
  const c = $("canvas"), r = c.getBoundingClientRect();
  return { x: (ev.clientX - r.left) * c.width / r.width, y: (ev.clientY - r.top) * c.height / r.height };
}

function stroke(from, to) {
  const ctx = $("canvas").getContext("2d");
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 22;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
}

function setupCanvas() {
  const c = $("canvas");
  clearCanvas();
  c.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    c.setPointerCapture(ev.pointerId);
    draw.last = canvasPoint(ev);
    stroke(draw.last, draw.last);
    draw.drawn = true;
    setSource({ kind: "canvas", name: "your drawing (28×28)" });
  });
  c.addEventListener("pointermove", (ev) => {
    if (!draw.last) return;
    const p = canvasPoint(ev);
    stroke(draw.last, p);
    draw.last = p;
  });
  const end = () => { draw.last = null; };
  c.addEventListener("pointerup", end);
  c.addEventListener("pointercancel", end);
  $("canvas-clear").addEventListener("click", clearCanvas);
}

// The drawing as MNIST shapes its digits: the strokes' bounding box scaled
// into 20x20 (area average), centred in 28x28, as an 8-bit gray PNG.
function canvasPNG() {
  const c = $("canvas"), W = c.width, H = c.height;
  const d = c.getContext("2d").getImageData(0, 0, W, H).data;
  let x0 = W, y0 = H, x1 = -1, y1 = -1;
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++)
      if (d[4 * (y * W + x)] > 0) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const out = new Uint8Array(28 * 28);
  if (x1 >= 0) {
    const side = Math.max(x1 - x0 + 1, y1 - y0 + 1);
    const sx = x0 - (side - (x1 - x0 + 1)) / 2, sy = y0 - (side - (y1 - y0 + 1)) / 2;
    const cell = side / 20;
    for (let ty = 0; ty < 20; ty++)
      for (let tx = 0; tx < 20; tx++) {
        let sum = 0, n = 0;
        const ya = Math.floor(sy + ty * cell), yb = Math.ceil(sy + (ty + 1) * cell);
        const xa = Math.floor(sx + tx * cell), xb = Math.ceil(sx + (tx + 1) * cell);
        for (let y = ya; y < yb; y++)
          for (let x = xa; x < xb; x++) {
            n++;
            if (x >= 0 && y >= 0 && x < W && y < H) sum += d[4 * (y * W + x)];
          }
        out[(ty + 4) * 28 + tx + 4] = n ? Math.round(sum / n) : 0;
      }
  }
  return encodeGrayPNG(out, 28, 28);
}

// ------------------------------------------------------------ the denoise panel

// What will be denoised: {kind: "file", bytes, type, name} or {kind: "canvas"}.
let source = null;
const shown = { original: null, noisy: null, denoised: null };

function setSource(s) {
  source = s;
  $("source-name").textContent = s ? s.name : "nothing yet";
  $("canvas").classList.toggle("inactive", !!s && s.kind !== "canvas");
}

async function takeFile(file) {
  if (!file) return;
  const bytes = new Uint8Array(await file.arrayBuffer());
  setSource({ kind: "file", bytes, type: file.type || "application/octet-stream", name: `${file.name} (${bytes.length} bytes)` });
}

function setupDrop() {
  const drop = $("drop");
  $("file").addEventListener("change", () => takeFile($("file").files[0]).catch(showError));
  for (const t of ["dragenter", "dragover"])
    drop.addEventListener(t, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  for (const t of ["dragleave", "drop"])
    drop.addEventListener(t, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    takeFile(ev.dataTransfer.files[0]).catch(showError);
  });
}

// Shows bytes in one of the three frames through a blob URL: the server's
// PNG as it sent it. Small images are upscaled with hard pixel edges.
function showImage(slot, bytes, type) {
  const img = $("img-" + slot);
  if (shown[slot]) URL.revokeObjectURL(shown[slot]);
  shown[slot] = null;
  if (!bytes) {
    img.removeAttribute("src");
    img.closest("figure").classList.add("empty");
    return;
  }
  shown[slot] = URL.createObjectURL(new Blob([bytes], { type: type || "image/png" }));
  img.onload = () => img.classList.toggle("pixelated", img.naturalWidth <= 128);
  img.src = shown[slot];
  img.closest("figure").classList.remove("empty");
}

function setStatus(state, text) {
  const s = $("run-status");
  s.dataset.state = state;
  s.textContent = text;
}

let runs = 0;

async function runDenoise() {
  clearError();
  if (!source) throw new ApiError(0, "no_image", "Pick or drop an image, or draw a digit, first.");
  const model = $("model").value;
  const sigma = Number($("sigma").value);
  const seed = Math.max(0, Math.floor(Number($("seed").value) || 0));
  const input = source.kind === "canvas" ? { bytes: canvasPNG(), type: "image/png" } : { bytes: source.bytes, type: source.type };
  $("run").disabled = true;
  setStatus("busy", sigma > 0 ? "adding noise…" : "denoising…");
  const last = { model, sigma, seed, originalBytes: input.bytes, noisyBytes: null, denoisedBytes: null };
  try {
    showImage("original", input.bytes, input.type);
    let noisy = input.bytes;
    if (sigma > 0) {
      const r = await api("POST", `/noise?type=gaussian&sigma=${sigma}&seed=${seed}`, { body: input.bytes, type: input.type });
      noisy = new Uint8Array(await r.arrayBuffer());
      last.noisyBytes = noisy;
      last.noiseRequestId = r.headers.get("X-Request-Id");
      showImage("noisy", noisy, "image/png");
      setStatus("busy", "denoising…");
    } else {
      showImage("noisy", null);
    }
    const q = model ? "?model=" + encodeURIComponent(model) : "";
    const r = await api("POST", "/denoise" + q, { body: noisy, type: sigma > 0 ? "image/png" : input.type });
    const out = new Uint8Array(await r.arrayBuffer());
    Object.assign(last, {
      denoisedBytes: out,
      requestId: r.headers.get("X-Request-Id"),
      xModel: r.headers.get("X-Model"),
      xModelVersion: r.headers.get("X-Model-Version"),
    });
    showImage("denoised", out, "image/png");
    $("request-id").textContent = last.requestId || "—";
    $("x-model").textContent = last.xModel || "—";
    $("x-model-version").textContent = last.xModelVersion || "";
    $("download").href = shown.denoised;
    $("download").classList.remove("disabled");
    $("download").removeAttribute("aria-disabled");

    const dn = await lumaOf(out);
    $("image-size").textContent = `${dn.w} × ${dn.h}`;
    if (sigma > 0) {
      const [o, n] = await Promise.all([lumaOf(input.bytes), lumaOf(noisy)]);
      last.psnrNoisy = psnr(o, n);
      last.psnrDenoised = psnr(o, dn);
    } else {
      last.psnrNoisy = last.psnrDenoised = NaN;
    }
    $("psnr-noisy").textContent = fmtDB(last.psnrNoisy);
    $("psnr-denoised").textContent = fmtDB(last.psnrDenoised);
    $("psnr-denoised").classList.toggle("better", last.psnrDenoised > last.psnrNoisy);
    window.daeLast = last;
    setStatus("done", "done");
  } catch (e) {
    setStatus("error", "failed");
    throw e;
  } finally {
    runs++;
    window.daeRuns = runs;
    $("run").disabled = false;
  }
}

// ------------------------------------------------------------ the models panel

let models = [];

function metaNumber(m, key, digits) {
  const v = m.metadata && m.metadata[key];
  return v === undefined || v === "" ? "—" : Number(v).toFixed(digits);
}

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const k of kids) e.append(k);
  return e;
}

async function loadModels() {
  const j = await apiJSON("GET", "/models");
  models = j.models || [];
  const pick = $("model"), base = $("train-base");
  const keepPick = pick.value, keepBase = base.value;
  pick.replaceChildren();
  base.replaceChildren(el("option", { value: "", textContent: "none: a new network" }));
  const list = $("models-list");
  list.replaceChildren();
  for (const m of models) {
    const tags = (m.active ? " · active" : "") + (m.default && !m.active ? " · default" : "");
    pick.append(el("option", { value: m.name, textContent: m.name + tags }));
    base.append(el("option", { value: m.name, textContent: m.name }));
    const md = m.metadata || {};
    const name = el("td", {}, el("strong", { textContent: m.name }));
    if (m.active) name.append(" ", el("span", { className: "badge", textContent: "active" }));
    else if (m.default) name.append(" ", el("span", { className: "badge", textContent: "default" }));
    const details = el("button", { type: "button", className: "ghost small", textContent: "Details" });
    details.setAttribute("aria-label", "Details of " + m.name);
    details.addEventListener("click", () => showModel(m.name).catch(showError));
    const actions = el("td", { className: "actions" }, details);
    if (!m.active) {
      const act = el("button", { type: "button", className: "ghost small", textContent: "Activate" });
      act.setAttribute("aria-label", "Activate " + m.name);
      act.addEventListener("click", () => activate(m.name).catch(showError));
      actions.append(" ", act);
    }
    const row = el("tr", {}, name,
      el("td", {}, el("code", { textContent: m.version })),
      el("td", { textContent: md.dataset ? `${md.dataset}${md.epochs ? ", " + md.epochs + " epochs" : ""}` : "—" }),
      el("td", { textContent: md.test_psnr ? metaNumber(m, "test_psnr", 2) + " dB" : "—" }),
      el("td", { textContent: metaNumber(m, "test_ssim", 3) }),
      el("td", { textContent: m.parameters !== undefined ? m.parameters.toLocaleString("en") : "—" }),
      actions);
    row.dataset.model = m.name;
    if (m.active) row.classList.add("active");
    list.append(row);
  }
  const active = models.find((m) => m.active) || models.find((m) => m.default);
  pick.value = models.some((m) => m.name === keepPick) ? keepPick : active ? active.name : "";
  base.value = models.some((m) => m.name === keepBase) ? keepBase : "";
  $("server-state").textContent = `${models.length} models · active ${j.active || j.default || "none"}`;
  $("server-state").classList.add("ok");
}

// One layer of an architecture spec as a short line: "conv2d 1→16 k3 s2".
function layerText(l) {
  const parts = [l.type];
  if (l.in_channels !== undefined) parts.push(`${l.in_channels}→${l.out_channels}`);
  if (l.kernel_size !== undefined) parts.push("k" + l.kernel_size);
  if (l.stride) parts.push("s" + l.stride);
  if (l.inputs) parts.push("(" + l.inputs.join(" + ") + ")");
  return parts.join(" ");
}

async function showModel(name) {
  const m = await apiJSON("GET", "/models/" + encodeURIComponent(name));
  const box = $("model-detail");
  const head = el("div", { className: "card-head" }, el("h3", { textContent: `${m.name} ${m.version}` }));
  const close = el("button", { type: "button", className: "ghost small", textContent: "Close" });
  close.addEventListener("click", () => { box.hidden = true; });
  head.append(close);
  const dl = el("dl", { className: "meta" });
  const add = (k, v) => dl.append(el("dt", { textContent: k }), el("dd", { textContent: v }));
  add("file", `${m.file} (${(m.file_bytes / 1024).toFixed(0)} KiB)`);
  add("parameters", m.parameters.toLocaleString("en"));
  add("input", (m.input || []).join(" × "));
  for (const [k, v] of Object.entries(m.metadata || {})) add(k, v);
  box.replaceChildren(head, dl);
  if (m.architecture) {
    const arch = el("ol", { className: "arch" });
    for (const [k, v] of Object.entries(m.architecture)) {
      if (!Array.isArray(v) || k === "input") continue;
      arch.append(el("li", {}, el("code", { textContent: k }), " " + v.map(layerText).join(", ")));
    }
    box.append(el("h4", { textContent: `Architecture (output: ${m.architecture.output || "direct"})` }), arch);
  }
  box.hidden = false;
}

async function activate(name) {
  clearError();
  await apiJSON("POST", `/models/${encodeURIComponent(name)}/activate`, { admin: true });
  await loadModels();
}

async function loadDatasets() {
  const j = await apiJSON("GET", "/datasets");
  const sel = $("train-dataset");
  sel.replaceChildren();
  for (const d of j.datasets || [])
    sel.append(el("option", { value: d.name, textContent: `${d.name} (${d.train_count} train / ${d.test_count} test)` }));
  if (!sel.options.length) sel.append(el("option", { value: "", textContent: "no data sets on the server" }));
}

// ------------------------------------------------------------ the training panel

const job = { id: null, model: null, points: [], es: null, state: null };

// Redraws the loss chart: one circle per point (x = steps done, y = loss).
function drawLoss() {
  const svg = $("loss-chart"), NS = "http://www.w3.org/2000/svg";
  const W = 480, H = 200, L = 48, R = 12, T = 12, B = 28;
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  svg.replaceChildren();
  const pts = job.points;
  svg.dataset.points = String(pts.length);
  svg.append(mk("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot" }));
  if (!pts.length) {
    svg.append(mk("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "the loss appears here as the job runs"));
    return;
  }
  const xmax = Math.max(1, ...pts.map((p) => p.x));
  let ymin = Math.min(...pts.map((p) => p.y)), ymax = Math.max(...pts.map((p) => p.y));
  if (ymax - ymin < 1e-9) { ymin -= 0.01; ymax += 0.01; }
  const pad = (ymax - ymin) * 0.08;
  ymin = Math.max(0, ymin - pad); ymax += pad;
  const px = (x) => L + (x / xmax) * (W - L - R), py = (y) => T + (1 - (y - ymin) / (ymax - ymin)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = ymin + (ymax - ymin) * i / 4;
    svg.append(mk("line", { x1: L, x2: W - R, y1: py(v), y2: py(v), class: "grid" }));
    svg.append(mk("text", { x: L - 6, y: py(v) + 4, "text-anchor": "end", class: "axis" }, v.toPrecision(3)));
  }
  svg.append(mk("text", { x: W - R, y: H - 8, "text-anchor": "end", class: "axis" }, `step ${xmax}`));
  svg.append(mk("text", { x: L, y: H - 8, class: "axis" }, "loss (MSE) by step"));
  svg.append(mk("polyline", { points: pts.map((p) => `${px(p.x)},${py(p.y)}`).join(" "), class: "line" }));
  const g = mk("g", { id: "loss-points" });
  for (const p of pts) {
    const c = mk("circle", { cx: px(p.x), cy: py(p.y), r: 3.5, class: "pt" });
    c.append(mk("title", {}, `step ${p.x}: loss ${p.y.toFixed(5)}`));
    g.append(c);
  }
  svg.append(g);
}

// Shows one state of the job (the POST answer, or an event's data).
function showJob(j) {
  job.state = j.state;
  const st = $("train-state");
  st.textContent = j.state;
  st.dataset.state = j.state;
  $("train-job").textContent = j.id;
  $("train-progress").value = j.progress || 0;
  const bits = [];
  if (j.epochs) bits.push(`epoch ${j.epoch}/${j.epochs}`);
  if (j.loss) bits.push(`loss ${j.loss.toFixed(5)}`);
  if (j.images_per_second) bits.push(`${Math.round(j.images_per_second)} images/s`);
  if (j.eta_seconds) bits.push(`about ${Math.ceil(j.eta_seconds)} s left`);
  const h = j.history && j.history[j.history.length - 1];
  if (h && h.test_psnr !== undefined) bits.push(`test PSNR ${h.test_psnr.toFixed(2)} dB`);
  if (j.error) bits.push(`error: ${typeof j.error === "string" ? j.error : JSON.stringify(j.error)}`);
  $("train-detail").textContent = bits.length ? "· " + bits.join(" · ") : "";
  if (j.total_steps > 0 && j.loss > 0 && (!job.points.length || job.points[job.points.length - 1].x < j.total_steps)) {
    job.points.push({ x: j.total_steps, y: j.loss });
    drawLoss();
  }
  const pr = $("train-promotion");
  if (j.promotion) {
    const p = j.promotion;
    pr.textContent = `Promotion: ${p.decision}${j.activated ? " (activated)" : ""}. ${p.reason || ""}`;
    pr.className = "promotion " + (p.decision === "promoted" ? "good" : "kept");
    pr.hidden = false;
  } else if (j.activated) {
    pr.textContent = `${j.model} was activated.`;
    pr.className = "promotion good";
    pr.hidden = false;
  }
  const finished = ["succeeded", "failed", "cancelled"].includes(j.state);
  $("train-cancel").disabled = finished;
  $("train-activate").disabled = !(j.state === "succeeded" && !j.activated);
  $("train-start").disabled = !finished && j.state !== undefined;
}

function follow(id) {
  if (job.es) job.es.close();
  const es = new EventSource(`/train/${encodeURIComponent(id)}/events`);
  job.es = es;
  const take = (ev) => {
    try { showJob(JSON.parse(ev.data)); } catch (e) { showError(e); }
  };
  es.addEventListener("progress", take);
  es.addEventListener("done", (ev) => {
    take(ev);
    es.close();
    job.es = null;
    $("train-start").disabled = false;
    loadModels().catch(showError);
  });
  es.onerror = () => {
    // EventSource reconnects by itself; say so, and give up if it gave up.
    if (es.readyState === EventSource.CLOSED) {
      showError(new ApiError(0, "network_error", `the event stream of job ${id} was lost`));
      $("train-start").disabled = false;
    } else {
      $("train-detail").textContent = "· reconnecting to the event stream…";
    }
  };
}

async function startTraining(ev) {
  ev.preventDefault();
  clearError();
  const body = { dataset: $("train-dataset").value };
  const num = (id) => Math.floor(Number($(id).value));
  if ($("train-epochs").value !== "") body.epochs = num("train-epochs");
  if ($("train-limit").value !== "") body.train_limit = num("train-limit");
  if ($("train-name").value.trim()) body.model_name = $("train-name").value.trim();
  if ($("train-base").value) body.base_model = $("train-base").value;
  if ($("train-gate").checked) body.activate = true;
  const j = await apiJSON("POST", "/train", { body: JSON.stringify(body), type: "application/json", admin: true });
  job.id = j.id;
  job.model = j.model;
  job.points = [];
  drawLoss();
  $("train-promotion").hidden = true;
  showJob(j);
  follow(j.id);
}

// After a reload: follow the newest job that is still queued or running.
async function resumeTraining() {
  const j = await apiJSON("GET", "/train");
  const live = (j.jobs || []).filter((x) => x.state === "queued" || x.state === "running").pop();
  if (!live || job.id) return;
  job.id = live.id;
  job.model = live.model;
  job.points = [];
  showJob(live);
  follow(live.id);
}

async function cancelTraining() {
  clearError();
  if (job.id) showJob(await apiJSON("DELETE", `/train/${encodeURIComponent(job.id)}`, { admin: true }));
}

// ------------------------------------------------------------ start

function setup() {
  setupCanvas();
  setupDrop();
  const tok = $("token");
  tok.value = sessionStorage.getItem(TOKEN_KEY) || "";
  tok.addEventListener("input", () => {
    if (tok.value) sessionStorage.setItem(TOKEN_KEY, tok.value);
    else sessionStorage.removeItem(TOKEN_KEY);
  });
  const sigma = $("sigma");
  const showSigma = () => { $("sigma-value").textContent = Number(sigma.value).toFixed(2); };
  sigma.addEventListener("input", showSigma);
  showSigma();
  $("run").addEventListener("click", () => runDenoise().catch(showError));
  $("error-close").addEventListener("click", clearError);
  $("models-refresh").addEventListener("click", () => loadModels().catch(showError));
  $("train-form").addEventListener("submit", (ev) => startTraining(ev).catch(showError));
  $("train-cancel").addEventListener("click", () => cancelTraining().catch(showError));
  $("train-activate").addEventListener("click", () => { if (job.model) activate(job.model).then(() => { $("train-activate").disabled = true; }).catch(showError); });
  showImage("original", null);
  showImage("noisy", null);
  showImage("denoised", null);
  drawLoss();
  window.daeRuns = 0;
  Promise.all([loadModels(), loadDatasets(), resumeTraining()])
    .catch((e) => { $("server-state").textContent = "server unreachable"; $("server-state").classList.add("bad"); showError(e); })
    .finally(() => { document.body.dataset.ready = "1"; });
}

document.addEventListener("DOMContentLoaded", setup);
