"""``retrievo serve-llm``: an OpenAI-compatible server over a local model.

``create_app(llm)`` builds a FastAPI app over a :class:`TransformersLLM`; ``serve_in_thread``
runs one on a free loopback port (tests, notebooks); the CLI command runs one in the
foreground. Bound to 127.0.0.1 unless told otherwise: the server has no authentication.

Endpoints (the OpenAI shapes, plus the vLLM extensions the HTTP backend uses):

``GET /health``, ``GET /v1/models`` (with ``max_model_len``)
``POST /v1/chat/completions``  messages, max_tokens (or max_completion_tokens), temperature,
    top_p, stop, seed, logprobs + top_logprobs (0-20), continue_final_message +
    add_generation_prompt (a final assistant message is continued: vLLM's extension),
    prompt_logprobs (vLLM's: per prompt token ``{id: {logprob, rank, decoded_token}}``).
``POST /v1/completions``  prompt, max_tokens, temperature, top_p, stop, seed, logprobs (0-20),
    echo (the prompt's tokens and their logprobs first; with ``max_tokens=0`` nothing is
    generated).
``POST /tokenize`` (prompt or messages), ``POST /detokenize`` (vLLM's shapes).

Bad requests get a typed 4xx answer in OpenAI's error shape
(``{"error": {"message", "type", "code"}}``): 422 for a body that does not validate,
400 for what the model cannot do (n > 1, a prompt over the context length, logprobs or
echo together with streaming).

``"stream": true`` answers with server-sent events in OpenAI's chunk shapes
(``chat.completion.chunk`` with ``delta`` pieces, or ``text_completion`` pieces), a last
chunk carrying ``finish_reason``, a usage chunk when ``stream_options.include_usage`` is
set, then ``data: [DONE]``. Each piece is sent as soon as the model decodes it: one worker
thread runs the whole generation (the model's lock is re-entrant per thread, so one thread
must hold it throughout) and hands pieces to the response through a queue. Errors found
before the first piece (a prompt over the context length) are still a 4xx answer; an error
after it ends the stream with an ``{"error": …}`` event. A client that disconnects stops
the generation at its next token.
Requests are served one at a time by the model (its lock); the server itself is async.
"""


import json
import queue
import threading
import time
import uuid
from typing import Any, Literal

from retrievo.errors import ConfigError, ContextLengthError, LLMError, MissingExtraError
from retrievo.llm.base import GenerationParams, Message, Prompt
from retrievo.serving import ServerThread
from retrievo.serving import serve_in_thread as _serve_in_thread


def _require_serve():
    try:
        import fastapi  # noqa: F401
        import pydantic  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"serve-llm needs fastapi, pydantic and uvicorn ({exc}); "
                                "install them with `pip install 'retrievo[serve]'`") from exc


