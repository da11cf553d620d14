"""Training on your own judgments: cross-encoders (:mod:`.cross_encoder`), bi-encoders
(:mod:`.bi_encoder`) and LoRA adapters for the pointwise LLM reranker
(:mod:`.lora_pointwise`), from any qrels, with negatives mined by any first-stage pipeline
(:mod:`.data`) and a manifest stored with every result (:mod:`.manifest`)."""
