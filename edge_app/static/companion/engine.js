// Bundles in the browser: read a bundle as the server does (manifest, checksums, model,
// tokenizer) and run it with onnxruntime-web's wasm backend. Names, shapes and dtypes all
// come from the manifest (schema in edge_app/bundle.py and edge_app/generation.py).

import * as ort from "./ort.wasm.min.mjs";
import { LATENT_RNGS, normalLatents } from "./latent.js";
import { makeSampler } from "./sampling.js";
import { Tokenizer } from "./tokenizer.js";

export const SCHEMA_VERSION = 1;
export const ortVersion = ort.env.versions ? ort.env.versions.web : "unknown";

// One thread by default: more need SharedArrayBuffer, which needs a cross-origin isolated
// page (COOP/COEP headers) that neither the server nor the APK's asset loader sets.
export function configure({ threads = 1 } = {}) {
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = new URL("./", import.meta.url).href;  // never a CDN
  ort.env.wasm.proxy = false;
}

async function fetchBytes(url, headers) {
  const response = await fetch(url, { headers, cache: "no-cache" });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(`${url}: ${response.status} ${detail}`);
  }
  return new Uint8Array(await response.arrayBuffer());
}

const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");

// Size and sha256 as the manifest records them. crypto.subtle exists only in secure contexts
// (https, localhost, the APK's origin); elsewhere the size is checked and the page says so.
async function checkFile(name, bytes, entry) {
  if (bytes.length !== entry.size) {
    throw new Error(`file '${name}' has size ${bytes.length}, manifest says ${entry.size}`);
  }
  if (!globalThis.crypto || !crypto.subtle) return false;
  const actual = hex(await crypto.subtle.digest("SHA-256", bytes));
  if (actual !== entry.sha256) {
    throw new Error(`checksum mismatch for '${name}': manifest sha256 ${entry.sha256}, file sha256 ${actual}`);
  }
  return true;
}

export class Model {
  constructor(manifest, session, tokenizer, verified) {
    Object.assign(this, { manifest, session, tokenizer, verified });
    this.gen = manifest.generation;
  }

  get name() { return this.manifest.name; }
}

// The ops an ONNX Runtime load error names as having no kernel here (or as unknown).
export function missingOps(message) {
  const ops = new Set();
  for (const m of message.matchAll(/implementation for ([\w.]+)\((\d+)\)/g)) ops.add(`${m[1]}(${m[2]})`);
  for (const m of message.matchAll(/([\w.]+:)?(\w+)\((-?\d+)\) is not a registered function\/op/g)) {
    ops.add(`${m[1] || ""}${m[2]}`);
  }
  return [...ops];
}

// An InferenceSession on the wasm backend. onnxruntime-web's wasm build has most of ONNX
// Runtime's CPU kernels, contrib ops included (MatMulNBits, GatherBlockQuantized); when a graph
// needs one it lacks, the error says which op stops this bundle here (the server may run it).
export async function createSession(name, bytes, externalData = []) {
  try {
    return await ort.InferenceSession.create(bytes, {
      executionProviders: ["wasm"], graphOptimizationLevel: "all", externalData,
    });
  } catch (err) {
    const message = String(err.message || err);
    const ops = missingOps(message);
    if (!ops.length) throw err;
    throw new Error(`bundle ${name} cannot run in onnxruntime-web ${ortVersion} (wasm): no kernel for ` +
                    `op ${ops.join(", ")}. The edge server runs it; the page cannot. (${message})`);
  }
}

// Load bundles/<name>/ from `base` (a URL ending in /bundles/); refuses what the server refuses.
export async function loadModel(base, name, headers = {}) {
  const dir = new URL(`${encodeURIComponent(name)}/`, base);
  const manifest = JSON.parse(new TextDecoder().decode(await fetchBytes(new URL("manifest.json", dir), headers)));
  if (manifest.schema_version !== SCHEMA_VERSION) {
    throw new Error(`bundle ${name}: unsupported schema_version ${manifest.schema_version}; the companion reads ${SCHEMA_VERSION}`);
  }
  const modelFile = manifest.model_file || "model.onnx";
  const gen = manifest.generation;
  if (manifest.task === "image-generation" && !LATENT_RNGS.includes(gen.latent.rng)) {
    throw new Error(`bundle ${name}: latent rng '${gen.latent.rng}' is not one the companion implements (${LATENT_RNGS})`);
  }
  const files = {};
  let verified = true;
  for (const [file, entry] of Object.entries(manifest.files)) {
    files[file] = await fetchBytes(new URL(encodeURIComponent(file), dir), headers);
    verified = (await checkFile(file, files[file], entry)) && verified;
  }
  const tokenizerFile = manifest.task === "text-generation" ? gen.tokenizer_file : null;
  const externalData = Object.keys(files).filter((f) => f !== modelFile && f !== tokenizerFile)
    .map((f) => ({ path: f, data: files[f] }));
  const session = await createSession(name, files[modelFile], externalData);
  const tokenizer = tokenizerFile
    ? new Tokenizer(JSON.parse(new TextDecoder().decode(files[tokenizerFile]))) : null;
  return new Model(manifest, session, tokenizer, verified);
}

