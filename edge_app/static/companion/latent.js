// Seeded numbers the server draws too: the latent scheme named in the manifest
// (splitmix64-box-muller-v1, specified and implemented in edge_app/latent.py) and, for
// sampling, a SplitMix64 stream. uint64 arithmetic is done with BigInt, masked to 64 bits.

const MASK = (1n << 64n) - 1n;
const G = 0x9E3779B97F4A7C15n;
const M1 = 0xBF58476D1CE4E5B9n;
const M2 = 0x94D049BB133111EBn;
export const MAX_SEED = 2 ** 53 - 1;
export const LATENT_RNGS = ["splitmix64-box-muller-v1"];

// SplitMix64's output finaliser (multiplications wrap modulo 2**64).
function mix(z) {
  z = ((z ^ (z >> 30n)) * M1) & MASK;
  z = ((z ^ (z >> 27n)) * M2) & MASK;
  return z ^ (z >> 31n);
}

// A uint64 -> float64 in (0, 1]: 53 random bits, + 1 so that log() never sees 0.
const unitOpen = (x) => (Number(x >> 11n) + 1) * 2 ** -53;

export function checkSeed(seed) {
  if (!Number.isInteger(seed) || seed < 0 || seed > MAX_SEED) {
    throw new RangeError(`seed must be an integer in [0, ${MAX_SEED}], got ${seed}`);
  }
}

// (n * dim) float32 standard normals: image i of seed s, exactly as edge_app/latent.py.
export function normalLatents(seed, n, dim) {
  checkSeed(seed);
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const key = mix((BigInt(seed) + BigInt(i + 1) * G) & MASK);
    for (let k = 0; k < dim; k += 2) {
      const u1 = unitOpen(mix((key + BigInt(k + 1) * G) & MASK));
      const u2 = unitOpen(mix((key + BigInt(k + 2) * G) & MASK));
      const r = Math.sqrt(-2.0 * Math.log(u1));
      out[i * dim + k] = r * Math.cos(2.0 * Math.PI * u2);
      if (k + 1 < dim) out[i * dim + k + 1] = r * Math.sin(2.0 * Math.PI * u2);
    }
  }
  return out;
}

// Uniform floats in [0, 1) from a SplitMix64 stream seeded with `seed` (for token sampling;
// the server samples with numpy's PCG64, so sampled text is reproducible per runtime, not
// across them: greedy decoding is what matches token for token).
export function uniformStream(seed) {
  checkSeed(seed);
  let state = BigInt(seed);
  return () => {
    state = (state + G) & MASK;
    return Number(mix(state) >> 11n) * 2 ** -53;
  };
}
