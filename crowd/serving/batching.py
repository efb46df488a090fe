"""Continuous batching: rows join a running batch at the next decoding step and leave the step
they finish, each with its own adapter (peft mixed-adapter batches), sampling settings and
token budget, over one shared KV cache.

    batch = RunningBatch(loaded)
    batch.admit(rows)        # 1. prefill the new rows together, choose their first tokens
    while batch.rows:        # 2. merge: their cache joins the batch's, left-padded
        batch.step()         # 3. one forward pass feeds every row's last token
                             # 4. rows at EOS or at their budget leave at once

Left padding keeps every row's tokens at the right end of the cache, so one new token per row
is one new column; rotary positions are counted from each row's attention mask, so padding
never shifts them. Greedy replies are token-identical to one-at-a-time decoding (tested).

With a `PrefixCache` (crowd/serving/prefix_cache.py), a finished row leaves its keys and values
behind, and new rows whose prompts continue them prefill only their new tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crowd.models import LoadedModel, ModelError
from crowd.serving.prefix_cache import PrefixCache
from crowd.serving.protocol import BASE, Progress, Sampling


@dataclass(eq=False)
class Row:
    """One request inside a running batch. Subclasses stream: `push` gets each new token,
    `close` the end (None) or the error that ended it."""

    prompt: list[int]
    adapter: str
    sampling: Sampling
    seed: int | None = None  # a row with a seed samples the same tokens in any batch
    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    cancelled: bool = False  # the caller stopped reading: the row leaves at the next step
    error: BaseException | None = None
    _next: int = 0  # the chosen token the next step feeds
    _generator: Any = None

    def push(self, token: int) -> None:
        """A new token (never EOS); the base row only keeps it in `tokens`."""

    def close(self, error: BaseException | None = None) -> None:
        self.finished, self.error = True, error


def encode_chats(tokenizer: Any, chats: Sequence[Sequence[dict]], device: str) -> dict:
    """Left-padded input ids and attention mask for a batch of chats, ready to generate."""
    texts = [
        tokenizer.apply_chat_template(list(chat), tokenize=False, add_generation_prompt=True)
        for chat in chats
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {key: value.to(device) for key, value in batch.items()}


def prompt_ids(tokenizer: Any, chat: Sequence[dict]) -> list[int]:
    """The chat template's token ids for `chat`, as `encode_chats` makes them for one row."""
    text = tokenizer.apply_chat_template(list(chat), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class RunningBatch:
    """The rows being decoded, their KV cache and attention mask (left-padded, [rows, length])."""

    def __init__(self, loaded: LoadedModel, prefixes: PrefixCache | None = None):
        self.loaded = loaded
        self.prefixes = prefixes
        tokenizer = loaded.tokenizer
        self.stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask: Any = None
        self.steps = 0
        self.prefills = 0

    def admit(self, rows: Sequence[Row]) -> None:
        """Prefill `rows` and choose their first tokens; those that go on join the batch. A row
        that continues a cached prefix prefills only its new tokens. Rows with new parts of
        similar length prefill together (`plan_passes`). An error ends that pass's rows only."""
        found = [self._cached(row) for row in rows]
        for group in plan_passes([len(row.prompt) - n for row, n, _ in found]):
            self._prefill([found[i] for i in group])

    def _cached(self, row: Row) -> tuple[Row, int, list[tuple[Any, Any]]]:
        """(row, n, layers): the keys and values of the longest cached prefix of the row's
        prompt, n tokens long (0 and [] when none)."""
        hit = self.prefixes.take(row.adapter, row.prompt) if self.prefixes else None
        return (row, *hit) if hit else (row, 0, [])

    def _prefill(self, found: list[tuple[Row, int, list[tuple[Any, Any]]]]) -> None:
        """One forward pass over the new part of every row's prompt, after its cached prefix.

        Each row feeds its last `fed` prompt tokens, `fed` the longest new part of the pass (a
        row with a shorter new part feeds some cached tokens again, or is left-padded when its
        whole prompt is shorter), over the cached keys and values of what comes before them,
        left-padded: every row's tokens stay contiguous at the right end of the cache."""
        import torch
        from transformers import DynamicCache

        rows = [row for row, _, _ in found]
        try:
            fed = max(len(row.prompt) - n for row, n, _ in found)
            kept = [max(0, len(row.prompt) - fed) for row in rows]  # <= n: cached tokens kept
            length = max(kept)
            ids, mask = [], []
            for row, keep in zip(rows, kept):
                new = row.prompt[keep:]
                ids.append([self.pad_id] * (fed - len(new)) + new)
                mask.append([0] * (length - keep + fed - len(new)) + [1] * (keep + len(new)))
            cache = DynamicCache()
            if length:
                some = next(layers for _, n, layers in found if n)  # shapes for rows without
                for i in range(len(some)):
                    keys, values = zip(
                        *(
                            _cached_part((layers or some)[i], keep, length)
                            for (_, _, layers), keep in zip(found, kept)
                        )
                    )
                    cache.update(torch.cat(keys), torch.cat(values), i)
            mask_t = torch.tensor(mask)
            logits, cache = self._forward(torch.tensor(ids), mask_t, cache, rows)
            self.prefills += 1
        except Exception as exc:  # e.g. an adapter that vanished: these rows fail, others go on
            for row in rows:
                row.close(exc)
            return
        self._start(rows, logits, cache, mask_t)

    def _start(self, rows: list[Row], logits: Any, cache: Any, mask: Any) -> None:
        """Prefilled `rows` choose their first tokens; those that go on join the batch."""
        import torch

        for row in rows:
            if row.seed is not None:
                row._generator = torch.Generator().manual_seed(row.seed)
        keep = self._choose(rows, logits)
        if keep:
            index = torch.tensor(keep)
            cache.batch_select_indices(index)
            self._merge([rows[i] for i in keep], cache, mask[index])

    def step(self) -> None:
        """Feed every row's last token in one forward pass and choose the next ones; rows that
        finish leave. An error ends every row of the batch."""
        import torch

        try:
            ids = torch.tensor([[row._next] for row in self.rows])
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], 1)
            logits, self.cache = self._forward(ids, self.mask, self.cache, self.rows)
            self.steps += 1
        except Exception as exc:
            self.fail(exc)
            return
        keep = self._choose(self.rows, logits, running=True)
        if len(keep) < len(self.rows):
            self._keep(keep)

    def fail(self, error: BaseException) -> None:
        for row in self.rows:
            row.close(error)
        self.rows, self.cache, self.mask = [], None, None

    def _forward(self, ids: Any, mask: Any, cache: Any, rows: Sequence[Row]) -> tuple[Any, Any]:
        """Last-position logits [rows, vocab] and the grown cache."""
        import torch
        from transformers import DynamicCache

        device = self.loaded.device
        model = self.loaded.model
        kwargs: dict[str, Any] = {}
        if hasattr(model, "peft_config"):
            kwargs["adapter_names"] = [row.adapter for row in rows]
        elif any(row.adapter != BASE for row in rows):
            raise ModelError(f"adapters {sorted({r.adapter for r in rows})} are not loaded")
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        with torch.inference_mode():
            out = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                cache=cache if cache is not None else DynamicCache(),
                use_cache=True,
                logits_to_keep=1,  # a prefill needs the last position's logits only
                **kwargs,
            )
        return out.logits[:, -1, :].float(), out.cache

    def _merge(self, rows: list[Row], cache: Any, mask: Any) -> None:
        """Stack the new rows' cache under the batch's, both left-padded to one length."""
        import torch

        if not self.rows:
            self.rows, self.cache, self.mask = rows, cache, mask.to(self.loaded.device)
            return
        length = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat(
                [_left_pad(mine.keys, length, 2), _left_pad(theirs.keys, length, 2)]
            )
            mine.values = torch.cat(
                [_left_pad(mine.values, length, 2), _left_pad(theirs.values, length, 2)]
            )
        mask = mask.to(self.mask.device)
        self.mask = torch.cat([_left_pad(self.mask, length, 1), _left_pad(mask, length, 1)])
        self.rows = self.rows + rows

    def _remember(self, i: int) -> None:
        """Keep row `i`'s cache, which has just ended well, for its conversation's next message."""
        if self.prefixes is None or self.prefixes.max_tokens <= 0:
            return
        row = self.rows[i]
        fed = int(self.mask[i].sum())  # prompt and reply tokens in the cache, right-aligned
        start = self.mask.shape[1] - fed
        layers = [
            (layer.keys[i : i + 1, :, start:].clone(), layer.values[i : i + 1, :, start:].clone())
            for layer in self.cache.layers
        ]
        self.prefixes.put(row.adapter, (row.prompt + row.tokens)[:fed], layers)

    def _keep(self, keep: list[int]) -> None:
        """Only rows `keep` stay; columns that are padding in all of them are dropped."""
        import torch

        if not keep:
            self.rows, self.cache, self.mask = [], None, None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.rows = [self.rows[i] for i in keep]
        lead = int((self.mask.cumsum(1) == 0).sum(1).min())
        if lead:
            self.mask = self.mask[:, lead:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]

    def _choose(self, rows: Sequence[Row], logits: Any, running: bool = False) -> list[int]:
        """Choose each row's next token; returns the indices of the rows that go on. `running`:
        `rows` are the batch's, whose caches a finished row leaves to the prefix cache."""
        keep = []
        for i, (row, token) in enumerate(zip(rows, pick_tokens(logits, rows))):
            if row.cancelled:
                row.close()
                continue
            if token not in self.stop_ids:
                row.tokens.append(token)
                row._next = token
                row.push(token)
                if len(row.tokens) < row.sampling.max_new_tokens:
                    keep.append(i)
                    continue
            if running:
                self._remember(i)  # before `close` tells the caller the reply is whole
            row.close()
        return keep


