// A bundle's tokenizer.json (Hugging Face `tokenizers` format) in plain JS: byte-level BPE,
// GPT-2's scheme, which is what optimizer/text/tokenizer.py writes. Anything else is refused
// with a message naming the part, rather than tokenized differently from the server.

// GPT-2's pre-tokenizer split (the `tokenizers` ByteLevel pre-tokenizer, use_regex: true).
const SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

// Bytes <-> printable characters: bytes that are printable stand for themselves, the others
// are moved to 256 + i, so every byte string is a string of visible characters.
function byteChars() {
  const keep = [];
  for (const [lo, hi] of [[33, 126], [161, 172], [174, 255]]) {
    for (let b = lo; b <= hi; b++) keep.push(b);
  }
  const toChar = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    toChar[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + extra++);
  }
  const toByte = new Map(toChar.map((c, b) => [c, b]));
  return [toChar, toByte];
}

const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

function refuse(part, got) {
  throw new Error(`tokenizer.json: the companion reads byte-level BPE tokenizers (GPT-2's ` +
                  `scheme) only; ${part} is ${JSON.stringify(got)}`);
}

export class Tokenizer {
  constructor(json) {
    const model = json.model || {};
    if (model.type !== "BPE") refuse("model.type", model.type);
    if (json.normalizer) refuse("normalizer", json.normalizer.type);
    if (!json.pre_tokenizer || json.pre_tokenizer.type !== "ByteLevel" ||
        json.pre_tokenizer.add_prefix_space || json.pre_tokenizer.use_regex === false) {
      refuse("pre_tokenizer", json.pre_tokenizer);
    }
    if (json.post_processor && json.post_processor.type !== "ByteLevel") {
      refuse("post_processor", json.post_processor.type);
    }
    if (model.byte_fallback || model.continuing_subword_prefix || model.end_of_word_suffix) {
      refuse("model options", {byte_fallback: model.byte_fallback});
    }
    this.vocab = new Map(Object.entries(model.vocab));
    this.ignoreMerges = Boolean(model.ignore_merges);
    // merges: "a b" strings (older files) or ["a", "b"] pairs; rank = position.
    this.ranks = new Map(model.merges.map((m, i) => [Array.isArray(m) ? m.join(" ") : m, i]));
    this.added = new Map((json.added_tokens || []).map((t) => [t.content, t]));
    this.idToToken = new Map([...this.vocab].map(([t, id]) => [id, t]));
    for (const t of this.added.values()) this.idToToken.set(t.id, t.content);
    this.addedSplit = this.added.size
      ? new RegExp(`(${[...this.added.keys()].map(escapeRegExp).join("|")})`, "u") : null;
    [this.toChar, this.toByte] = byteChars();
    this.cache = new Map();
  }

  // Merge one pre-token's characters, the lowest-ranked adjacent pair first, until none merges.
  bpe(word) {
    if (this.cache.has(word)) return this.cache.get(word);
    let parts = Array.from(word);
    if (this.ignoreMerges && this.vocab.has(word)) parts = [word];
    while (parts.length > 1) {
      let best = -1, bestRank = Infinity;
      for (let i = 0; i < parts.length - 1; i++) {
        const rank = this.ranks.get(parts[i] + " " + parts[i + 1]);
        if (rank !== undefined && rank < bestRank) { best = i; bestRank = rank; }
      }
      if (best < 0) break;
      const [a, b] = [parts[best], parts[best + 1]];
      const merged = [];
      for (let i = 0; i < parts.length; i++) {  // every occurrence, left to right
        if (i < parts.length - 1 && parts[i] === a && parts[i + 1] === b) {
          merged.push(a + b);
          i++;
        } else {
          merged.push(parts[i]);
        }
      }
      parts = merged;
    }
    const ids = parts.map((p) => {
      const id = this.vocab.get(p);
      if (id === undefined) throw new Error(`tokenizer.json: no id for piece ${JSON.stringify(p)}`);
      return id;
    });
    this.cache.set(word, ids);
    return ids;
  }

  encode(text) {
    const ids = [];
    const pieces = this.addedSplit ? text.split(this.addedSplit) : [text];
    for (const piece of pieces) {
      if (this.added.has(piece)) { ids.push(this.added.get(piece).id); continue; }
      for (const word of piece.match(SPLIT) || []) {
        const bytes = new TextEncoder().encode(word);
        ids.push(...this.bpe(Array.from(bytes, (b) => this.toChar[b]).join("")));
      }
    }
    return ids;
  }

  // Special added tokens are skipped, as `tokenizers` decode() does by default.
  decode(ids) {
    const bytes = [];
    for (const id of ids) {
      const token = this.idToToken.get(id);
      if (token === undefined) throw new Error(`token id ${id} is not in the vocabulary`);
      const added = this.added.get(token);
      if (added && added.special) continue;
      for (const ch of token) {
        const b = this.toByte.get(ch);
        if (b !== undefined) bytes.push(b); else bytes.push(...new TextEncoder().encode(ch));
      }
    }
    return new TextDecoder("utf-8").decode(new Uint8Array(bytes));
  }
}
