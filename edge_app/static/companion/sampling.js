// Token sampling with the server's options and order (edge_app/textgen.py Sampler):
// temperature, then top-k, then top-p on the renormalised distribution; temperature 0 is
// greedy (argmax, the first of equal maxima, as numpy's argmax).

import { uniformStream } from "./latent.js";

export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

export function checkSampling({ temperature, topK, topP, seed }) {
  if (!(temperature >= 0 && temperature <= 2)) throw new RangeError(`temperature must be within [0, 2], got ${temperature}`);
  if (!(Number.isInteger(topK) && topK >= 0)) throw new RangeError(`top_k must be an integer >= 0, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`top_p must be within (0, 1], got ${topP}`);
  if (seed !== undefined && !Number.isInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
}

// A function logits (Float32Array) -> token id.
export function makeSampler({ temperature, topK, topP, seed }) {
  checkSampling({ temperature, topK, topP, seed });
  const random = uniformStream(seed ?? Math.floor(Math.random() * 2 ** 53));
  return (logits) => {
    if (temperature === 0) return argmax(logits);
    const z = Float64Array.from(logits, (v) => v / temperature);
    if (z.some((v) => Number.isNaN(v) || v === Infinity)) return argmax(logits);  // T -> 0 limit
    if (topK > 0 && topK < z.length) {
      const kth = Float64Array.from(z).sort()[z.length - topK];
      for (let i = 0; i < z.length; i++) if (z[i] < kth) z[i] = -Infinity;
    }
    const max = Math.max(...z);
    let p = z.map((v) => Math.exp(v - max));
    let total = p.reduce((a, b) => a + b, 0);
    p = p.map((v) => v / total);
    if (topP < 1) {  // the smallest set of most likely tokens whose mass reaches top_p
      const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a]);
      const keep = new Float64Array(p.length);
      let mass = 0;
      for (const i of order) {
        keep[i] = p[i];
        mass += p[i];
        if (mass >= topP) break;
      }
      p = keep;
      total = mass;
    } else {
      total = 1;
    }
    let u = random() * total;
    for (let i = 0; i < p.length; i++) {
      u -= p[i];
      if (u < 0 && p[i] > 0) return i;
    }
    return argmax(p);  // rounding left u >= 0 at the end: the most likely token
  };
}
