"""What every LLM-backed stage outside the rerankers shares (readers in :mod:`retrievo.rag`,
generative rewriters in :mod:`retrievo.rewrite`): the model named by a spec option and
loaded once per process, and the spec that rebuilds the stage.

The options are declared once in the registry (``model``, ``cache`` and the method's own),
so :meth:`LLMStageMixin.spec` prints exactly the options whose values differ from the
registry's defaults — plus every sub-pipeline (a retriever, a scorer), which has no
printable default — and ``parse(str(stage))`` rebuilds the same stage.
"""

from __future__ import annotations

from typing import Any


class LLMStageMixin:
    """Mixed into a dataclass stage with ``model``, ``cache``, ``index`` and ``_state``."""

    model: str
    cache: str
    index: Any
    _state: dict[str, Any]
    name: str

    @property
    def llm(self):
        """The shared backend this stage uses (loaded on first use)."""
        if "llm" not in self._state:
            from retrievo.llm.load import load_llm

            self._state["llm"] = load_llm(self.model, cache=self.cache or None)
        return self._state["llm"]

    @property
    def models(self) -> list[str]:
        """Identities of the models this stage (and its sub-pipelines) use, for protocols."""
        out = [str(self.model)]
        for value in vars(self).values():
            sub = getattr(value, "models", None)
            if isinstance(sub, list):
                out.extend(m for m in sub if m not in out)
        return out

    def spec(self, resources: bool = True) -> str:
        from retrievo.pipeline import Stage, _fmt_value
        from retrievo.registry import REGISTRY
        from retrievo.resources import resource_name

        parts: list[str] = []
        if REGISTRY.knows(self.name):
            for opt in REGISTRY.entry(self.name).options or ():
                if opt.name == "index" or not hasattr(self, opt.name):
                    continue
                value = getattr(self, opt.name)
                if isinstance(value, Stage):
                    parts.append(f"{opt.name}={value.spec(resources)}")
                elif value != opt.default:
                    parts.append(f"{opt.name}={_fmt_value(value)}")
        if resources and self.index is not None:
            parts.append(f"index={_fmt_value(resource_name(self.index, 'index'))}")
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    def resources(self) -> dict[str, Any]:
        from retrievo.pipeline import Stage
        from retrievo.resources import is_memory_name, resource_name

        out: dict[str, Any] = {}
        for value in vars(self).values():
            if isinstance(value, Stage):
                out.update(value.resources())
        if self.index is not None:
            name = resource_name(self.index, "index")
            if is_memory_name(name):
                out[name] = self.index
        return out


__all__ = ["LLMStageMixin"]
