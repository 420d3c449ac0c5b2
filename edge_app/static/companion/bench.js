// Bench mode: the workloads of `python -m edge_app bench` (edge_app/benchmark.py), run in the
// page, one result file per bundle and repeat in the same schema (edge_app/benchrecord.py), so
// `python -m fleet report` reads a phone as it reads any device.
//
// The page is opened with ?bench=<spec> (base64url JSON, made by fleet/phonebench.py
// bench_spec: bundles, repeats, the workload with its prompts, device, sensor). Each bundle and
// repeat runs in a fresh page (?job=k, then location.replace to k + 1): a fresh document is a
// fresh onnxruntime-web wasm instance, so its memory is that bundle's own, as edge_app bench
// runs each in a fresh process. Results go to a sink: the APK's bridge (window.EdgeGenBench,
// android/.../BenchBridge.java: app storage, where adb pulls them) or, in a plain browser,
// localStorage (tests read it). Power: the bridge's battery sampler (BatteryManager,
// current x voltage at 10 Hz, off the page's thread); without one, null and why.

import { generateImages, generateText, loadModel, ortVersion } from "./engine.js";

export const STORE = "edgegen-bench";  // localStorage: {path: text} of the plain-browser sink
const HZ = 10;

// ------------------------------------------------------------------------ memory the page sees

// Every WebAssembly memory the page creates or instantiates (onnxruntime-web's heap). A wasm
// memory only grows, so its size is its high-water mark.
const memories = new Set();
let watching = false;

export function watchMemory() {
  if (watching) return;
  watching = true;
  const Native = WebAssembly.Memory;
  WebAssembly.Memory = new Proxy(Native, {
    construct(target, args) { const m = Reflect.construct(target, args); memories.add(m); return m; },
  });
  for (const name of ["instantiate", "instantiateStreaming"]) {
    const original = WebAssembly[name];
    if (!original) continue;
    WebAssembly[name] = async function (...args) {
      const result = await original.apply(this, args);
      const instance = result.instance || result;
      for (const v of Object.values(instance.exports || {})) if (v instanceof Native) memories.add(v);
      return result;
    };
  }
}

function pageMemory() {
  let wasm = 0;
  for (const m of memories) wasm += m.buffer.byteLength;
  const heap = performance.memory ? performance.memory.usedJSHeapSize : null;
  return { wasm, heap, total: wasm + (heap || 0) };
}

// ------------------------------------------------------------------------ statistics

// Round half to even, as Python's round() (the p95 rank must match edge_app's).
function roundEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
function stdev(xs) {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}

// edge_app.benchmark.latency_stats
export function latencyStats(seconds) {
  const ordered = [...seconds].sort((a, b) => a - b);
  const n = ordered.length;
  const median = n % 2 ? ordered[(n - 1) / 2] : (ordered[n / 2 - 1] + ordered[n / 2]) / 2;
  return { n, p50_s: median, p95_s: ordered[Math.min(n - 1, roundEven(0.95 * (n - 1)))],
           mean_s: mean(seconds), std_s: stdev(seconds) };
}

// ------------------------------------------------------------------------ power

