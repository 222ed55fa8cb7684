"""The circuit explorer page's stylesheet and script, inlined into every page by `leaderboard.explore`.

The script reads the page's embedded data (`#circuit-data`), unpacks its integer-coded numbers, draws the
edges, and handles zoom and pan, node clicks (`#node-detail`) and the colour modes (`#pair-select`).
"""

CSS = """body { font: 14px system-ui, sans-serif; margin: 0; color: #222; }
header { padding: 8px 14px; background: #f3f4f6; border-bottom: 1px solid #ddd; }
main { display: flex; gap: 12px; padding: 10px; }
#left { flex: 3; min-width: 0; }
#node-detail { flex: 2; min-width: 320px; max-height: 92vh; overflow: auto; border-left: 1px solid #ddd;
  padding-left: 12px; }
table.numbers { border-collapse: collapse; font-size: 12px; margin-bottom: 6px; }
table.numbers th, table.numbers td { padding: 1px 8px 1px 0; text-align: left; }
#graph-box { border: 1px solid #ccc; height: 70vh; }
#graph { width: 100%; height: 100%; cursor: grab; user-select: none; }
#graph text { font: 10px system-ui, sans-serif; fill: #333; }
#graph .site { font-weight: 600; font-size: 11px; }
#graph .count { fill: #777; }
.node circle { stroke: #263238; stroke-width: 1; cursor: pointer; }
.node.selected circle { stroke: #000; stroke-width: 3; }
.node.separating circle { stroke: #ff6f00; stroke-width: 3; }
#steering summary { font-size: 13px; font-weight: bold; cursor: pointer; margin: 6px 0 2px; }
#steering details summary { font-weight: normal; }
#steering p { font-size: 12px; margin: 2px 0 4px; max-width: 60em; }
.logit rect { fill: #ffe082; stroke: #263238; }
.edge { stroke-opacity: 0.55; pointer-events: none; }
.edge.pos { stroke: #1f5fbf; }
.edge.neg { stroke: #c62828; }
.edge.residual { stroke: #9e9e9e; stroke-dasharray: 3 3; stroke-width: 0.6; }
.edge.to-logits { stroke-opacity: 0.25; }
.edge.dim { stroke-opacity: 0.06; }
.edge.hi { stroke-opacity: 0.95; }
.controls { margin: 6px 0; } .hint { color: #777; font-size: 12px; margin-left: 8px; }
.legend .sw { display: inline-block; width: 22px; height: 3px; vertical-align: middle; margin-left: 8px; }
.sw.pos { background: #1f5fbf; } .sw.neg { background: #c62828; }
.sw.res { border-top: 2px dashed #9e9e9e; height: 0; }
.note { color: #8a4b00; }
.prompt { font: 12px ui-monospace, monospace; white-space: pre-wrap; border: 1px solid #eee; padding: 4px;
  margin: 4px 0; }
.prompt .ans { outline: 2px solid #333; }
.edges-table { font-size: 12px; border-collapse: collapse; } .edges-table td { padding: 0 8px 0 0; }
.edges-table a { cursor: pointer; color: #1f5fbf; }
"""

