"""The serving wing: every reply the app shows comes from here, by one `Generation` protocol
(`protocol`) that the service, the evaluator and the app depend on, whichever engine serves.

- `protocol`: what an engine offers (`Generation`), how a request decodes (`Sampling`) and the
  name of the bare base (`BASE`);
- `generation`: the in-process engine, one scheduler thread over the one base model;
- `batching`: its continuous batching (rows join and leave a running batch at every step), also
  the evaluator's own decoding path (`decode_all`);
- `static`: static batching (one `model.generate` a batch), the benchmarks' baseline scheduler;
- `prefix_cache`: the KV cache a conversation's last reply leaves for its next message;
- `adapters`: the groups' LoRA adapters by name, and which of them replies in flight use;
- `vllm_engine`: the scale-out engine, a vLLM server's OpenAI-compatible API with runtime LoRA;
- `warmup`: an engine that stands in while the in-process one loads in the background;
- `trimming`: how a reply that ran into the token cap ends (pure text rules).
"""
