"""Training on your own judgments: cross-encoders (:mod:`.cross_encoder`), bi-encoders
(:mod:`.bi_encoder`) and LoRA adapters for the pointwise LLM reranker
(:mod:`.lora_pointwise`), from any qrels, with negatives mined by any first-stage pipeline
(:mod:`.data`), the shared run mechanics — order, time budget, checkpoints — in
:mod:`.run`, and a manifest stored with every result (:mod:`.manifest`).

Where it sits: above the methods it trains for (it reads data, indexes, pipelines, the
model loaders and the LLM backend, and reuses the pointwise reranker's prompt); only the
command line and the benchmarks import it, so the core never loads a trainer.
"""