JS = r"""(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("circuit-data").textContent);
  var svg = document.getElementById("graph"), detail = document.getElementById("node-detail");
  var W = +svg.getAttribute("data-width"), H = +svg.getAttribute("data-height");
  var view = {x: 0, y: 0, w: W, h: H};
  function setView() { svg.setAttribute("viewBox", [view.x, view.y, view.w, view.h].join(" ")); }
  function zoom(f, cx, cy) {
    cx = cx === undefined ? view.x + view.w / 2 : cx; cy = cy === undefined ? view.y + view.h / 2 : cy;
    view.x = cx - (cx - view.x) * f; view.y = cy - (cy - view.y) * f; view.w *= f; view.h *= f; setView();
  }
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var r = svg.getBoundingClientRect();
    zoom(ev.deltaY > 0 ? 1.15 : 1 / 1.15, view.x + (ev.clientX - r.left) / r.width * view.w,
         view.y + (ev.clientY - r.top) / r.height * view.h);
  }, {passive: false});
  var drag = null;
  svg.addEventListener("mousedown", function (ev) { drag = {x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y}; });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) return;
    var r = svg.getBoundingClientRect();
    view.x = drag.vx - (ev.clientX - drag.x) / r.width * view.w;
    view.y = drag.vy - (ev.clientY - drag.y) / r.height * view.h; setView();
  });
  document.getElementById("zoom-in").onclick = function () { zoom(1 / 1.4); };
  document.getElementById("zoom-out").onclick = function () { zoom(1.4); };
  document.getElementById("zoom-reset").onclick = function () { view = {x: 0, y: 0, w: W, h: H}; setView(); };

  // unpack: per-example numbers are base64 signed bytes times a per-node scale / QUANT (-128: missing); the
  // edges three base64 columns (source and destination node numbers, 16-bit weights); the examples, on a
  // board, in a file shared by the task's pages
  if (data.examplesRef) data.examples = (window.CB_EXAMPLES || {})[data.examplesRef] || [];
  function bytes(s) {
    var b = atob(s), u = new Uint8Array(b.length);
    for (var i = 0; i < b.length; i++) u[i] = b.charCodeAt(i);
    return new DataView(u.buffer);
  }
  function i8(s, f) {
    if (s === null || s === undefined) return null;
    var d = bytes(s), out = [];
    for (var i = 0; i < d.byteLength; i++) { var v = d.getInt8(i); out.push(v === -128 ? null : v * f); }
    return out;
  }
  Object.keys(data.nodes).forEach(function (name) {
    var n = data.nodes[name], f = n.as / QUANT;
    n.act = i8(n.act, f);
    n.topActs = (n.topActs || []).map(function (t) { return i8(t, f); });
    n.effect = i8(n.effect, n.es / QUANT);
  });
  (function () {
    var e = data.edges, src = bytes(e.src), dst = bytes(e.dst), w = bytes(e.w), wide = e.index === "I", list = [];
    for (var i = 0; i < e.n; i++) {
      var a = wide ? src.getUint32(4 * i, true) : src.getUint16(2 * i, true);
      var b = wide ? dst.getUint32(4 * i, true) : dst.getUint16(2 * i, true), v = w.getInt16(2 * i, true);
      list.push([data.names[a], data.names[b], v === -32768 ? null : v * e.ws / 32767]);
    }
    data.edges = list;
  })();
  var pos = {}, SVGNS = "http://www.w3.org/2000/svg";
  document.querySelectorAll("[data-node], .logit").forEach(function (g) {
    var m = g.transform.baseVal.getItem(0).matrix;
    pos[g.getAttribute("data-node") || "logits"] = [m.e, m.f];
  });
  var edgeLayer = document.getElementById("edges"), top = 0;
  data.edges.forEach(function (e) { if (e[2] !== null) top = Math.max(top, Math.abs(e[2])); });
  function line(src, dst, cls, width) {
    var l = document.createElementNS(SVGNS, "line"), a = pos[src], b = pos[dst];
    l.setAttribute("class", cls); l.setAttribute("data-src", src); l.setAttribute("data-dst", dst);
    l.setAttribute("x1", a[0]); l.setAttribute("y1", a[1]); l.setAttribute("x2", b[0]); l.setAttribute("y2", b[1]);
    if (width) l.setAttribute("stroke-width", width.toFixed(2));
    edgeLayer.appendChild(l);
  }
  data.edges.forEach(function (e) {
    if (e[2] === null) line(e[0], e[1], "edge residual");
    else line(e[0], e[1], "edge " + (e[2] > 0 ? "pos" : "neg"), 0.4 + 2.6 * Math.abs(e[2]) / (top || 1));
  });
  Object.keys(data.nodes).forEach(function (name) {  // every write channel reaches the logits (residual stream)
    var k = data.nodes[name].kind;
    if (k === "attn_out" || k === "mlp_out") line(name, "logits", "edge residual to-logits");
  });

  var incoming = {}, outgoing = {};
  data.edges.forEach(function (e) {
    (incoming[e[1]] = incoming[e[1]] || []).push(e); (outgoing[e[0]] = outgoing[e[0]] || []).push(e);
  });
  function esc(s) {
    var map = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"};
    return String(s).replace(/[&<>"]/g, function (c) { return map[c]; });
  }
  function fmt(x) {
    return x === null || x === undefined ? "–" : (Math.abs(x) >= 1000 ? x.toFixed(0) : x.toPrecision(3));
  }
  function diverge(t) {  // t in [-1, 1]: red (negative) to white to blue (positive)
    t = Math.max(-1, Math.min(1, t || 0));
    var a = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? "rgb(" + a + "," + Math.round(a + (255 - a) * 0.25) + ",255)" : "rgb(255," + a + "," + a + ")";
  }
  function strip(n) {
    var w = 330, h = 70, acts = n.act, lo = Math.min.apply(null, acts), hi = Math.max.apply(null, acts);
    if (hi === lo) { hi = lo + 1; }
    var out = '<svg class="strip" width="' + w + '" height="' + h + '">';
    acts.forEach(function (a, r) {
      var side = data.examples[r] ? data.examples[r].side : r % 2, x = 70 + (a - lo) / (hi - lo) * (w - 80);
      var y = 18 + side * 30 + ((r * 7919) % 13) - 6;
      out += '<circle cx="' + x.toFixed(1) + '" cy="' + y + '" r="2.2" fill="' + (side ? "#c62828" : "#1f5fbf") +
             '" fill-opacity="0.5"/>';
    });
    out += '<text x="0" y="22" font-size="11">side 0</text><text x="0" y="52" font-size="11">side 1</text>' +
           '<text x="70" y="68" font-size="10">' + fmt(lo) + '</text><text x="' + (w - 40) +
           '" y="68" font-size="10">' + fmt(hi) + "</text></svg>";
    return out;
  }
  function prompt(n, i) {
    var r = n.top[i], ex = data.examples[r], acts = n.topActs[i], m = 0;
    acts.forEach(function (a) { m = Math.max(m, Math.abs(a)); });
    var html = '<div class="prompt" data-row="' + r + '">';
    ex.tokens.forEach(function (t, p) {
      html += '<span' + (p === ex.tokens.length - 1 ? ' class="ans"' : "") + ' title="' + fmt(acts[p]) +
              '" style="background:' + diverge(m ? acts[p] / m : 0) + '">' + esc(t) + "</span>";
    });
    return html + "</div><small>example " + r + " (pair " + ex.pair + ", side " + ex.side + "): answer " +
           esc(JSON.stringify(ex.correct)) + ", activation here " + fmt(n.act[r]) + "</small>";
  }
  function edgeRows(list, end) {
    list = list.slice().sort(function (a, b) { return Math.abs(b[2] || 0) - Math.abs(a[2] || 0); });
    return list.slice(0, 40).map(function (e) {
      return '<tr><td><a data-go="' + esc(e[end]) + '">' + esc(e[end]) + "</a></td><td>" +
             (e[2] === null ? "residual" : fmt(e[2])) + "</td></tr>";
    }).join("") + (list.length > 40 ? "<tr><td>… " + (list.length - 40) + " more</td></tr>" : "");
  }
  function select(name) {
    var n = data.nodes[name];
    if (!n) return;
    document.querySelectorAll(".node.selected").forEach(function (g) { g.classList.remove("selected"); });
    var g = document.querySelector('[data-node="' + name + '"]');
    if (g) g.classList.add("selected");
    document.querySelectorAll("#edges line").forEach(function (l) {
      var on = l.getAttribute("data-src") === name || l.getAttribute("data-dst") === name;
      l.classList.toggle("hi", on); l.classList.toggle("dim", !on);
    });
    var h = "<h2>" + esc(name) + "</h2><p>" + esc(n.kind) + " channel " + n.channel + " of site " + esc(n.site) +
            " (layer " + n.layer + "); score " + fmt(n.score) + "</p>";
    if (n.act) {
      h += "<h3>Activation at the answer position</h3>" + strip(n) + "<p>mean " + fmt(n.m0) + " on side 0 (" +
           esc(data.sides[0]) + "), " + fmt(n.m1) + " on side 1 (" + esc(data.sides[1]) +
           "); separation " + fmt(n.sep) + " within-side standard deviations</p>";
      if (n.ablLoss !== null && n.ablLoss !== undefined) {
        var eff = 0; n.effect.forEach(function (x) { eff += x; }); eff /= Math.max(1, n.effect.length);
        h += "<p>Ablating this node alone from the circuit, on the first " + data.ablationRows +
             " test examples: task loss " + fmt(data.ablationLoss) + " → " + fmt(n.ablLoss) +
             "; the correct answer's logit lead drops by " + fmt(eff) + " on average.</p>";
      } else {
        h += "<p>Not ablated alone (only the " + data.nodesAblated + " highest-scoring nodes are).</p>";
      }
      h += "<h3>Where it is most active</h3>";
      for (var i = 0; i < n.top.length; i++) { h += prompt(n, i); }
    } else {
      h += '<p class="note">' + (data.measured ? "No activations for this node (the page measures the " +
           data.nodesWithData + " highest-scoring nodes)." : "Activations not measured: " + esc(data.whyMissing)) +
           "</p>";
    }
    h += "<h3>Incoming edges (" + (incoming[name] || []).length + ")</h3><table class=\"edges-table\">" +
         edgeRows(incoming[name] || [], 0) + "</table><h3>Outgoing edges (" + (outgoing[name] || []).length +
         ")</h3><table class=\"edges-table\">" + edgeRows(outgoing[name] || [], 1) + "</table>";
    if (!data.edgesComplete) h += "<p class=\"note\">The edge table keeps the strongest " + data.edges.length +
                                  " of " + data.edgesTotal + " edges.</p>";
    detail.innerHTML = h;
    detail.querySelectorAll("[data-go]").forEach(function (a) {
      a.onclick = function () { select(a.getAttribute("data-go")); };
    });
  }
  document.querySelectorAll("[data-node]").forEach(function (g) {
    g.addEventListener("click", function (ev) { ev.stopPropagation(); select(g.getAttribute("data-node")); });
  });
  var modeSelect = document.getElementById("pair-select");
  function colour() {
    var mode = modeSelect.value, vals = {}, m = 0;
    Object.keys(data.nodes).forEach(function (name) {
      var n = data.nodes[name], v = null;
      if (mode === "contrast" && n.m0 !== null && n.m0 !== undefined) v = n.m0 - n.m1;
      else if (mode.indexOf("pair:") === 0 && n.act) { var j = +mode.slice(5); v = n.act[2 * j] - n.act[2 * j + 1]; }
      vals[name] = v; if (v !== null) m = Math.max(m, Math.abs(v));
    });
    document.querySelectorAll("[data-node]").forEach(function (g) {
      var name = g.getAttribute("data-node"), n = data.nodes[name], c = g.querySelector("circle");
      c.setAttribute("fill", mode === "kind" || vals[name] === null ? (data.kindColours[n.kind] || "#fff")
                                                                      : diverge(m ? vals[name] / m : 0));
    });
  }
  modeSelect.addEventListener("change", colour);
})();
"""