// The bridge's battery sampler: start() begins 10 Hz sampling; stop() returns the samples as
// [seconds since start, watts or null (on the charger)], in the page's time once offset.
class BridgePower {
  constructor(bridge) { this.bridge = bridge; }
  start() {
    const err = this.bridge.powerStart();
    if (err) throw new Error(`power: ${err}`);
    this.origin = performance.now() / 1000;
  }
  stop() {
    const { samples, error } = JSON.parse(this.bridge.powerStop());
    if (error) throw new Error(`power: ${error}`);
    return samples.filter(([, w]) => w !== null).map(([t, w]) => [this.origin + t, w]);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The smallest step of performance.now() here, in seconds: browsers coarsen it (Chromium:
// 100 µs, 5 µs when cross-origin isolated), so a run shorter than that can time as 0.
function timerResolution() {
  let best = Infinity, last = performance.now();
  for (let seen = 0, spins = 0; seen < 20 && spins < 1e7; spins++) {
    const now = performance.now();
    if (now !== last) { best = Math.min(best, now - last); last = now; seen++; }
  }
  return best / 1000;
}

// Joules in [t0, t1] by the trapezoid rule, the ends interpolated (edge_app/power/sampler.py
// energy); null when no sample is near the window.
export function energy(samples, t0, t1) {
  if (!samples.length || samples[samples.length - 1][0] < t0 - 5 / HZ || samples[0][0] > t1) return null;
  const at = (t) => {
    const i = samples.findIndex(([ts]) => ts >= t);
    if (i === 0) return samples[0][1];
    if (i === -1) return samples[samples.length - 1][1];
    const [[ta, wa], [tb, wb]] = [samples[i - 1], samples[i]];
    return tb > ta ? wa + (wb - wa) * (t - ta) / (tb - ta) : wb;
  };
  const points = [[t0, at(t0)], ...samples.filter(([t]) => t > t0 && t < t1), [t1, at(t1)]];
  let joules = 0;
  for (let i = 1; i < points.length; i++) {
    const [[ta, wa], [tb, wb]] = [points[i - 1], points[i]];
    joules += (tb - ta) * (wa + wb) / 2;
  }
  return joules;
}

async function measureBaseline(power, seconds) {
  power.start();
  await sleep(seconds * 1000);
  const samples = power.stop();
  return samples.length ? mean(samples.map(([, w]) => w)) : null;
}

// benchmark._window: work() (resolves to items produced) back to back for window_s.
// `note` says why there is no baseline (no sensor, window disabled, on the charger).
async function powerWindow(spec, power, baseline, note, work) {
  const w = spec.workload;
  if (baseline === null) return { power_w: null, energy_j: null, energy_note: note };
  power.start();
  let items = 0;
  const t0 = performance.now() / 1000;
  while (performance.now() / 1000 - t0 < w.window_s) items += await work();
  const t1 = performance.now() / 1000;
  await sleep(2000 / HZ);  // a sample after the window's end
  const raw = energy(power.stop(), t0, t1);
  if (raw === null) return { power_w: null, energy_j: null, energy_note: "no samples in the window (on the charger?)" };
  const joules = raw - baseline * (t1 - t0);
  return { power_w: joules / (t1 - t0), energy_j: joules, window_s: t1 - t0, items,
           energy_per_item_j: items ? joules / items : null };
}

// ------------------------------------------------------------------------ workloads

async function timed(fn) {
  const started = performance.now();
  const result = await fn();
  return [(performance.now() - started) / 1000, result];
}

async function benchImages(m, spec, power, baseline, note) {
  const w = spec.workload, out = {};
  for (const batch of w.image_batches) {
    for (let i = 0; i < w.warmup; i++) await generateImages(m, w.seed + i, batch);
    const times = [];
    for (let i = 0; i < w.runs; i++) times.push((await timed(() => generateImages(m, w.seed + i, batch)))[0]);
    const stats = latencyStats(times);
    let seed = w.seed;
    out[`batch_${batch}`] = {
      // null, not infinity, when every run was shorter than the timer's resolution
      batch, latency: stats, images_per_s: stats.mean_s > 0 ? batch / stats.mean_s : null,
      power: await powerWindow(spec, power, baseline, note, async () => {
        await generateImages(m, seed++, batch);
        return batch;
      }),
    };
  }
  return out;
}

async function benchText(m, spec, power, baseline, note) {
  const w = spec.workload, ctx = m.gen.context_length;
  // Prompts keep at most half the context, so every run has room for new tokens.
  const prompts = w.prompts.map((p) => m.tokenizer.encode(p).slice(0, Math.max(1, Math.floor(ctx / 2))));
  const news = prompts.map((p) => Math.min(w.new_tokens, ctx - p.length));
  const greedy = { temperature: 0, topK: 0, topP: 1 };
  const run = (i) => {
    const k = i % prompts.length;
    return generateText(m, prompts[k], news[k], greedy, () => {}, { stopAtEos: false });  // fixed length
  };
  for (let i = 0; i < w.warmup; i++) await run(i);
  const latency = [], ttft = [], tps = [];
  for (let i = 0; i < w.runs; i++) {
    const [seconds, gen] = await timed(() => run(i));
    latency.push(seconds);
    ttft.push(gen.promptMs / 1000);
    if (gen.tokensPerSecond) tps.push(gen.tokensPerSecond);
  }
  let counter = 0;
  return { generate: {
    new_tokens: news, prompt_tokens: prompts.map((p) => p.length),
    latency: latencyStats(latency), time_to_first_token: latencyStats(ttft),
    tokens_per_s_mean: tps.length ? mean(tps) : null, tokens_per_s_std: tps.length > 1 ? stdev(tps) : 0,
    power: await powerWindow(spec, power, baseline, note, async () => (await run(counter++)).tokens.length),
  } };
}

// ------------------------------------------------------------------------ the record

const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");

async function manifestFacts(base, name) {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new Error("bench mode needs a secure context (https, 127.0.0.1, the APK's origin) for sha256");
  }
  const dir = new URL(`${encodeURIComponent(name)}/`, base);
  const response = await fetch(new URL("manifest.json", dir), { cache: "no-cache" });
  if (!response.ok) throw new Error(`bundle ${name}: manifest.json: ${response.status}`);
  const bytes = await response.arrayBuffer();
  const m = JSON.parse(new TextDecoder().decode(bytes));
  const recipe = (m.provenance || {}).recipe || {};
  const metrics = Object.fromEntries(Object.entries(m.metrics || {}).filter(([k]) => k !== "measured"));
  return { dir: dir.href, sha256: hex(await crypto.subtle.digest("SHA-256", bytes)), facts: {
    name: m.name, task: m.task, family: m.family, precision: m.precision,
    techniques: (m.techniques || []).map((t) => t.name), metrics,
    model_sha256: m.files[m.model_file || "model.onnx"].sha256,
    recipe: { path: recipe.path ?? null, sha256: recipe.sha256 ?? null } } };
}

// edge_app.system.cpu_info, from what the bridge reads (/proc/cpuinfo) or the page can see.
function cpuInfo(spec, device) {
  const lines = (device.cpuinfo || "").split("\n");
  const field = (names) => {
    const line = lines.find((l) => names.includes(l.split(":")[0].trim()));
    return line ? line.split(":").slice(1).join(":").trim() : "";
  };
  const flags = new Set(field(["flags", "Features"]).split(/\s+/));
  const cpu = { model: field(["model name", "Model", "Hardware"]) || device.model || navigator.userAgent,
                arch: device.arch || navigator.platform || "unknown",
                logical_cpus: navigator.hardwareConcurrency || null };
  for (const f of spec.cpu_features) cpu[f] = device.cpuinfo ? flags.has(f) : null;  // null: not readable here
  return cpu;
}

function method(spec, device, baseline, threads, note) {
  const resolution = timerResolution();
  const power = baseline !== null
    ? { sensor: spec.sensor, scope: spec.power_scope, hz: HZ, idle_baseline_w: baseline,
        method: "energy above the idle baseline over a back-to-back window, trapezoid rule; " +
                "BatteryManager current_now x voltage, sampled by the app at 10 Hz" }
    : { sensor: null, note };
  return {
    tool: spec.tool, workload: spec.workload, repeats: spec.repeats, power,
    latency: `performance.now() around each run (its resolution here: ${(resolution * 1e6).toPrecision(3)} µs); ` +
             "p95 by nearest rank",
    timer_resolution_s: resolution,
    peak_rss: "not RSS (a page cannot read its process's): onnxruntime-web's WebAssembly memory " +
              "(its high-water mark: wasm memory never shrinks) + the JS heap in use " +
              "(performance.memory, where the browser has it), in a fresh page per bundle and repeat",
    runtime: { onnxruntime: `web ${ortVersion} (wasm, ${threads} thread${threads > 1 ? "s" : ""})`,
               available_providers: ["wasm"], browser: navigator.userAgent,
               ...(device.android ? { android: device.android } : {}) },
    cpu: cpuInfo(spec, device),
  };
}

// ------------------------------------------------------------------------ sinks and the run

class BridgeSink {
  constructor(bridge) { this.bridge = bridge; }
  reset() { const err = this.bridge.reset(); if (err) throw new Error(err); }
  write(path, text) { const err = this.bridge.write(path, text); if (err) throw new Error(`write ${path}: ${err}`); }
}

class LocalSink {
  files() { return JSON.parse(localStorage.getItem(STORE) || "{}"); }
  reset() { localStorage.setItem(STORE, "{}"); }
  write(path, text) { localStorage.setItem(STORE, JSON.stringify({ ...this.files(), [path]: text })); }
}

export function decodeSpec(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))));
}

