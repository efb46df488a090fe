"""Static batching, the benchmarks' baseline (`CROWD_SCHEDULER=static`) and the showcase's path:
a whole batch decoded to its longest row by one `model.generate`, each row with its own adapter
(peft mixed-adapter batches). A row that arrives meanwhile waits for the whole batch; continuous
batching (crowd/serving/batching.py) does not make it wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crowd.models import LoadedModel, ModelError
from crowd.serving.batching import Row, encode_chats
from crowd.serving.protocol import BASE, Sampling


def generate_texts(
    loaded: LoadedModel,
    chats: Sequence[Sequence[dict]],
    adapters: Sequence[str],
    sampling: Sampling,
    streamer: Any = None,
) -> list[str]:
    """Replies to `chats`, row i decoded with adapter `adapters[i]`, in one batched generate."""
    import torch

    tokenizer = loaded.tokenizer
    batch = encode_chats(tokenizer, chats, loaded.device)
    kwargs: dict[str, Any] = dict(
        max_new_tokens=sampling.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        streamer=streamer,
    )
    if sampling.temperature > 0:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if _is_peft(loaded.model):
        kwargs["adapter_names"] = list(adapters)
    elif any(name != BASE for name in adapters):
        raise ModelError(f"adapters {sorted(set(adapters))} are not loaded")
    with torch.inference_mode():
        out = loaded.model.generate(**batch, **kwargs)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


class BatchStreamer:
    """The static scheduler's transformers streamer for a whole batch: routes each row's new
    token to its request. Rows stop at EOS or their own token budget."""

    def __init__(self, requests: Sequence[Row], tokenizer: Any):
        self.requests = requests
        self.stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first pushes the prompt
            self._prompt_seen = True
            return
        for request, token in zip(self.requests, value.reshape(-1).tolist()):
            if request.finished:
                continue
            if token in self.stop_ids:
                request.close()
                continue
            request.tokens.append(token)
            request.push(token)
            if len(request.tokens) >= request.sampling.max_new_tokens:
                request.close()

    def end(self) -> None:
        for request in self.requests:
            request.close()
