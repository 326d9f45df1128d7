// The report's behaviour: graph pan/zoom and node statistics, the epoch slider. No network, no libraries.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const $ = (id) => document.getElementById(id);
  const fmt = (x) => (x === null || x === undefined ? "–" : Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0)
    ? x.toExponential(3) : x.toFixed(4));

  // ---- graph: drag to pan, wheel to zoom (around the cursor), double-click or "fit" to reset ----
  const holder = $("graph");
  const svg = holder && holder.querySelector("svg");
  if (svg) {
    const base = svg.viewBox.baseVal;
    const home = [base.x, base.y, base.width, base.height];
    const set = (v) => svg.setAttribute("viewBox", v.join(" "));
    const view = () => [base.x, base.y, base.width, base.height];
    svg.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = svg.getBoundingClientRect();
      const [x, y, w, h] = view();
      const k = e.deltaY > 0 ? 1.15 : 1 / 1.15;
      const px = x + ((e.clientX - r.left) / r.width) * w, py = y + ((e.clientY - r.top) / r.height) * h;
      set([px - (px - x) * k, py - (py - y) * k, w * k, h * k]);
    }, { passive: false });
    let drag = null;
    svg.addEventListener("pointerdown", (e) => { drag = [e.clientX, e.clientY, ...view()]; });
    window.addEventListener("pointerup", () => { drag = null; });
    svg.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const r = svg.getBoundingClientRect();
      const [cx, cy, x, y, w, h] = drag;
      set([x - ((e.clientX - cx) / r.width) * w, y - ((e.clientY - cy) / r.height) * h, w, h]);
    });
    const fit = () => set(home);
    svg.addEventListener("dblclick", fit);
    $("graph-fit").addEventListener("click", fit);

    // ---- a click on a node shows its statistics ----
    const panel = $("node-panel");
    const rows = (title, s) => !s ? "" : `<tr><th colspan=2>${title}</th></tr>` +
      ["mean", "std", "min", "max", "norm"].map((k) => `<tr><td>${k}</td><td>${fmt(s[k])}</td></tr>`).join("");
    const show = (g) => {
      svg.querySelectorAll("g.node.selected").forEach((n) => n.classList.remove("selected"));
      g.classList.add("selected");
      const key = g.querySelector("title").textContent;
      const s = data.nodes[key];
      if (!s) { panel.innerHTML = `<p>no statistics for node ${key}</p>`; return; }
      panel.innerHTML = `<h3>${s.kind === "op" ? "op " : ""}${s.name || key}</h3><table>` +
        `<tr><td>shape</td><td>(${s.shape.join(", ")})</td></tr><tr><td>dtype</td><td>${s.dtype}</td></tr>` +
        rows("value", s.value) + rows("gradient", s.grad) + "</table>";
      panel.dataset.node = key;
    };
    svg.querySelectorAll("g.node").forEach((g) => g.addEventListener("click", (e) => { e.stopPropagation(); show(g); }));
  }

  // ---- the epoch slider: every per-epoch picture follows it ----
  const slider = $("epoch");
  if (slider && data.epochs.length) {
    const update = () => {
      const snap = data.epochs[Number(slider.value)];
      $("epoch-label").textContent = `epoch ${snap.epoch}`;
      document.querySelectorAll("img[data-key]").forEach((img) => {
        const src = snap.images[img.dataset.key];
        img.style.visibility = src ? "visible" : "hidden";
        if (src) img.src = src;
      });
    };
    slider.addEventListener("input", update);
    update();
  }

  // ---- for tests and screenshots: #select=<node id> clicks that node, #only=<section id> hides the rest ----
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("select") && svg) {
    for (const g of svg.querySelectorAll("g.node")) {
      if (g.querySelector("title").textContent === hash.get("select")) {
        g.dispatchEvent(new MouseEvent("click", { bubbles: true }));
      }
    }
  }
  if (hash.get("only") && $(hash.get("only"))) {
    document.querySelectorAll("body > h1, body > p, body > section").forEach((el) => {
      if (el.id !== hash.get("only")) el.style.display = "none";
    });
  }
})();