// Run job `job` of the spec's bundles x repeats (bundle by bundle, as edge_app bench), write
// its record and the run's status.json, then open the next job's page. `show(text)` shows
// progress; the returned promise settles when this page's job is done.
export async function runBench(query, { bundles, threads, show }) {
  watchMemory();
  const bridge = window.EdgeGenBench || null;
  const sink = bridge ? new BridgeSink(bridge) : new LocalSink();
  const spec = decodeSpec(query.get("bench"));
  const job = parseInt(query.get("job") || "0", 10);
  const jobs = spec.bundles.flatMap((b) => Array.from({ length: spec.repeats }, (_, i) => [b, i + 1]));
  const status = (state, extra = {}) => {
    const s = { run: spec.run, state, job, jobs: jobs.length, ...extra };
    sink.write("status.json", JSON.stringify(s));
    document.body.dataset.bench = state;
    show(`bench ${state}: ${extra.progress || extra.error || ""}`);
  };
  const files = JSON.parse(query.get("files") || "[]");
  try {
    if (job === 0) sink.reset();
    const device = { bridge: Boolean(bridge), ...(bridge ? JSON.parse(bridge.deviceInfo()) : {}) };
    const power = spec.sensor !== "none" && bridge ? new BridgePower(bridge) : null;
    let baseline = query.has("baseline") ? JSON.parse(query.get("baseline")) : null;
    if (job === 0 && power && spec.workload.window_s > 0) {
      status("running", { progress: `idle baseline, ${spec.baseline_s} s`, files });
      baseline = await measureBaseline(power, spec.baseline_s);
    }
    // Why a figure has no power (as edge_app bench says it); the battery reads nothing on USB power.
    const note = !power ? spec.no_sensor : spec.workload.window_s <= 0 ? "power window disabled"
      : baseline === null ? spec.charging_note : null;
    const [name, repeat] = jobs[job];
    status("running", { progress: `[${job + 1}/${jobs.length}] ${name} repeat ${repeat}`, files });
    const facts = await manifestFacts(bundles, name);
    const before = pageMemory();
    const m = await loadModel(bundles, name);
    const task = m.manifest.task;
    const workloads = await (task === "text-generation" ? benchText : benchImages)(m, spec, power, baseline, note);
    const after = pageMemory();
    const record = {
      device: spec.device, device_class: spec.device_class, repeat,
      bundle_dir: facts.dir, manifest_sha256: facts.sha256, manifest: facts.facts,
      bundle: name, task, runtime: `onnxruntime-web-${ortVersion}-wasm`, providers: ["wasm"], workloads,
      memory: { peak_rss_bytes: after.total, rss_before_load_bytes: before.total,
                wasm_memory_bytes: after.wasm, js_heap_bytes: after.heap },
      method: method(spec, device, baseline, threads, note),
      measured_at: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    };
    const path = `${spec.device}/${name}/repeat-${repeat}.json`;
    sink.write(path, JSON.stringify(record, null, 1) + "\n");
    files.push(path);
    if (job + 1 < jobs.length) {
      status("running", { progress: `[${job + 1}/${jobs.length}] ${name} repeat ${repeat}: done`, files });
      const next = new URL(location.href);
      next.searchParams.set("job", String(job + 1));
      next.searchParams.set("baseline", JSON.stringify(baseline));
      next.searchParams.set("files", JSON.stringify(files));
      location.replace(next.href);
    } else {
      status("done", { progress: `[${jobs.length}/${jobs.length}] all measured`, files });
    }
  } catch (err) {
    status("failed", { error: String(err.message || err), files });
    console.warn(err);
  }
}
