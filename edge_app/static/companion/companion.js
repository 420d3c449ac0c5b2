// The companion page's controls: list the bundles, run them (engine.js), show latency and
// tokens/s per run, push the figures when a fleet address is set. A text bundle with a chat
// template chats (chat.js renders the conversation); one without completes a prompt. Settings
// come from the query string (the APK passes its intent extras that way) or localStorage.
// window.companion.last holds the latest run's raw results (tests read them). With ?bench=
// the page runs the fleet's benchmark instead (bench.js).

import { Conversation, chatPromptIds } from "./chat.js";
import { configure, generateImages, generateText, loadModel, ortVersion, promptIds } from "./engine.js";
import { CHAT_ENDPOINT, DEVICE_NAME, PhoneMetrics } from "./metrics.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const BUNDLES = new URL("../bundles/", location.href);
const SETTINGS = { pushgateway: "edgegen-pushgateway", device: "edgegen-device", key: "edgegen-key" };
const threads = Math.max(1, parseInt(query.get("threads") || "1", 10) || 1);
const metrics = new PhoneMetrics(`onnxruntime-web-${ortVersion}-wasm`);
const models = new Map();  // name -> Promise<Model>
const listed = new Map();  // name -> its entry in bundles/index.json
const conversation = new Conversation();
const state = { last: { image: null, text: null, chat: null }, push: null };
window.companion = state;

for (const [field, key] of Object.entries(SETTINGS)) {
  if (query.has(field)) localStorage.setItem(key, query.get(field));
  $(field).value = localStorage.getItem(key) || "";
}

function show(target, text, error = false) {
  target.textContent = text;
  target.classList.toggle("error", error);
}

function headers() {
  return $("key").value ? { Authorization: `Bearer ${$("key").value}` } : {};
}

function intField(id, low, high, optional = false) {
  const raw = $(id).value.trim();
  if (optional && raw === "") return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < low || value > high) {
    throw new RangeError(`${id} must be an integer within [${low}, ${high}], got '${raw}'`);
  }
  return value;
}

function numberField(id) {
  const value = Number($(id).value);
  if ($(id).value.trim() === "" || !Number.isFinite(value)) throw new RangeError(`${id} must be a number`);
  return value;
}

function model(name) {
  if (!models.has(name)) {
    show($("status"), `loading ${name}…`);
    const loading = loadModel(BUNDLES, name, headers()).then((m) => {
      show($("status"), `${name}: loaded, ${m.verified ? "sha256 verified" : "sizes checked (no sha256: not a secure context)"}`);
      return m;
    });
    loading.catch(() => models.delete(name));
    models.set(name, loading);
  }
  return models.get(name);
}

async function listBundles() {
  const response = await fetch(new URL("index.json", BUNDLES), { headers: headers(), cache: "no-cache" });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(`bundle list: ${response.status} ${detail}`);
  }
  const { bundles } = await response.json();
  listed.clear();
  for (const b of bundles) listed.set(b.name, b);
  for (const [select, task] of [["image-model", "image-generation"], ["text-model", "text-generation"]]) {
    $(select).replaceChildren(...bundles.filter((b) => b.task === task).map((b) => new Option(`${b.name} (${b.precision})`, b.name)));
  }
  textMode();
  show($("status"), `${bundles.length} bundle(s): ${bundles.map((b) => b.name).join(", ") || "none"}`);
}

async function push() {
  const gateway = $("pushgateway").value.trim(), device = $("device").value.trim();
  if (!gateway) { show($("push-status"), "metrics: no fleet address set, nothing sent"); return; }
  try {
    state.push = await metrics.push(gateway, device);
    show($("push-status"), `metrics pushed ${new Date().toLocaleTimeString()} to ${state.push}`);
  } catch (err) {
    show($("push-status"), `metrics push failed: ${err.message}`, true);
  }
}

// Run `body`, count it (ok or failed) for the fleet under `endpoint` (default: the bundle
// task's route), then push; errors are shown, not thrown.
async function run(button, target, work, endpoint = undefined) {
  button.disabled = true;
  let m = null;
  const started = performance.now();
  try {
    const record = await work((loaded) => { m = loaded; });
    metrics.record(m.manifest, { seconds: (performance.now() - started) / 1000, endpoint, ...record });
  } catch (err) {
    if (m) metrics.record(m.manifest, { seconds: 0, ok: false, endpoint });
    show(target, String(err.message || err), true);
    console.warn(err);
  } finally {
    button.disabled = false;
  }
  if (m) await push();
  document.body.dataset.runs = String(Number(document.body.dataset.runs || 0) + 1);
}

function draw(result, spec) {
  const [n, channels, height, width] = result.shape;
  const canvases = [];
  for (let i = 0; i < n; i++) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    const rgba = ctx.createImageData(width, height);
    for (let p = 0; p < width * height; p++) {
      for (let c = 0; c < 3; c++) rgba.data[p * 4 + c] = result.pixels[(i * width * height + p) * channels + (channels === 3 ? c : 0)];
      rgba.data[p * 4 + 3] = 255;
    }
    ctx.putImageData(rgba, 0, 0);
    canvas.title = `seed ${spec.seed}, image ${i}`;
    canvases.push(canvas);
  }
  $("images").replaceChildren(...canvases);
}

$("generate").addEventListener("click", () => run($("generate"), $("image-figures"), async (loaded) => {
  const name = $("image-model").value;
  if (!name) throw new Error("no image bundle is available");
  const seed = intField("image-seed", 0, 2 ** 53 - 1), n = intField("n", 1, 16);
  show($("image-figures"), "generating…");
  const m = await model(name);
  loaded(m);
  const result = await generateImages(m, seed, n);
  state.last.image = { model: name, seed, n, ...result };
  draw(result, { seed });
  show($("image-figures"), `latency ${result.ms.toFixed(1)} ms · ${n} image(s) · ${(n / (result.ms / 1000)).toFixed(1)} images/s`);
  return { images: n };
}));