def create_app(llm: Any, model_name: str | None = None):
    """A FastAPI app serving ``llm`` (a :class:`~retrievo.llm.transformers_backend.TransformersLLM`)
    under ``model_name`` (default: its identity)."""
    _require_serve()
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field

    from retrievo.llm.transformers_backend import TransformersLLM

    if not isinstance(llm, TransformersLLM):
        raise ConfigError(f"serve-llm serves a model run in this process, not a {type(llm).__name__}")
    name = model_name or llm.identity

    class ChatMessage(BaseModel):
        model_config = ConfigDict(extra="ignore")
        role: Literal["system", "user", "assistant"]
        content: str

    class Common(BaseModel):
        model_config = ConfigDict(extra="ignore")
        model: str | None = None
        temperature: float = Field(1.0, ge=0.0, le=2.0)
        top_p: float = Field(1.0, gt=0.0, le=1.0)
        stop: str | list[str] | None = None
        seed: int | None = None
        n: int = Field(1, ge=1)
        stream: bool = False
        stream_options: dict[str, Any] | None = None

    class ChatRequest(Common):
        messages: list[ChatMessage] = Field(min_length=1)
        max_tokens: int | None = Field(None, ge=1)
        max_completion_tokens: int | None = Field(None, ge=1)
        logprobs: bool = False
        top_logprobs: int | None = Field(None, ge=0, le=20)
        continue_final_message: bool = False
        add_generation_prompt: bool = True
        prompt_logprobs: int | None = Field(None, ge=0, le=20)

    class CompletionRequest(Common):
        prompt: str | list[str]
        max_tokens: int = Field(16, ge=0)
        logprobs: int | None = Field(None, ge=0, le=20)
        echo: bool = False

    class TokenizeRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        model: str | None = None
        prompt: str | None = None
        messages: list[ChatMessage] | None = None
        add_special_tokens: bool = True
        add_generation_prompt: bool = True
        continue_final_message: bool = False

    class DetokenizeRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        model: str | None = None
        tokens: list[int]

    class BadRequest(Exception):
        def __init__(self, message: str, code: int = 400, kind: str = "invalid_request_error"):
            super().__init__(message)
            self.message, self.code, self.kind = message, code, kind

    app = FastAPI(title="retrievo serve-llm", version="1")

    def error(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind,
                                                                   "code": status}})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return error(422, "; ".join(parts) or "invalid request", "invalid_request_error")

    @app.exception_handler(BadRequest)
    async def _bad(_request: Request, exc: BadRequest):
        return error(exc.code, exc.message, exc.kind)

    def check_common(req: Common) -> None:
        if req.model is not None and req.model not in (name, "default"):
            raise BadRequest(f"model {req.model!r} is not served here (this server serves {name!r})", 404,
                             "model_not_found")
        if req.n != 1:
            raise BadRequest("only n=1 is supported")

    def stops(req: Common) -> tuple[str, ...]:
        if req.stop is None:
            return ()
        return (req.stop,) if isinstance(req.stop, str) else tuple(req.stop)

    def chat_prompt(messages: list[ChatMessage], continue_final: bool) -> Prompt:
        msgs = [Message(m.role, m.content) for m in messages]
        if continue_final:
            if msgs[-1].role != "assistant":
                raise BadRequest("continue_final_message needs a final assistant message")
            return Prompt(tuple(msgs[:-1]), msgs[-1].content)
        return Prompt(tuple(msgs))

    def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def run(fn, *args):
        try:
            return fn(*args)
        except ContextLengthError as exc:
            raise BadRequest(str(exc), 400, "context_length_exceeded") from exc
        except ConfigError as exc:
            raise BadRequest(str(exc)) from exc
        except LLMError as exc:
            raise BadRequest(str(exc), 500, "server_error") from exc

    def errors_as_events(exc: BaseException) -> dict[str, Any]:
        kind = "context_length_exceeded" if isinstance(exc, ContextLengthError) else "server_error"
        return {"error": {"message": str(exc), "type": kind, "code": 500}}

    async def streamed(prompt: Prompt, params: GenerationParams, req: Common, chat: bool):
        """A ``StreamingResponse`` of server-sent events for one generation (module docstring)."""
        from fastapi.concurrency import run_in_threadpool
        from fastapi.responses import StreamingResponse

        pieces: queue.Queue = queue.Queue()
        cancelled = threading.Event()

        def pump() -> None:
            holder: list = []
            try:
                gen = llm._stream(prompt, params, holder)
                try:
                    for piece in gen:
                        if cancelled.is_set():
                            return
                        pieces.put(("piece", piece))
                finally:
                    gen.close()  # releases the model's lock in this same thread
                pieces.put(("done", holder[0]))
            except BaseException as exc:  # handed to the response: a 4xx before any piece, an event after
                pieces.put(("error", exc))

        threading.Thread(target=pump, name="serve-llm-stream", daemon=True).start()
        first = await run_in_threadpool(pieces.get)
        if first[0] == "error":
            run(_raise, first[1])  # the same 4xx mapping as a non-streamed request
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list, **extra: Any) -> str:
            body = {"id": ident, "object": obj, "created": created, "model": name, "choices": choices, **extra}
            return f"data: {json.dumps(body)}\n\n"

        def piece_choice(text: str, finish: str | None = None) -> dict[str, Any]:
            if chat:
                return {"index": 0, "delta": {"content": text} if text else {}, "logprobs": None,
                        "finish_reason": finish}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

        def events():
            item = first
            try:
                if chat:
                    yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                  "finish_reason": None}])
                while True:
                    if item[0] == "piece":
                        yield chunk([piece_choice(item[1])])
                    elif item[0] == "done":
                        done = item[1]
                        yield chunk([piece_choice("", done.finish_reason)])
                        if (req.stream_options or {}).get("include_usage"):
                            yield chunk([], usage=usage(done.prompt_tokens, done.completion_tokens))
                        yield "data: [DONE]\n\n"
                        return
                    else:
                        yield f"data: {json.dumps(errors_as_events(item[1]))}\n\n"
                        return
                    item = pieces.get()
            finally:
                cancelled.set()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    def entry(info) -> dict[str, Any]:
        return {"token": info.text, "logprob": info.logprob, "bytes": list(info.text.encode("utf-8"))}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "retrievo",
                                            "max_model_len": llm.context_length}]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        check_common(req)
        if req.continue_final_message and req.add_generation_prompt:
            raise BadRequest("continue_final_message and add_generation_prompt cannot both be true")
        if not req.continue_final_message and not req.add_generation_prompt:
            raise BadRequest("add_generation_prompt=false is only supported with continue_final_message=true")
        prompt = chat_prompt(req.messages, req.continue_final_message)
        max_tokens = req.max_completion_tokens or req.max_tokens or 256
        params = GenerationParams(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                                  stop=stops(req), seed=req.seed)
        k = (req.top_logprobs or 0) if req.logprobs else 0
        if req.stream:
            if req.logprobs or req.prompt_logprobs is not None:
                raise BadRequest("logprobs are not streamed: ask for them without stream")
            return await streamed(prompt, params, req, chat=True)

        def work():
            (completion, infos), = llm.generate_detailed([prompt], params, k)
            plp = None
            if req.prompt_logprobs is not None:
                plp = prompt_logprobs(llm.encode(prompt), req.prompt_logprobs)
            return completion, infos, plp

        completion, infos, plp = await run_in_threadpool(run, work)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": completion.text},
                                  "finish_reason": completion.finish_reason, "logprobs": None}
        if req.logprobs:
            choice["logprobs"] = {"content": [
                {**entry(i), "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))}
                                              for t, v in i.top]} for i in infos]}
        body = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "choices": [choice],
                "usage": usage(completion.prompt_tokens, completion.completion_tokens)}
        if plp is not None:
            body["prompt_logprobs"] = plp
        return body

    def prompt_logprobs(ids: list[int], k: int) -> list[Any]:
        """vLLM's shape: None for the first token, then ``{id: {logprob, rank, decoded_token}}``
        holding the prompt's own token and the top ``k`` alternatives."""
        torch = llm._torch
        out: list[Any] = [None]
        if len(ids) < 2:
            return out
        with llm._lock:
            hidden = llm._hidden_at([list(ids)], [list(range(len(ids) - 1))])[0]
            with torch.inference_mode():
                for start in range(0, hidden.shape[0], 256):
                    lp = llm._log_softmax(hidden[start:start + 256])
                    for j in range(lp.shape[0]):
                        own = int(ids[start + j + 1])
                        row = lp[j]
                        own_lp = float(row[own])
                        rank = int((row > row[own]).sum()) + 1
                        d = {str(own): {"logprob": own_lp, "rank": rank, "decoded_token": llm.token_text(own)}}
                        if k:
                            vals, idx = torch.topk(row, k)
                            for r, (v, t) in enumerate(zip(vals.tolist(), idx.tolist()), start=1):
                                d.setdefault(str(t), {"logprob": float(v), "rank": r,
                                                      "decoded_token": llm.token_text(t)})
                        out.append(d)
        return out

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        check_common(req)
        if isinstance(req.prompt, list):
            if len(req.prompt) != 1:
                raise BadRequest("give one prompt per request")
            text = req.prompt[0]
        else:
            text = req.prompt
        k = req.logprobs or 0
        want_lp = req.logprobs is not None
        if req.stream:
            if want_lp or req.echo or req.max_tokens == 0:
                raise BadRequest("logprobs, echo and max_tokens=0 are not streamed: ask for them without stream")
            params = GenerationParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                      stop=stops(req), seed=req.seed)
            return await streamed(Prompt.raw(text), params, req, chat=False)

        def work():
            echo_infos, offsets = [], []
            if req.echo:
                enc = llm.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
                ids = list(enc["input_ids"])
                llm._check_length(len(ids))
                echo_infos = llm.token_logprobs(ids, k) if want_lp else []
                spans = enc.get("offset_mapping") or [(0, 0)] * len(ids)
                offsets = [int(a) for a, _ in spans]
            if req.max_tokens == 0:
                if not req.echo:
                    raise BadRequest("max_tokens=0 is only meaningful with echo=true")
                n_prompt = len(llm.encode(Prompt.raw(text)))
                return None, [], echo_infos, offsets, n_prompt
            params = GenerationParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                      stop=stops(req), seed=req.seed)
            (completion, infos), = llm.generate_detailed([Prompt.raw(text)], params, k)
            return completion, infos, echo_infos, offsets, completion.prompt_tokens

        completion, infos, echo_infos, offsets, n_prompt = await run_in_threadpool(run, work)
        gen_text = completion.text if completion is not None else ""
        out_text = (text if req.echo else "") + gen_text
        choice: dict[str, Any] = {"index": 0, "text": out_text, "logprobs": None,
                                  "finish_reason": completion.finish_reason if completion is not None else "length"}
        if want_lp:
            tokens, token_lps, tops, text_offset = [], [], [], []
            if req.echo:
                for info, off in zip(echo_infos, offsets):
                    tokens.append(info.text)
                    token_lps.append(info.logprob)
                    tops.append({t: v for t, v in info.top} if info.logprob is not None else None)
                    text_offset.append(off)
            pos = len(text) if req.echo else 0
            for info in infos:
                tokens.append(info.text)
                token_lps.append(info.logprob)
                tops.append({t: v for t, v in info.top})
                text_offset.append(pos)
                pos += len(info.text)
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops,
                                  "text_offset": text_offset}
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": name, "choices": [choice],
                "usage": usage(n_prompt, completion.completion_tokens if completion is not None else 0)}

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest):
        if (req.prompt is None) == (req.messages is None):
            raise BadRequest("give either prompt or messages")
        if req.messages is not None:
            if not req.messages:
                raise BadRequest("messages must not be empty")
            ids = llm.encode(chat_prompt(req.messages, req.continue_final_message))
        else:
            ids = list(llm.tokenizer(req.prompt, add_special_tokens=req.add_special_tokens)["input_ids"])
        return {"count": len(ids), "max_model_len": llm.context_length, "tokens": ids}

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest):
        vocab = len(llm.tokenizer)
        if any(t < 0 or t >= vocab for t in req.tokens):
            raise BadRequest(f"token ids must be in [0, {vocab})")
        return {"prompt": llm.tokenizer.decode(req.tokens)}

    return app


