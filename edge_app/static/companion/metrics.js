// The page's own figures in the server's metric names (edge_app/metrics.py), pushed to the
// fleet's Pushgateway as Prometheus text: phones sit behind NAT and cannot be scraped, so
// monitoring/prometheus/prometheus.yml scrapes the Pushgateway (job edgegen-phones). The group
// is /metrics/job/edgegen-phone/device/<name>, the `device` label every fleet rule keeps.
// Runs are labelled with the route the server would have served them on (a chat turn:
// /v1/chat/completions), so the recording rules and dashboards, which select by endpoint,
// count phones alongside servers.

// edge_app/metrics.py LATENCY_BUCKETS (a unit test keeps the two equal).
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
  10.0, 30.0, 60.0, 120.0, 300.0];
export const JOB = "edgegen-phone";
export const ENDPOINTS = { "image-generation": "/v1/images/generations", "text-generation": "/v1/completions" };
export const CHAT_ENDPOINT = "/v1/chat/completions";
export const DEVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

const label = (v) => String(v).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
const labels = (obj) => "{" + Object.entries(obj).map(([k, v]) => `${k}="${label(v)}"`).join(",") + "}";

class Histogram {
  constructor() { this.counts = LATENCY_BUCKETS.map(() => 0); this.sum = 0; this.count = 0; }
  observe(seconds) {
    LATENCY_BUCKETS.forEach((le, i) => { if (seconds <= le) this.counts[i] += 1; });
    this.sum += seconds;
    this.count += 1;
  }
  lines(name, base) {
    return [
      ...LATENCY_BUCKETS.map((le, i) => `${name}_bucket${labels({ ...base, le: String(le) })} ${this.counts[i]}`),
      `${name}_bucket${labels({ ...base, le: "+Inf" })} ${this.count}`,
      `${name}_sum${labels(base)} ${this.sum}`,
      `${name}_count${labels(base)} ${this.count}`,
    ];
  }
}

// Counters since the page was opened (a reopened page starts at 0 again, which Prometheus
// reads as a counter reset, as after a server restart).
export class PhoneMetrics {
  constructor(runtime) {
    this.runtime = runtime;
    this.models = new Map();  // name -> {info, routes: endpoint -> {requests, duration}, ttft, tokens, images}
  }

  model(manifest) {
    if (!this.models.has(manifest.name)) {
      this.models.set(manifest.name, {
        info: { model: manifest.name, family: manifest.family, task: manifest.task,
                precision: manifest.precision, runtime: this.runtime,
                schema_version: String(manifest.schema_version) },
        routes: new Map(), ttft: new Histogram(), tokens: 0, images: 0,
      });
    }
    return this.models.get(manifest.name);
  }

  // One finished run: seconds end to end; ok false for a run that failed; endpoint the route
  // the server would have served it on (default: the task's).
  record(manifest, { seconds, ok = true, ttftSeconds = null, tokens = 0, images = 0, endpoint = ENDPOINTS[manifest.task] }) {
    const m = this.model(manifest);
    if (!m.routes.has(endpoint)) m.routes.set(endpoint, { requests: { 200: 0, 500: 0 }, duration: new Histogram() });
    const route = m.routes.get(endpoint);
    route.requests[ok ? 200 : 500] += 1;
    if (!ok) return;
    route.duration.observe(seconds);
    if (ttftSeconds !== null) m.ttft.observe(ttftSeconds);
    m.tokens += tokens;
    m.images += images;
  }

  text() {
    const out = [];
    const family = (name, type, help, rows) => {
      if (rows.length) out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...rows);
    };
    const all = [...this.models.values()];
    const routes = all.flatMap((m) => [...m.routes].map(([endpoint, r]) => ({ model: m.info.model, endpoint, ...r })));
    family("edgegen_requests_total", "counter", "Generations run on this phone, by model, route and status.",
           routes.flatMap((r) => Object.entries(r.requests).map(([status, n]) =>
             `edgegen_requests_total${labels({ model: r.model, endpoint: r.endpoint, status })} ${n}`)));
    family("edgegen_request_duration_seconds", "histogram", "Time from request to result.",
           routes.flatMap((r) => r.duration.lines("edgegen_request_duration_seconds", { model: r.model, endpoint: r.endpoint })));
    const text = all.filter((m) => m.info.task === "text-generation");
    const images = all.filter((m) => m.info.task === "image-generation");
    family("edgegen_time_to_first_token_seconds", "histogram", "Prompt processing and first token.",
           text.flatMap((m) => m.ttft.lines("edgegen_time_to_first_token_seconds", { model: m.info.model })));
    family("edgegen_generated_tokens_total", "counter", "Tokens generated.",
           text.map((m) => `edgegen_generated_tokens_total${labels({ model: m.info.model })} ${m.tokens}`));
    family("edgegen_generated_images_total", "counter", "Images generated.",
           images.map((m) => `edgegen_generated_images_total${labels({ model: m.info.model })} ${m.images}`));
    family("edgegen_model_info", "gauge", "Models this phone ran (value 1), with their manifest facts.",
           all.map((m) => `edgegen_model_info${labels(m.info)} 1`));
    return out.join("\n") + "\n";
  }

  // POST (replaces these metric names in this phone's group, keeps the rest). The Pushgateway
  // sends no CORS headers, so the request is sent as a simple no-cors POST: it arrives, but
  // its status cannot be read; a network failure still rejects.
  async push(gateway, device) {
    if (!DEVICE_NAME.test(device)) throw new Error(`device name must match ${DEVICE_NAME}, got ${JSON.stringify(device)}`);
    const url = `${gateway.replace(/\/+$/, "")}/metrics/job/${JOB}/device/${device}`;
    await fetch(url, { method: "POST", mode: "no-cors", body: this.text(),
                       headers: { "Content-Type": "text/plain" } });
    return url;
  }
}
