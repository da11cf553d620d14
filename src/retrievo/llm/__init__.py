"""Language models for rerankers, readers and rewriters: one protocol (:mod:`.base`),
backends (local transformers/GGUF, OpenAI-compatible HTTP), prompt templates as data
(:mod:`.prompts`) and an on-disk response cache (:mod:`.cache`)."""

from retrievo.llm.base import LLM, Completion, GenerationParams, Message, Prompt, ScriptedLLM

__all__ = ["LLM", "Completion", "GenerationParams", "Message", "Prompt", "ScriptedLLM"]
