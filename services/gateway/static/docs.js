// The API reference at /docs: built from /openapi.json (a file, so the page runs under a strict CSP).
"use strict";
const el = (tag, props = {}, ...kids) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...kids);
  return node;
};
fetch("/openapi.json").then((r) => r.json()).then((spec) => {
  document.getElementById("intro").append(
    el("h2", { textContent: `${spec.info.title} ${spec.info.version}` }),
    el("p", { textContent: spec.info.description || "" }));
  const ops = document.getElementById("ops");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [verb, op] of Object.entries(methods)) {
      const body = el("div", { className: "body" }, el("p", { textContent: op.description || "" }));
      const params = op.parameters || [];
      if (params.length) {
        const table = el("table", {}, el("tr", {}, el("th", { textContent: "parameter" }),
          el("th", { textContent: "in" }), el("th", { textContent: "type" })));
        for (const p of params) table.append(el("tr", {}, el("td", { textContent: p.name }),
          el("td", { textContent: p.in }), el("td", { textContent: (p.schema && (p.schema.type || "")) || "" })));
        body.append(table);
      }
      if (op.requestBody) body.append(el("p", { textContent: "Body:" }),
        el("pre", { textContent: JSON.stringify(op.requestBody.content, null, 2) }));
      body.append(el("p", { textContent: "Responses: " + Object.entries(op.responses || {})
        .map(([code, r]) => `${code} ${r.description || ""}`).join(" · ") }));
      ops.append(el("details", { className: "op" },
        el("summary", {}, el("span", { className: `verb ${verb.toUpperCase()}`, textContent: verb.toUpperCase() }),
          el("code", { textContent: path }), el("span", { className: "hint", textContent: op.summary || "" })),
        body));
    }
  }
});
