"""OpenAI-compatible HTTP backend: vLLM, llama.cpp's server, Ollama, OpenAI, or
``retrievo serve-llm``.

``OpenAICompatibleLLM("http://127.0.0.1:8000/v1", model="smollm2")``. A batch of prompts is
sent concurrently (asyncio, at most ``concurrency`` requests in flight); the event loop
runs in a private thread when the caller already runs one (Jupyter, an async server), so
the backend is safe to call from anywhere.

Failures are typed: a server that cannot be reached, or answers 5xx / 429 after the
retries (exponential backoff: ``backoff * 2**attempt`` seconds, a 429's ``Retry-After``
honoured up to 30 s) → :class:`~retrievo.errors.LLMServerError`; no answer within
``timeout`` seconds (after the retries) → :class:`~retrievo.errors.LLMTimeoutError`; an
answer that is not JSON or lacks the fields asked for → :class:`~retrievo.errors.LLMResponseError`;
any other 4xx → :class:`LLMServerError` with the server's message.

How each capability maps to the API:

``generate``  ``/v1/chat/completions`` (``/v1/completions`` for :meth:`Prompt.raw` prompts).
    An ``assistant_prefix`` is sent as a final, partial assistant message with
    ``continue_final_message: true, add_generation_prompt: false`` (vLLM's extension, also
    ``retrievo serve-llm``'s); the reply is the text after the prefix. For servers that
    reject or ignore that (OpenAI, Ollama), ``prefix_mode="instruct"`` asks for the prefix in
    words instead (the last user message gets "Begin your answer with: ..."), and strips it
    from the reply if the model repeats it; ``prefix_mode="drop"`` ignores prefixes.
``next_token_logprobs``  one request per prompt with ``max_tokens=1, logprobs=true,
    top_logprobs=20`` (``top_logprobs`` option). A candidate's value is the logprob of the
    longest returned token that is a prefix of the candidate string (so "Yes" matches the
    token "Yes", not "Y", when both are listed). A candidate whose first token is not among
    the returned alternatives gets the *floor*: the smallest returned logprob minus log 2 —
    below every listed token (its true value is at most the smallest listed one), and equal
    for all unlisted candidates, so they tie below the listed ones. With 20 alternatives
    this is exact wherever it matters for ranking the top candidates.
``continuation_logprobs``  prompt logprobs of the prompt followed by the continuation:
    raw prompts through ``/v1/completions`` with ``echo=true, logprobs=1, max_tokens=1``
    (summing the tokens whose ``text_offset`` lies in the continuation); chat prompts
    through ``/v1/chat/completions`` with the continuation as a partial assistant
    message and vLLM's ``prompt_logprobs=1`` (the continuation's tokens are the fewest
    final prompt tokens whose text covers it). A server offering neither
    (OpenAI) answers without those fields → :class:`LLMResponseError`.
``segment_attention``  not offered (no server returns attention weights): CapabilityError.
``count_tokens``  the server's ``/tokenize`` (vLLM, ``retrievo serve-llm``) when it has one,
    else an estimate of 4 characters a token (``tokenize="estimate"`` forces the estimate).

The API key comes from ``api_key`` or ``$OPENAI_API_KEY`` (sent as a bearer token).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

import numpy as np

from retrievo.errors import (
    ConfigError,
    ContextLengthError,
    LLMResponseError,
    LLMServerError,
    LLMTimeoutError,
    MissingExtraError,
)
from retrievo.llm.base import LLM, Completion, GenerationParams, Prompt, Scored, as_prompt

PREFIX_MODES = ("continue", "instruct", "drop")
TOKENIZE_MODES = ("auto", "server", "estimate")
#: how far below the smallest returned logprob an unlisted candidate is placed
FLOOR_MARGIN = math.log(2.0)


def _httpx():
    try:
        import httpx
    except ImportError as exc:
        raise MissingExtraError(f"the HTTP LLM backend needs httpx ({exc}); "
                                "install it with `pip install 'retrievo[llm]'`") from exc
    return httpx


def run_sync(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to completion from synchronous code, in this thread when no event
    loop runs here, else in a fresh private thread (never blocking on a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


class OpenAICompatibleLLM(LLM):
    """An LLM behind an OpenAI-compatible server. See the module docstring."""

    capabilities = frozenset({"generate", "next_token_logprobs", "continuation_logprobs", "count_tokens"})

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 timeout: float = 120.0, max_retries: int = 3, backoff: float = 0.5, concurrency: int = 8,
                 top_logprobs: int = 20, prefix_mode: str = "continue", tokenize: str = "auto",
                 context_length: int | None = None, max_batch: int = 32, cache: Any = None):
        _httpx()
        if prefix_mode not in PREFIX_MODES:
            raise ConfigError(f"prefix_mode must be one of {', '.join(PREFIX_MODES)}, got {prefix_mode!r}")
        if tokenize not in TOKENIZE_MODES:
            raise ConfigError(f"tokenize must be one of {', '.join(TOKENIZE_MODES)}, got {tokenize!r}")
        if float(timeout) <= 0 or int(max_retries) < 0 or float(backoff) < 0 or int(concurrency) < 1:
            raise ConfigError("timeout must be > 0, max_retries and backoff >= 0, concurrency >= 1")
        if not 1 <= int(top_logprobs) <= 20:
            raise ConfigError(f"top_logprobs must be in 1..20, got {top_logprobs}")
        base_url = base_url.rstrip("/")
        if not base_url.endswith("/v1"):
            base_url += "/v1"
        self.base_url = base_url
        self.root_url = base_url[: -len("/v1")]
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.max_retries, self.backoff = float(timeout), int(max_retries), float(backoff)
        self.concurrency, self.top_k = int(concurrency), int(top_logprobs)
        self.prefix_mode, self.tokenize_mode = prefix_mode, tokenize
        self.max_batch = int(max_batch)
        #: HTTP requests sent, retries included (for tests and diagnostics)
        self.requests_sent = 0
        self._count_lock = threading.Lock()
        self._server_tokenizer: bool | None = None if tokenize == "auto" else tokenize == "server"
        self._models_info: dict[str, Any] | None = None
        if model is None:
            model = self._first_model()
        self.model = str(model)
        self._context_length = None if context_length is None else int(context_length)
        self._count_cached = lru_cache(maxsize=65536)(self._count_uncached)
        LLM.__init__(self, f"{self.base_url}#{self.model}", cache)

    @property
    def context_length(self) -> int:  # type: ignore[override]
        """The server's ``max_model_len`` for this model (vLLM, ``retrievo serve-llm``),
        asked once; 4096 when the server does not say."""
        if self._context_length is None:
            info = self._model_info()
            got = info.get("max_model_len") or info.get("context_length") or info.get("context_window")
            self._context_length = int(got or 4096)
        return self._context_length

    # ------------------------------------------------------------------ HTTP plumbing
    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    async def _request(self, client, method: str, url: str, payload: dict[str, Any] | None = None) -> Any:
        httpx = _httpx()
        last: BaseException | None = None
        timed_out = False
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt, last))
            with self._count_lock:
                self.requests_sent += 1
            try:
                resp = await client.request(method, url, json=payload, headers=self._headers())
            except httpx.TimeoutException as exc:
                last, timed_out = exc, True
                continue
            except httpx.TransportError as exc:  # refused, reset, DNS, protocol errors
                last, timed_out = exc, False
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last, timed_out = _StatusError(resp), False
                continue
            if resp.status_code >= 400:
                raise _refusal(resp, url)
            try:
                return resp.json()
            except ValueError as exc:
                raise LLMResponseError(f"{url} answered HTTP {resp.status_code} with something that is not JSON: "
                                       f"{resp.text[:200]!r}") from exc
        raise self._gave_up(url, last, timed_out) from last

    def _gave_up(self, url: str, last: BaseException | None, timed_out: bool) -> Exception:
        """The typed error for a request that failed on every attempt."""
        tries = f"{self.max_retries + 1} attempt{'s' if self.max_retries else ''}"
        if timed_out:
            return LLMTimeoutError(f"{url} did not answer within {self.timeout:g} s ({tries})")
        if isinstance(last, _StatusError):
            return LLMServerError(f"{url} kept failing: HTTP {last.response.status_code} "
                                  f"{_error_message(last.response)} ({tries})")
        return LLMServerError(f"cannot reach the LLM server at {url}: {type(last).__name__}: {last} ({tries}); "
                              "is it running?")

    def _delay(self, attempt: int, last: BaseException | None) -> float:
        delay = self.backoff * (2 ** (attempt - 1))
        if isinstance(last, _StatusError) and last.response.status_code == 429:
            try:
                delay = max(delay, min(30.0, float(last.response.headers.get("retry-after", 0))))
            except ValueError:
                pass
        return delay * (1 + 0.1 * random.random())

    def _client(self):
        httpx = _httpx()
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), limits=limits)

    def _post_all(self, path: str, payloads: list[dict[str, Any]], base: str | None = None) -> list[Any]:
        """POST every payload (at most ``concurrency`` at a time); answers in order."""
        url = (base or self.base_url) + path

        async def main():
            sem = asyncio.Semaphore(self.concurrency)
            async with self._client() as client:
                async def one(p):
                    async with sem:
                        return await self._request(client, "POST", url, p)
                return await asyncio.gather(*(one(p) for p in payloads))

        return list(run_sync(main)) if payloads else []

    def _get(self, path: str, base: str | None = None) -> Any:
        url = (base or self.base_url) + path

        async def main():
            async with self._client() as client:
                return await self._request(client, "GET", url)

        return run_sync(main)

    # ------------------------------------------------------------------ models
    def _models(self) -> list[dict[str, Any]]:
        if self._models_info is None:
            data = self._get("/models")
            try:
                self._models_info = {"data": list(data["data"])}
            except (KeyError, TypeError) as exc:
                raise LLMResponseError(f"{self.base_url}/models answered without a 'data' list: {data!r:.200}") \
                    from exc
        return self._models_info["data"]

    def _first_model(self) -> str:
        models = self._models()
        if not models or not isinstance(models[0], dict) or "id" not in models[0]:
            raise LLMResponseError(f"{self.base_url}/models lists no model; name one with model=...")
        return str(models[0]["id"])

    def _model_info(self) -> dict[str, Any]:
        try:
            models = self._models()
        except (LLMServerError, LLMResponseError):
            return {}
        return next((m for m in models if isinstance(m, dict) and m.get("id") == self.model), {})

    # ------------------------------------------------------------------ token counts
    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return self._count_cached(text)

    def _count_uncached(self, text: str) -> int:
        if self._server_tokenizer is not False:
            try:
                got = self._post_all("/tokenize", [{"model": self.model, "prompt": text,
                                                    "add_special_tokens": False}], base=self.root_url)[0]
                count = int(got["count"]) if "count" in got else len(got["tokens"])
                self._server_tokenizer = True
                return count
            except (LLMServerError, LLMResponseError, KeyError, TypeError, ValueError):
                if self._server_tokenizer:  # "server" was asked for, or it worked before
                    raise
                self._server_tokenizer = False
        return super().count_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        if self.count_tokens(text) <= max_tokens:
            return text
        if self._server_tokenizer:
            try:
                tok = self._post_all("/tokenize", [{"model": self.model, "prompt": text,
                                                    "add_special_tokens": False}], base=self.root_url)[0]
                ids = list(tok["tokens"])[:max_tokens]
                out = self._post_all("/detokenize", [{"model": self.model, "tokens": ids}], base=self.root_url)[0]
                cut = str(out["prompt"])
                if text.startswith(cut) and self.count_tokens(cut) <= max_tokens:
                    return cut
            except (LLMServerError, LLMResponseError, KeyError, TypeError, ValueError):
                pass
        return super().truncate(text, max_tokens)

    def prompt_tokens(self, prompt: Prompt | str) -> int:
        p = as_prompt(prompt)
        if self._server_tokenizer is not False and not p.is_raw:
            try:
                payload = {"model": self.model, **self._messages_payload(p)}
                got = self._post_all("/tokenize", [payload], base=self.root_url)[0]
                self._server_tokenizer = True
                return int(got["count"]) if "count" in got else len(got["tokens"])
            except (LLMServerError, LLMResponseError, KeyError, TypeError, ValueError):
                if self._server_tokenizer:
                    raise
                self._server_tokenizer = False
        return super().prompt_tokens(p)

    # ------------------------------------------------------------------ payloads
    def _messages_payload(self, p: Prompt, extra_assistant: str = "") -> dict[str, Any]:
        msgs = [{"role": m.role, "content": m.content} for m in p.messages]
        prefix = p.assistant_prefix + extra_assistant
        if not prefix:
            return {"messages": msgs}
        if self.prefix_mode == "continue" or extra_assistant:
            return {"messages": msgs + [{"role": "assistant", "content": prefix}],
                    "continue_final_message": True, "add_generation_prompt": False}
        if self.prefix_mode == "instruct":
            for m in reversed(msgs):
                if m["role"] == "user":
                    m["content"] += f"\n\nBegin your answer with: {p.assistant_prefix}"
                    break
        return {"messages": msgs}

    @staticmethod
    def _sampling(params: GenerationParams) -> dict[str, Any]:
        out: dict[str, Any] = {"max_tokens": params.max_tokens, "temperature": params.temperature,
                               "top_p": params.top_p}
        if params.stop:
            out["stop"] = list(params.stop)
        if params.seed is not None:
            out["seed"] = params.seed
        return out

    # ------------------------------------------------------------------ capabilities
    def _generate(self, prompts: list[Prompt], params: GenerationParams, top_logprobs: int) -> list[Completion]:
        chat, raw = [], []
        for i, p in enumerate(prompts):
            (raw if p.is_raw else chat).append(i)
        out: list[Completion | None] = [None] * len(prompts)
        k = min(int(top_logprobs), 20)
        if chat:
            payloads = []
            for i in chat:
                body = {"model": self.model, **self._messages_payload(prompts[i]), **self._sampling(params)}
                if k:
                    body.update(logprobs=True, top_logprobs=k)
                payloads.append(body)
            for i, ans in zip(chat, self._post_all("/chat/completions", payloads)):
                out[i] = self._completion(ans, prompts[i], chat=True, want_top=bool(k))
        if raw:
            payloads = []
            for i in raw:
                body = {"model": self.model, "prompt": prompts[i].raw_text, **self._sampling(params)}
                if k:
                    body["logprobs"] = k
                payloads.append(body)
            for i, ans in zip(raw, self._post_all("/completions", payloads)):
                out[i] = self._completion(ans, prompts[i], chat=False, want_top=bool(k))
        return out  # type: ignore[return-value]

    def _stream(self, prompt: Prompt, params: GenerationParams, holder: list[Completion]):
        """Server-sent events (``"stream": true``): each content piece is yielded as it
        arrives. Connection failures, 429 and 5xx are retried like any request, but only
        before the first byte of the answer; a server that answers plain JSON instead of
        events (no streaming) gives its whole text as one piece. ``stream_options.include_usage``
        asks for the token counts; a server that does not send them is counted as
        :meth:`generate` counts it. With ``prefix_mode="instruct"`` the start of the reply is
        held back until it is known whether the model repeated the prefix."""
        httpx = _httpx()
        chat = not prompt.is_raw
        path = "/chat/completions" if chat else "/completions"
        body: dict[str, Any] = {"model": self.model, **self._sampling(params), "stream": True,
                                "stream_options": {"include_usage": True}}
        body.update(self._messages_payload(prompt) if chat else {"prompt": prompt.raw_text})
        url = self.base_url + path
        strip = prompt.assistant_prefix if chat and self.prefix_mode == "instruct" else ""
        parts: list[str] = []
        held, finish, used = "", "stop", {}
        with httpx.Client(timeout=httpx.Timeout(self.timeout)) as client:
            with self._open_stream(client, url, body) as resp:
                if "text/event-stream" not in resp.headers.get("content-type", ""):
                    resp.read()
                    try:
                        ans = resp.json()
                    except ValueError as exc:
                        raise LLMResponseError(f"{url} answered a stream request with neither events nor JSON: "
                                               f"{resp.text[:200]!r}") from exc
                    c = self._completion(ans, prompt, chat=chat, want_top=False)
                    holder.append(c)
                    yield c.text
                    return
                try:
                    for line in resp.iter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        event = _event(data, url)
                        used = event.get("usage") or used
                        for choice in event.get("choices") or []:
                            piece = ((choice.get("delta") or {}).get("content") if chat else choice.get("text")) or ""
                            finish = choice.get("finish_reason") or finish
                            if strip and not parts and len(held + piece) < len(strip) and piece:
                                held += piece  # could still be the repeated prefix
                                continue
                            if held or (strip and not parts):
                                piece, held = held + piece, ""
                                if strip and piece.startswith(strip):
                                    piece = piece[len(strip):]
                            if piece:
                                parts.append(piece)
                                yield piece
                except httpx.TimeoutException as exc:
                    raise LLMTimeoutError(f"{url} stopped sending within {self.timeout:g} s mid-stream") from exc
                except httpx.TransportError as exc:
                    raise LLMServerError(f"{url} broke off the stream: {type(exc).__name__}: {exc}") from exc
        if held:
            parts.append(held)
            yield held
        text = "".join(parts)
        ptoks = int(used.get("prompt_tokens") or super().prompt_tokens(prompt))
        ctoks = int(used.get("completion_tokens") or max(1, super().count_tokens(text)))
        holder.append(Completion(text, ptoks, ctoks, str(finish)))

    @contextlib.contextmanager
    def _open_stream(self, client, url: str, body: dict[str, Any]):
        """A streamed POST whose status is OK, retried (backoff as in :meth:`_request`)
        until the answer starts; a server that refuses ``stream_options`` is asked again
        without it."""
        httpx = _httpx()
        last: BaseException | None = None
        timed_out = False
        attempt = 0
        while attempt <= self.max_retries:
            if attempt:
                time.sleep(self._delay(attempt, last))
            attempt += 1
            with self._count_lock:
                self.requests_sent += 1
            try:
                with client.stream("POST", url, json=body, headers=self._headers()) as resp:
                    if resp.status_code == 429 or resp.status_code >= 500:
                        resp.read()
                        last, timed_out = _StatusError(resp), False
                        continue
                    if resp.status_code >= 400:
                        resp.read()
                        if "stream_options" in body and "stream_options" in resp.text:
                            body = {k: v for k, v in body.items() if k != "stream_options"}
                            attempt -= 1  # not a failure of the server: ask again at once
                            continue
                        raise _refusal(resp, url)
                    yield resp
                    return
            except httpx.TimeoutException as exc:
                last, timed_out = exc, True
            except httpx.TransportError as exc:
                last, timed_out = exc, False
        raise self._gave_up(url, last, timed_out) from last

    def _completion(self, ans: Any, p: Prompt, chat: bool, want_top: bool) -> Completion:
        try:
            choice = ans["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
            if text is None:
                text = ""
            if not isinstance(text, str):
                raise TypeError("text is not a string")
            finish = choice.get("finish_reason") or "stop"
            usage = ans.get("usage") or {}
            ptoks = int(usage.get("prompt_tokens") or super().prompt_tokens(p))
            ctoks = int(usage.get("completion_tokens") or max(1, super().count_tokens(text)))
            top: tuple = ()
            if want_top:
                lp = choice.get("logprobs")
                if not lp:
                    raise LLMResponseError("the server returned no logprobs although they were asked for")
                if chat:
                    top = tuple({t["token"]: float(t["logprob"]) for t in item.get("top_logprobs") or []}
                                for item in lp["content"])
                else:
                    top = tuple({str(t): float(v) for t, v in (d or {}).items()} for d in lp["top_logprobs"])
        except LLMResponseError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise LLMResponseError(f"malformed completion from {self.base_url}: {type(exc).__name__}: {exc}; "
                                   f"answer: {str(ans)[:200]}") from exc
        if chat and p.assistant_prefix and self.prefix_mode == "instruct" and text.startswith(p.assistant_prefix):
            text = text[len(p.assistant_prefix):]
        return Completion(text, ptoks, ctoks, str(finish), top)

    def _top_first_token(self, ans: Any, chat: bool) -> dict[str, float]:
        try:
            choice = ans["choices"][0]
            lp = choice["logprobs"]
            if chat:
                first = lp["content"][0]
                top = {str(t["token"]): float(t["logprob"]) for t in first.get("top_logprobs") or []}
                top.setdefault(str(first["token"]), float(first["logprob"]))
            else:
                top = {str(t): float(v) for t, v in (lp["top_logprobs"][0] or {}).items()}
                top.setdefault(str(lp["tokens"][0]), float(lp["token_logprobs"][0]))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise LLMResponseError(f"{self.base_url} returned no usable logprobs for the next token "
                                   f"({type(exc).__name__}: {exc}); does the server support logprobs?") from exc
        if not top:
            raise LLMResponseError(f"{self.base_url} returned an empty list of top logprobs")
        return top

    @staticmethod
    def match_candidates(top: dict[str, float], candidates: list[str],
                         first_texts: list[str | None] | None = None) -> np.ndarray:
        """Each candidate's value from a ``{token text: logprob}`` list of alternatives.
        Where the candidate's first token text is known (``first_texts``, from the server's
        tokenizer), the listed token with exactly that text; otherwise the longest listed
        token that is a prefix of the candidate. Unlisted: the floor, the smallest listed
        logprob minus :data:`FLOOR_MARGIN`."""
        floor = min(top.values()) - FLOOR_MARGIN
        row = []
        for j, c in enumerate(candidates):
            known = first_texts[j] if first_texts is not None else None
            if known is not None:
                row.append(top.get(known, floor))
                continue
            best, best_len = floor, 0
            for tok, v in top.items():
                if tok and c.startswith(tok) and len(tok) > best_len:
                    best, best_len = v, len(tok)
            row.append(best)
        return np.asarray(row, dtype=np.float64)

    def first_token(self, text: str) -> Any:
        """The first token's text as the model generates it at the start of a reply (the
        server's tokenizer), or the base class's guess when the server has none."""
        got = self._first_token_texts(Prompt.chat("x"), [text])
        return got[0] if got[0] is not None else super().first_token(text)

    def _first_token_texts(self, p: Prompt, candidates: list[str]) -> list[str | None]:
        """Each candidate's first token text after ``p``'s assistant prefix (chat prompts)
        or the end of its text (raw prompts), through the server's ``/tokenize`` and
        ``/detokenize``: the same rule as the local backend (tokenise context + candidate,
        take the token after the context's own). None where the server cannot tell."""
        if self._server_tokenizer is False or not candidates:
            return [None] * len(candidates)
        ctx = ("raw", (p.raw_text or "")[-64:]) if p.is_raw else ("chat", p.assistant_prefix)
        try:
            return [self._first_token_text(ctx, c) for c in candidates]
        except (LLMServerError, LLMResponseError, KeyError, TypeError, ValueError, IndexError):
            if self._server_tokenizer:
                raise
            self._server_tokenizer = False
            return [None] * len(candidates)

    @lru_cache(maxsize=65536)  # noqa: B019 (one backend per server and model in a process)
    def _first_token_text(self, ctx: tuple[str, str], candidate: str) -> str:
        kind, context = ctx

        def body(extra: str | None) -> dict[str, Any]:
            if kind == "raw":
                return {"model": self.model, "prompt": context + (extra or ""), "add_special_tokens": False}
            msgs: list[dict[str, str]] = [{"role": "user", "content": "x"}]
            content = context + (extra or "")
            if not content:
                return {"model": self.model, "messages": msgs, "add_generation_prompt": True}
            return {"model": self.model, "messages": msgs + [{"role": "assistant", "content": content}],
                    "add_generation_prompt": False, "continue_final_message": True}

        got = self._post_all("/tokenize", [body(None), body(candidate),
                                           {"model": self.model, "prompt": candidate, "add_special_tokens": False}],
                             base=self.root_url)
        base_ids, full_ids, alone = (list(g["tokens"]) for g in got)
        if kind == "raw" and not context:
            base_ids = []
        if len(full_ids) > len(base_ids) and full_ids[:len(base_ids)] == base_ids:
            first = full_ids[len(base_ids)]
        else:
            first = alone[0]
        text = self._post_all("/detokenize", [{"model": self.model, "tokens": [int(first)]}],
                              base=self.root_url)[0]["prompt"]
        self._server_tokenizer = True
        return str(text)

    def _next_token_logprobs(self, prompts: list[Prompt], candidates: list[str]) -> Scored:
        rows: list[np.ndarray | None] = [None] * len(prompts)
        tokens = 0
        groups: dict[bool, list[int]] = {True: [], False: []}
        for i, p in enumerate(prompts):
            groups[p.is_raw].append(i)
        for is_raw, idx in groups.items():
            if not idx:
                continue
            if is_raw:
                payloads = [{"model": self.model, "prompt": prompts[i].raw_text, "max_tokens": 1, "temperature": 0,
                             "logprobs": self.top_k} for i in idx]
                answers = self._post_all("/completions", payloads)
            else:
                payloads = [{"model": self.model, **self._messages_payload(prompts[i]), "max_tokens": 1,
                             "temperature": 0, "logprobs": True, "top_logprobs": self.top_k} for i in idx]
                answers = self._post_all("/chat/completions", payloads)
            for i, ans in zip(idx, answers):
                firsts = self._first_token_texts(prompts[i], candidates)
                rows[i] = self.match_candidates(self._top_first_token(ans, chat=not is_raw), candidates, firsts)
                tokens += self._usage_prompt(ans, prompts[i])
        return Scored(np.vstack(rows), tokens)  # type: ignore[arg-type]

    def _usage_prompt(self, ans: Any, p: Prompt) -> int:
        try:
            return int(ans["usage"]["prompt_tokens"])
        except (KeyError, TypeError, ValueError):
            return super().prompt_tokens(p)

    def _continuation_logprobs(self, prompts: list[Prompt], continuations: list[str]) -> Scored:
        values = np.zeros(len(prompts), dtype=np.float64)
        tokens = 0
        raw = [i for i, p in enumerate(prompts) if p.is_raw and continuations[i]]
        chat = [i for i, p in enumerate(prompts) if not p.is_raw and continuations[i]]
        if raw:
            payloads = [{"model": self.model, "prompt": (prompts[i].raw_text or "") + continuations[i],
                         "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0} for i in raw]
            for i, ans in zip(raw, self._post_all("/completions", payloads)):
                values[i] = self._echo_sum(ans, len(prompts[i].raw_text or ""),
                                           len(prompts[i].raw_text or "") + len(continuations[i]))
                tokens += self._usage_prompt(ans, prompts[i])
        if chat:
            payloads = [{"model": self.model, **self._messages_payload(prompts[i], continuations[i]),
                         "max_tokens": 1, "temperature": 0, "prompt_logprobs": 1} for i in chat]
            for i, ans in zip(chat, self._post_all("/chat/completions", payloads)):
                values[i] = self._prompt_logprobs_sum(ans, continuations[i])
                tokens += self._usage_prompt(ans, prompts[i])
        return Scored(values, tokens)

    def _echo_sum(self, ans: Any, start: int, end: int) -> float:
        """Sum of the echoed prompt's token logprobs whose text starts in ``[start, end)``."""
        try:
            lp = ans["choices"][0]["logprobs"]
            toks, vals = list(lp["tokens"]), list(lp["token_logprobs"])
            offsets = lp.get("text_offset")
            if not offsets:
                offsets, pos = [], 0
                for t in toks:
                    offsets.append(pos)
                    pos += len(t)
            total, seen = 0.0, 0
            for off, v in zip(offsets, vals):
                if start <= int(off) < end:
                    if v is None:
                        raise ValueError("a continuation token has no logprob")
                    total += float(v)
                    seen += 1
            if not seen:
                raise ValueError("no echoed token falls in the continuation")
            return total
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise LLMResponseError(f"{self.base_url}/completions gave no usable echoed prompt logprobs "
                                   f"({type(exc).__name__}: {exc}); the server must support echo=true with "
                                   "logprobs (vLLM and retrievo serve-llm do)") from exc

    def _prompt_logprobs_sum(self, ans: Any, continuation: str) -> float:
        """Sum over the fewest final prompt tokens whose text covers ``continuation``
        (vLLM's ``prompt_logprobs``: per token ``{id: {logprob, rank, decoded_token}}``,
        the prompt's own token being the entry with the largest rank)."""
        try:
            plp = ans["prompt_logprobs"]
            if not isinstance(plp, list) or not plp:
                raise ValueError("prompt_logprobs is missing or empty")
            total, covered = 0.0, ""
            for entry in reversed(plp):
                if not entry:
                    raise ValueError("ran out of prompt tokens before covering the continuation")
                own = max(entry.values(), key=lambda d: int(d.get("rank") or 0))
                total += float(own["logprob"])
                covered = str(own.get("decoded_token") or "") + covered
                if len(covered) >= len(continuation):
                    return total
            raise ValueError("the prompt tokens do not cover the continuation")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise LLMResponseError(f"{self.base_url}/chat/completions gave no usable prompt_logprobs "
                                   f"({type(exc).__name__}: {exc}); the server must support vLLM's "
                                   "prompt_logprobs (vLLM and retrievo serve-llm do)") from exc

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_count_lock", None)
        state.pop("_count_cached", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._count_lock = threading.Lock()
        self._count_cached = lru_cache(maxsize=65536)(self._count_uncached)


class _StatusError(Exception):
    def __init__(self, response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _event(data: str, url: str) -> dict[str, Any]:
    """One server-sent event's JSON; an ``{"error": …}`` event is the server's failure."""
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise LLMResponseError(f"{url} sent an event that is not JSON: {data[:200]!r}") from exc
    if not isinstance(event, dict):
        raise LLMResponseError(f"{url} sent an event that is not an object: {data[:200]!r}")
    if "error" in event:
        err = event["error"]
        raise LLMServerError(f"{url} failed mid-stream: {err.get('message', err) if isinstance(err, dict) else err}")
    return event


def _refusal(resp, url: str) -> Exception:
    """The typed error for a 4xx answer (a prompt over the context length has its own)."""
    message = _error_message(resp)
    if resp.status_code == 400 and any(w in resp.text.lower() for w in (
            "context length", "context_length_exceeded", "maximum context", "too long", "max_model_len")):
        return ContextLengthError(f"{url}: {message}")
    return LLMServerError(f"{url} refused the request (HTTP {resp.status_code}): {message}")


def _error_message(resp) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            return str(err.get("message", err))[:300]
        return str(err)[:300]
    return str(body)[:300]


__all__ = ["FLOOR_MARGIN", "PREFIX_MODES", "OpenAICompatibleLLM", "run_sync"]