function sampling() {
  return { temperature: numberField("temperature"), topK: intField("top-k", 0, 1 << 30),
           topP: numberField("top-p"), seed: intField("text-seed", 0, 2 ** 53 - 1, true) };
}

function showTextFigures(latency, result) {
  const rate = result.tokensPerSecond === null ? "n/a" : result.tokensPerSecond.toFixed(1);
  show($("text-figures"), `latency ${latency.toFixed(1)} ms · first token ${result.promptMs.toFixed(1)} ms · ` +
       `${rate} tokens/s · ${result.tokens.length} tokens · finish: ${result.finishReason}`);
}

$("complete").addEventListener("click", () => run($("complete"), $("text-figures"), async (loaded) => {
  const name = $("text-model").value;
  if (!name) throw new Error("no text bundle is available");
  const options = sampling(), maxTokens = intField("max-tokens", 1, 4096);
  show($("text-figures"), "loading…");
  const m = await model(name);
  loaded(m);
  const prompt = $("prompt").value;
  const ids = promptIds(m, prompt);
  const tokens = [];
  show($("text-figures"), "generating…");
  const started = performance.now();
  const result = await generateText(m, ids, maxTokens, options, (id) => {
    tokens.push(id);
    $("completion").textContent = prompt + m.tokenizer.decode(tokens);
  });
  const latency = performance.now() - started;
  const text = m.tokenizer.decode(result.tokens);
  $("completion").textContent = prompt + text;
  state.last.text = { model: name, prompt, promptIds: ids, text, maxTokens, sampling: options, latencyMs: latency, ...result };
  showTextFigures(latency, result);
  return { tokens: result.tokens.length, ttftSeconds: result.promptMs / 1000 };
}));

// ----------------------------------------------------------------------------- chat

// Chat for a bundle with a chat template, completion for one without; a new bundle starts a
// new conversation.
function textMode() {
  const entry = listed.get($("text-model").value);
  const chat = Boolean(entry && entry.chat);
  $("chat-box").hidden = !chat;
  $("completion-box").hidden = chat;
  conversation.clear();
  showTranscript();
}

// The conversation, and `pending` turns (the message being answered, the reply so far).
function showTranscript(pending = []) {
  $("transcript").replaceChildren(...[...conversation.turns, ...pending].map(({ role, content }) => {
    const p = document.createElement("p");
    p.className = role;
    const who = document.createElement("b");
    who.textContent = role;
    p.append(who, content);  // text, never HTML
    return p;
  }));
}

$("send").addEventListener("click", () => run($("send"), $("text-figures"), async (loaded) => {
  const name = $("text-model").value;
  const options = sampling(), maxTokens = intField("max-tokens", 1, 4096);
  const content = $("message").value;
  if (!content.trim()) throw new Error("the message is empty");
  show($("text-figures"), "loading…");
  const m = await model(name);
  loaded(m);
  if (!m.gen.chat_template) throw new Error(`bundle ${name} has no chat template`);
  const messages = [...conversation.messages($("system").value.trim()), { role: "user", content }];
  const { text: prompt, ids } = chatPromptIds(m, messages);
  const tokens = [];
  show($("text-figures"), "generating…");
  showTranscript([{ role: "user", content }]);
  const started = performance.now();
  let result;
  try {
    result = await generateText(m, ids, maxTokens, options, (id) => {
      tokens.push(id);
      showTranscript([{ role: "user", content }, { role: "assistant", content: m.tokenizer.decode(tokens) }]);
    });
  } catch (err) {
    showTranscript();  // a failed turn is not kept: the message stays in its box to resend
    throw err;
  }
  const latency = performance.now() - started;
  const reply = m.tokenizer.decode(result.tokens);
  conversation.add("user", content);
  conversation.add("assistant", reply);
  showTranscript();
  $("message").value = "";
  state.last.chat = { model: name, messages, prompt, promptIds: ids, text: reply, maxTokens, sampling: options,
                      latencyMs: latency, ...result };
  showTextFigures(latency, result);
  return { tokens: result.tokens.length, ttftSeconds: result.promptMs / 1000 };
}, CHAT_ENDPOINT));

$("new-chat").addEventListener("click", textMode);
$("text-model").addEventListener("change", textMode);

$("settings").addEventListener("submit", (event) => {
  event.preventDefault();
  const device = $("device").value.trim();
  if ($("pushgateway").value.trim() && !DEVICE_NAME.test(device)) {
    show($("push-status"), `device name must match ${DEVICE_NAME}`, true);
    return;
  }
  for (const [field, key] of Object.entries(SETTINGS)) localStorage.setItem(key, $(field).value.trim());
  models.clear();
  show($("push-status"), "saved");
  listBundles().catch((err) => show($("status"), err.message, true));
});

configure({ threads });
$("runtime").textContent = `onnxruntime-web ${ortVersion}, wasm backend, ${threads} thread${threads > 1 ? "s" : ""}`;
if (query.has("bench")) {
  // Bench mode (bench.js): the fleet's benchmark, driven by `make bench DEVICE=pixel`.
  import("./bench.js").then(({ runBench }) => runBench(query, {
    bundles: BUNDLES, threads, show: (text) => show($("status"), text) }))
    .finally(() => { document.body.dataset.ready = "1"; });
} else {
  listBundles().catch((err) => show($("status"), err.message, true))
    .finally(() => { document.body.dataset.ready = "1"; });
}