// ----------------------------------------------------------------------------- images

// n images for `seed`: {latent, images (the graph's float output), pixels (uint8, N*H*W*C,
// the server's to_uint8), shape [n, C, H, W], ms}.
export async function generateImages(model, seed, n) {
  const { latent, image, latent_input, image_output } = model.gen;
  const z = normalLatents(seed, n, latent.dim);
  const started = performance.now();
  const out = await model.session.run({ [latent_input]: new ort.Tensor("float32", z, [n, latent.dim]) });
  const ms = performance.now() - started;
  const images = toFloat32(out[image_output]);
  return { latent: z, images, pixels: toUint8(images, n, image), shape: [n, image.channels, image.height, image.width], ms };
}

// Round half to even, as numpy's rint.
function rint(x) {
  const r = Math.round(x);
  return (Math.abs(x % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
}

// (N, C, H, W) floats in value_range -> (N, H, W, C) uint8, in float32 like edge_app/png.py.
export function toUint8(images, n, { channels, height, width, value_range: [low, high] }) {
  const scale = Math.fround(255 / (high - low));
  const out = new Uint8Array(images.length);
  const plane = height * width;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < channels; c++) {
      for (let p = 0; p < plane; p++) {
        const v = Math.fround(Math.fround(images[(i * channels + c) * plane + p] - low) * scale);
        out[(i * plane + p) * channels + c] = Math.min(255, Math.max(0, rint(v)));
      }
    }
  }
  return out;
}

// ----------------------------------------------------------------------------- text

const F16 = new Float32Array(1);
const F16_BITS = new Uint32Array(F16.buffer);
function halfToFloat(h) {
  const sign = (h & 0x8000) << 16, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp === 0) return (sign ? -1 : 1) * frac * 2 ** -24;
  F16_BITS[0] = sign | (exp === 31 ? 0x7f800000 | (frac << 13) : ((exp + 112) << 23) | (frac << 13));
  return F16[0];
}

function toFloat32(tensor) {
  return tensor.type === "float16" ? Float32Array.from(tensor.data, halfToFloat) : tensor.data;
}

const int64 = (values, dims) => new ort.Tensor("int64", BigInt64Array.from(values, BigInt), dims);

// The server's prompt rule (edge_app/completions.py): an empty prompt starts from BOS.
export function promptIds(model, prompt) {
  return prompt ? model.tokenizer.encode(prompt) : [model.gen.bos_token_id];
}

// Decode with the KV cache, one graph run per token after the prompt (edge_app/textgen.py
// Decoder.stream). onToken(id) is called as each token is chosen; stopAtEos false keeps going
// past an end token (the benchmark's fixed-length runs). Returns the tokens, the finish reason
// and the timings the server reports.
export async function generateText(model, prompt, maxTokens, sampling, onToken = () => {}, { stopAtEos = true } = {}) {
  const gen = model.gen;
  if (prompt.length === 0) throw new Error("the prompt is empty: at least one token is needed");
  if (prompt.length + maxTokens > gen.context_length) {
    throw new Error(`prompt (${prompt.length} tokens) + max_tokens (${maxTokens}) exceeds the model's context length of ${gen.context_length} tokens`);
  }
  const sample = makeSampler(sampling);
  const cache = gen.kv_cache;
  const empty = cache.dtype === "float16" ? new Uint16Array(0) : new Float32Array(0);
  const feed = {};
  for (const layer of cache.layers) {
    for (const input of [layer.key_input, layer.value_input]) {
      feed[input] = new ort.Tensor(cache.dtype, empty, [1, layer.heads, 0, cache.head_dim]);
    }
  }
  const ends = new Set(gen.eos_token_ids || [gen.eos_token_id]);  // any of them ends the text
  const result = { tokens: [], finishReason: "length", promptMs: 0, decodeMs: 0 };
  const started = performance.now();
  let ids = prompt, decodeStart = 0;
  for (let step = 0; step < maxTokens; step++) {
    feed[gen.input_ids] = int64(ids, [1, ids.length]);
    feed[gen.logits_index] = int64([step === 0 ? ids.length - 1 : 0], [1]);
    const out = await model.session.run(feed);
    const token = sample(toFloat32(out[gen.logits_output]));  // (1, 1, vocab)
    const now = performance.now();
    if (step === 0) { result.promptMs = now - started; decodeStart = now; } else { result.decodeMs = now - decodeStart; }
    if (stopAtEos && ends.has(token)) { result.finishReason = "stop"; break; }
    result.tokens.push(token);
    onToken(token);
    for (const layer of cache.layers) {  // this step's present is the next step's past
      feed[layer.key_input] = out[layer.key_output];
      feed[layer.value_input] = out[layer.value_output];
    }
    ids = [token];
  }
  const n = result.tokens.length - 1;
  result.tokensPerSecond = n > 0 && result.decodeMs > 0 ? n / (result.decodeMs / 1000) : null;
  return result;
}