def _raise(exc: BaseException):
    raise exc


def serve_in_thread(llm: Any, host: str = "127.0.0.1", port: int = 0, model_name: "str | None" = None,
                    app: Any = None, ready_timeout: float = 30.0) -> ServerThread:
    """Start an app (by default ``create_app(llm, model_name)``) on ``host:port`` (0: a free
    port) in a daemon thread; returns once it accepts connections (``url`` ends in ``/v1``)."""
    _require_serve()
    app = app if app is not None else create_app(llm, model_name)
    try:
        return _serve_in_thread(app, host, port, lifespan="off", base_path="/v1", name="serve-llm",
                                ready_timeout=ready_timeout)
    except RuntimeError as exc:
        raise LLMError(str(exc)) from None


def serve(model: str | None = None, host: str = "127.0.0.1", port: int = 8000, name: str | None = None) -> None:
    """Load ``model`` (anything :func:`~retrievo.llm.load.load_llm` accepts that runs
    locally) and serve it in the foreground until interrupted."""
    _require_serve()
    import uvicorn

    from retrievo.llm.load import DEFAULT_LLM, load_llm

    llm = load_llm(model or DEFAULT_LLM)
    app = create_app(llm, name or (model or DEFAULT_LLM))
    uvicorn.run(app, host=host, port=port, log_level="info")


__all__ = ["ServerThread", "create_app", "serve", "serve_in_thread"]
