// The retrievo search page: plain DOM, no framework, no build step, nothing from a CDN.
// Text from the server is always inserted with textContent (never innerHTML), so document
// text cannot inject markup; highlights arrive as character ranges and become <mark> nodes.
"use strict";

const $ = (id) => document.getElementById(id);
let collections = [];

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!isError);
}

async function api(method, path, body) {
  const res = await fetch(path, { method, headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || res.status + " " + res.statusText);
  return data;
}

function currentCollection() {
  return collections.find((c) => c.name === $("collection").value) || collections[0];
}

function fillPipelines() {
  const col = currentCollection();
  for (const id of ["pipeline", "pipeline-b"]) {
    const sel = $(id);
    sel.textContent = "";
    for (const p of col.pipelines.filter((p) => p.gives === "rankings")) {
      const opt = document.createElement("option");
      opt.value = p.name;
      opt.textContent = p.name + "  —  " + p.spec;
      sel.appendChild(opt);
    }
    if (col.open_specs) {
      const opt = document.createElement("option");
      opt.value = "";
      opt.textContent = "custom spec…";
      sel.appendChild(opt);
    }
  }
  const b = $("pipeline-b");
  if (b.options.length > 1) b.selectedIndex = 1;
  $("spec").hidden = !col.open_specs;
  $("ask-btn").hidden = !col.pipelines.some((p) => p.gives === "answers");
}

function chosenPipeline(id) {
  const v = $(id).value;
  return v === "" ? ($("spec").value.trim() || undefined) : v;
}

function snippetNode(text, spans) {
  const p = document.createElement("p");
  p.className = "snippet";
  let pos = 0;
  for (const s of spans) {
    if (s.start > pos) p.appendChild(document.createTextNode(text.slice(pos, s.start)));
    const m = document.createElement("mark");
    m.textContent = text.slice(s.start, s.end);
    p.appendChild(m);
    pos = s.end;
  }
  if (pos < text.length) p.appendChild(document.createTextNode(text.slice(pos)));
  return p;
}

function renderTimings(table, costs, tookMs) {
  table.textContent = "";
  const head = table.insertRow();
  for (const h of ["stage", "ms", "calls", "tokens in/out", "forward passes"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.appendChild(th);
  }
  for (const c of costs) {
    const row = table.insertRow();
    row.className = "stage-row";
    for (const v of [c.stage, (c.seconds * 1000).toFixed(2), c.calls,
                     c.prompt_tokens + "/" + c.completion_tokens, c.forward_passes]) {
      row.insertCell().textContent = String(v);
    }
  }
  const total = table.insertRow();
  total.insertCell().textContent = "request";
  total.insertCell().textContent = tookMs.toFixed(2);
}

function renderResults(list, results, otherIds) {
  list.textContent = "";
  for (const hit of results) {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.docId = hit.doc_id;
    if (otherIds && !otherIds.has(hit.doc_id)) li.classList.add("only");
    const head = document.createElement("div");
    head.className = "head";
    const a = document.createElement("a");
    a.textContent = hit.title || hit.doc_id;
    a.addEventListener("click", () => showDocument(hit.doc_id));
    const id = document.createElement("span");
    id.className = "doc-id";
    id.textContent = hit.doc_id;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = "score " + hit.score.toFixed(4);
    head.append(a, id, score);
    li.appendChild(head);
    if (hit.snippet) li.appendChild(snippetNode(hit.snippet, hit.highlights || []));
    list.appendChild(li);
  }
  if (!results.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "no results";
    list.appendChild(li);
  }
}

async function showDocument(docId) {
  try {
    const doc = await api("GET", "/v1/documents/" + encodeURIComponent(docId) + "?collection=" +
                          encodeURIComponent(currentCollection().name));
    $("doc-title").textContent = doc.title || doc.doc_id;
    $("doc-id").textContent = doc.doc_id;
    $("doc-text").textContent = doc.text;
    $("document").hidden = false;
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function search(event) {
  if (event) event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  const compare = $("compare").checked;
  const body = (pipeline) => ({ query, k: Number($("k").value) || 10, pipeline,
                                collection: currentCollection().name });
  setStatus("searching…");
  $("answer-panel").hidden = true;
  try {
    const runs = [api("POST", "/v1/search", body(chosenPipeline("pipeline")))];
    if (compare) runs.push(api("POST", "/v1/search", body(chosenPipeline("pipeline-b"))));
    const [a, b] = await Promise.all(runs);
    const ids = (r) => new Set(r.results.map((h) => h.doc_id));
    $("title-a").textContent = a.pipeline;
    renderTimings($("timings-a"), a.costs, a.took_ms);
    renderResults($("results-a"), a.results, b ? ids(b) : null);
    $("column-b").hidden = !b;
    if (b) {
      $("title-b").textContent = b.pipeline;
      renderTimings($("timings-b"), b.costs, b.took_ms);
      renderResults($("results-b"), b.results, ids(a));
      const common = a.results.filter((h) => ids(b).has(h.doc_id)).length;
      setStatus(`${a.results.length} and ${b.results.length} results, ${common} in both (generation ${a.generation})`);
    } else {
      setStatus(`${a.results.length} results in ${a.took_ms.toFixed(1)} ms (generation ${a.generation})`);
    }
  } catch (e) {
    setStatus(e.message, true);
  }
}

function citationLink(c) {
  const a = document.createElement("a");
  a.className = "citation";
  a.textContent = "[" + c.doc_id + "]" + (c.title ? " " + c.title : "");
  a.dataset.docId = c.doc_id;
  a.addEventListener("click", () => showDocument(c.doc_id));
  return a;
}

async function ask() {
  const query = $("query").value.trim();
  if (!query) return;
  const col = currentCollection();
  const reader = col.pipelines.find((p) => p.gives === "answers");
  $("answer-panel").hidden = false;
  $("answer").textContent = "";
  $("citations").textContent = "";
  $("column-b").hidden = true;
  setStatus("asking…");
  try {
    const res = await fetch("/v1/ask", { method: "POST", headers: headers(true),
      body: JSON.stringify({ query, pipeline: reader.name, collection: col.name, stream: true }) });
    if (!res.ok) {
      const data = await res.json().catch(() => ({}));
      throw new Error((data.error && data.error.message) || String(res.status));
    }
    const stream = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await stream.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = (block.match(/^event: (.*)$/m) || [])[1];
        const data = JSON.parse((block.match(/^data: (.*)$/m) || [])[1] || "{}");
        if (event === "context") {
          $("title-a").textContent = data.pipeline + " (context)";
          renderResults($("results-a"), data.results, null);
        } else if (event === "token") {
          $("answer").textContent += data.text;
        } else if (event === "done") {
          $("answer").textContent = data.answer;
          for (const c of data.citations) $("citations").appendChild(citationLink(c));
          renderTimings($("timings-a"), data.costs, data.took_ms);
          setStatus(`answered in ${data.took_ms.toFixed(1)} ms`);
        } else if (event === "error") {
          throw new Error(data.message);
        }
      }
    }
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function init() {
  $("api-key").value = sessionStorage.getItem("retrievo-key") || "";
  $("api-key").addEventListener("change", () => { sessionStorage.setItem("retrievo-key", $("api-key").value); load(); });
  $("search-form").addEventListener("submit", search);
  $("ask-btn").addEventListener("click", ask);
  $("compare").addEventListener("change", () => { $("pipeline-b").disabled = !$("compare").checked; });
  $("collection").addEventListener("change", fillPipelines);
  $("close-doc").addEventListener("click", () => { $("document").hidden = true; });
  await load();
}

async function load() {
  try {
    collections = await api("GET", "/v1/collections");
  } catch (e) {
    setStatus(e.message + " (a private server needs an API key)", true);
    return;
  }
  const sel = $("collection");
  sel.textContent = "";
  for (const c of collections) {
    const opt = document.createElement("option");
    opt.value = c.name;
    opt.textContent = `${c.name} (${c.documents} docs)`;
    sel.appendChild(opt);
  }
  fillPipelines();
  document.body.dataset.ready = "1";
  setStatus("ready");
}

document.addEventListener("DOMContentLoaded", init);