NUCLEUS_K = 256
"""Nucleus sampling looks at a row's NUCLEUS_K most likely tokens first (a partial sort); a row
whose top-p mass lies beyond them (a very flat distribution) falls back to a full sort."""


def pick_tokens(logits: Any, rows: Sequence[Row]) -> list[int]:
    """The next token of every row from its logits [rows, vocab]: argmax for greedy rows, else
    temperature then nucleus (top-p) sampling, each row with its own settings and generator."""
    import torch

    tokens = logits.argmax(-1)
    hot = [i for i, row in enumerate(rows) if row.sampling.temperature > 0]
    if not hot:
        return tokens.tolist()
    temps = torch.tensor([rows[i].sampling.temperature for i in hot], device=logits.device)
    scores = logits[hot] / temps[:, None]
    log_total = scores.logsumexp(-1, keepdim=True)
    top, order = scores.topk(min(NUCLEUS_K, scores.shape[-1]), dim=-1)  # one partial sort
    for j, i in enumerate(hot):
        probs, ids = (top[j] - log_total[j]).exp(), order[j]
        top_p = rows[i].sampling.top_p
        if float(probs.sum()) < min(top_p, 0.999):  # a flat row: its nucleus needs a full sort
            full, ids = scores[j].sort(descending=True)
            probs = (full - log_total[j]).exp()
        tokens[i] = ids[_nucleus(probs, top_p, rows[i]._generator)]
    return tokens.tolist()


