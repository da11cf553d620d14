"""Prometheus metrics in the text exposition format (no client library needed).

Counters of requests by route and status, a latency histogram by route, and gauges of
each collection's generation and live documents. Routes are the app's path templates
(``/v1/documents/{doc_id}``), never raw paths, so the label set stays bounded whatever
clients send.
"""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = defaultdict(float)
        self.counts: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            key = (method, route)
            counts = self.buckets.setdefault(key, [0] * len(BUCKETS))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            self.sums[key] += seconds
            self.counts[key] += 1

    def render(self, collections) -> str:
        lines = ["# HELP retrievo_requests_total HTTP requests by method, route and status.",
                 "# TYPE retrievo_requests_total counter"]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(f'retrievo_requests_total{{method="{method}",route="{_escape(route)}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP retrievo_request_seconds Request latency by method and route.",
                      "# TYPE retrievo_request_seconds histogram"]
            for (method, route), counts in sorted(self.buckets.items()):
                labels = f'method="{method}",route="{_escape(route)}"'
                for bound, n in zip(BUCKETS, counts):
                    lines.append(f'retrievo_request_seconds_bucket{{{labels},le="{bound}"}} {n}')
                lines.append(f'retrievo_request_seconds_bucket{{{labels},le="+Inf"}} {self.counts[(method, route)]}')
                lines.append(f"retrievo_request_seconds_sum{{{labels}}} {self.sums[(method, route)]:.6f}")
                lines.append(f"retrievo_request_seconds_count{{{labels}}} {self.counts[(method, route)]}")
        gauges = {"generation": "Published generation being searched.",
                  "documents": "Live documents in the searched generation.",
                  "commits_total": "Write commits (one generation each; group commit batches requests).",
                  "documents_added_total": "Documents added over HTTP.",
                  "documents_replaced_total": "Documents replaced by upserts over HTTP.",
                  "documents_deleted_total": "Documents deleted over HTTP."}
        values = {}
        for c in collections.values():
            snap = c.snapshot()
            values[c.name] = {"generation": snap.generation, "documents": len(snap),
                              "commits_total": c.stats["commits"], "documents_added_total": c.stats["documents_added"],
                              "documents_replaced_total": c.stats["documents_replaced"],
                              "documents_deleted_total": c.stats["documents_deleted"]}
        for metric, help_text in gauges.items():
            kind = "counter" if metric.endswith("_total") else "gauge"
            lines += [f"# HELP retrievo_collection_{metric} {help_text}", f"# TYPE retrievo_collection_{metric} {kind}"]
            for name, v in values.items():
                lines.append(f'retrievo_collection_{metric}{{collection="{_escape(name)}"}} {v[metric]}')
        return "\n".join(lines) + "\n"


__all__ = ["Metrics"]
