// Chat prompts in the page: a bundle's chat template (manifest generation.chat_template, Jinja
// source as in tokenizer_config.json) rendered by the server's rules (edge_app/chat.py, which
// follows transformers' apply_chat_template), with @huggingface/jinja, the engine
// transformers.js uses:
//   - trim_blocks and lstrip_blocks on, one trailing newline of the source dropped: the
//     Template class always lexes that way (Jinja2's keep_trailing_newline is off too);
//   - variables: messages, add_generation_prompt (true: the assistant's turn is next), the
//     bundle's special tokens (bos_token, eos_token, ...), tools and documents none;
//   - raise_exception(message), strftime_now, namespace, tojson without HTML escaping and
//     {% generation %} are the engine's own, as transformers defines them.
// The engine is an interpreter over its own values: a template reaches nothing of the page.

import { Template } from "./huggingface-jinja.mjs";

export class ChatTemplateError extends Error {}

const compiled = new Map();  // source -> Template: compiled once per source

function template(source) {
  if (!compiled.has(source)) {
    try {
      compiled.set(source, new Template(source));
    } catch (err) {
      throw new ChatTemplateError(`the model's chat template does not compile: ${err.message}`);
    }
  }
  return compiled.get(source);
}

// The prompt text for `messages` ([{role, content}]).
export function renderChat(source, messages, specialTokens = {}, addGenerationPrompt = true) {
  try {
    return template(source).render({ messages, add_generation_prompt: addGenerationPrompt,
                                     tools: null, documents: null, ...specialTokens });
  } catch (err) {
    if (err instanceof ChatTemplateError) throw err;
    // raise_exception's message is the template's own (e.g. "roles must alternate")
    throw new ChatTemplateError(`the model's chat template failed on this conversation: ${err.message}`);
  }
}

// A conversation: an optional system prompt, then user and assistant turns.
export class Conversation {
  constructor() { this.turns = []; }

  messages(system = "") {
    return [...(system ? [{ role: "system", content: system }] : []), ...this.turns];
  }

  add(role, content) { this.turns.push({ role, content }); }

  clear() { this.turns = []; }
}

// The prompt's token ids: the rendered text tokenized once, no special tokens added (the
// template wrote them), as apply_chat_template(tokenize=True) does.
export function chatPromptIds(model, messages) {
  const gen = model.gen;
  const text = renderChat(gen.chat_template, messages, gen.special_tokens || {});
  return { text, ids: model.tokenizer.encode(text) };
}