def _nucleus(probs: Any, top_p: float, generator: Any) -> int:
    """An index into `probs` (most likely first) drawn from the smallest prefix whose mass
    reaches `top_p`, by inverse CDF with one uniform number from `generator`."""
    import torch

    kept = torch.where(probs.cumsum(-1) - probs < top_p, probs, torch.zeros_like(probs))
    cdf = kept.cumsum(-1)
    u = torch.rand((), generator=generator).to(cdf.device) * cdf[-1]
    return int(torch.searchsorted(cdf, u.reshape(1)).clamp(max=len(cdf) - 1))


def decode_all(
    loaded: LoadedModel,
    chats: Sequence[Sequence[dict]],
    adapters: Sequence[str],
    sampling: Sampling,
    seeds: Sequence[int | None] | None = None,
    max_batch: int = 16,
    progress: Progress | None = None,
) -> list[str]:
    """Replies to `chats` (row i with adapter `adapters[i]`, seed `seeds[i]`), decoded by
    continuous batching with at most `max_batch` rows at a time: the evaluator's path.
    `progress(rows done, rows)` is called whenever rows finish."""
    tokenizer = loaded.tokenizer
    seeds = list(seeds) if seeds is not None else [None] * len(chats)
    rows = [
        Row(prompt_ids(tokenizer, chat), name, sampling, seed)
        for chat, name, seed in zip(chats, adapters, seeds, strict=True)
    ]
    waiting, batch = list(rows), RunningBatch(loaded)
    while waiting or batch.rows:
        room = max_batch - len(batch.rows)
        # Each admission is a prefill pass of its own: wait until a quarter of the batch is free.
        if waiting and room >= min(len(waiting), max(1, max_batch // 4)):
            batch.admit(waiting[:room])
            waiting = waiting[room:]
        if batch.rows:
            before = len(batch.rows)
            batch.step()
            if progress is not None and len(batch.rows) < before:
                progress(len(rows) - len(waiting) - len(batch.rows), len(rows))
    for row in rows:
        if row.error is not None:
            raise row.error
    return [tokenizer.decode(row.tokens, skip_special_tokens=True).strip() for row in rows]


def _left_pad(tensor: Any, length: int, dim: int) -> Any:
    """`tensor` with zeros prepended along `dim` up to `length`."""
    import torch

    extra = length - tensor.shape[dim]
    if extra <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = extra
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _cached_part(layer: tuple[Any, Any], keep: int, length: int) -> tuple[Any, Any]:
    """A row's first `keep` cached keys and values of one layer, left-padded to `length`."""
    keys, values = layer
    return _left_pad(keys[:, :, :keep], length, 2), _left_pad(values[:, :, :keep], length, 2)


PASS_COST_TOKENS = 32
"""What one more prefill pass costs, in padded tokens: a forward pass of one token took about
0.1 s on this project's 2-core machine, a few dozen prompt tokens' worth."""


def plan_passes(news: Sequence[int], pass_cost: int = PASS_COST_TOKENS) -> list[list[int]]:
    """Indices of rows with new parts `news` tokens long, grouped into prefill passes, shortest
    new parts first. A pass feeds every row its longest new part (the rest is padding), so rows
    of similar lengths go together: the grouping that feeds the fewest tokens, counting
    `pass_cost` for each pass (exact, over the rows sorted by length)."""
    order = sorted(range(len(news)), key=lambda i: news[i])
    lengths = [news[i] for i in order]
    best = [0] + [0] * len(order)  # best[j]: cost of the first j rows
    cut = [0] * (len(order) + 1)  # cut[j]: where the last pass of the first j rows starts
    for j in range(1, len(order) + 1):
        best[j], cut[j] = min((best[i] + pass_cost + (j - i) * lengths[j - 1], i) for i in range(j))
    groups, j = [], len(order)
    while j:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]
