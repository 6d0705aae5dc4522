// written by amtutorial.web_demo
// The interactive retrieval widget (written by amtutorial.web_demo): pick a held-out picture, hide patches, play.
(function () {
  "use strict";
  const BLUE = [89, 115, 191];  // hidden patches, as in the package's figures
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text) e.textContent = text;
    return e;
  }
  function init(root) {
    const et = new ETDemo(window.ET_DEMO_MODEL), side = et.side, P = et.P, G = et.G, K = et.K, S = 8;
    const raw = atob(window.ET_DEMO_MODEL.images), nPics = window.ET_DEMO_MODEL.n_images;
    const state = {pic: 0, mask: new Array(K).fill(false), cursor: 0, result: null, timer: null};
    root.textContent = "";
    const bar = el("div", {class: "et-demo-controls"});
    const pick = el("select", {"aria-label": "held-out test picture"});
    for (let i = 0; i < nPics; i++) pick.appendChild(el("option", {value: String(i)}, "test picture " + (i + 1)));
    const half = el("button", {type: "button"}, "hide a random half");
    const clear = el("button", {type: "button"}, "show all");
    const play = el("button", {type: "button"}, "play the descent");
    [pick, half, clear, play].forEach(b => bar.appendChild(b));
    const row = el("div", {class: "et-demo-row", style: "display:flex;gap:1rem;flex-wrap:wrap;align-items:flex-start"});
    const given = el("canvas", {width: side * S, height: side * S, tabindex: "0", role: "grid",
      "aria-label": "the picture as the model is given it: click a patch, or move with the arrow keys and press Enter or Space, to hide or show it"});
    const filled = el("canvas", {width: side * S, height: side * S, "aria-label": "the picture being filled in"});
    const curve = el("canvas", {width: 260, height: side * S, "aria-label": "the energy, step by step"});
    [given, filled, curve].forEach(c => { c.style.border = "1px solid #ccc"; row.appendChild(c); });
    const status = el("p", {class: "et-demo-status", "aria-live": "polite"});
    root.append(bar, row, status);

    const pixels = i => { const n = side * side, px = new Float64Array(n);
      for (let k = 0; k < n; k++) px[k] = raw.charCodeAt(i * n + k) / 255; return px; };
    const hiddenPixel = (r, c) => state.mask[Math.floor(r / P) * G + Math.floor(c / P)];
    function draw(canvas, px, paintHidden, cursor) {
      const ctx = canvas.getContext("2d"), img = ctx.createImageData(side * S, side * S);
      for (let y = 0; y < side * S; y++) for (let x = 0; x < side * S; x++) {
        const r = Math.floor(y / S), c = Math.floor(x / S), o = 4 * (y * side * S + x);
        const v = Math.round(255 * Math.min(1, Math.max(0, px[r * side + c])));
        const rgb = paintHidden && hiddenPixel(r, c) ? BLUE : [v, v, v];
        img.data[o] = rgb[0]; img.data[o + 1] = rgb[1]; img.data[o + 2] = rgb[2]; img.data[o + 3] = 255;
      }
      ctx.putImageData(img, 0, 0);
      if (cursor !== undefined && document.activeElement === canvas) {
        ctx.strokeStyle = "#e0a000"; ctx.lineWidth = 2;
        ctx.strokeRect((cursor % G) * P * S + 1, Math.floor(cursor / G) * P * S + 1, P * S - 2, P * S - 2);
      }
    }
    function drawCurve(E, t) {
      const ctx = curve.getContext("2d"), w = curve.width, h = curve.height;
      ctx.clearRect(0, 0, w, h); ctx.fillStyle = "#333"; ctx.font = "12px sans-serif";
      ctx.fillText("energy - energy at step 0", 6, 14);
      if (!E) return;
      const rel = E.map(e => e - E[0]), lo = Math.min(...rel), pad = 24;
      const X = s => pad + (w - 2 * pad) * s / (E.length - 1), Yc = v => pad + (h - 2 * pad) * (v / (lo || -1));
      ctx.strokeStyle = "#2060a0"; ctx.lineWidth = 2; ctx.beginPath();
      for (let s = 0; s <= t; s++) { if (s === 0) ctx.moveTo(X(s), Yc(rel[s])); else ctx.lineTo(X(s), Yc(rel[s])); }
      ctx.stroke(); ctx.fillText("step " + t + " of " + (E.length - 1), 6, h - 6);
    }
    function psnr(out, px) {  // over the hidden pixels, the output clipped to [0, 1]
      let se = 0, n = 0;
      for (let i = 0; i < px.length; i++) if (hiddenPixel(Math.floor(i / side), i % side)) {
        const d = Math.min(1, Math.max(0, out[i])) - px[i]; se += d * d; n++; }
      return n ? 10 * Math.log10(1 / Math.max(se / n, 1e-10)) : Infinity;
    }
    function refresh() {
      const px = pixels(state.pic);
      draw(given, px, true, state.cursor); draw(filled, px, true); drawCurve(null, 0);
      const n = state.mask.filter(Boolean).length;
      status.textContent = n + " of " + K + " patches hidden. Press play to let the model fill them in.";
    }
    function stop() { if (state.timer) { clearInterval(state.timer); state.timer = null; } }
    function run() {  // the whole descent at once, then shown step by step
      stop();
      const px = pixels(state.pic), r = et.inpaint(et.normalize(px), state.mask.slice());
      const imgs = r.images.map(a => et.denormalize(a));
      state.result = {energies: r.energies, psnr: imgs.map(a => psnr(a, px)), images: imgs};
      let t = 0;
      const show = () => {
        draw(filled, imgs[t], false); drawCurve(r.energies, t);
        status.textContent = "step " + t + " of " + (imgs.length - 1) + ": energy " + Math.round(r.energies[0] - r.energies[t]) +
          " below the start, PSNR over the hidden pixels " + state.result.psnr[t].toFixed(2) + " dB";
        if (++t >= imgs.length) stop();
      };
      show(); state.timer = setInterval(show, 180);
      return state.result;
    }
    given.addEventListener("click", ev => {
      const b = given.getBoundingClientRect(), c = Math.floor((ev.clientX - b.left) / (b.width / G)),
            r = Math.floor((ev.clientY - b.top) / (b.height / G));
      if (r >= 0 && r < G && c >= 0 && c < G) { state.cursor = r * G + c; state.mask[state.cursor] = !state.mask[state.cursor]; stop(); refresh(); }
    });
    given.addEventListener("keydown", ev => {
      const moves = {ArrowLeft: -1, ArrowRight: 1, ArrowUp: -G, ArrowDown: G};
      if (ev.key in moves) { state.cursor = Math.min(K - 1, Math.max(0, state.cursor + moves[ev.key])); }
      else if (ev.key === "Enter" || ev.key === " ") { state.mask[state.cursor] = !state.mask[state.cursor]; stop(); }
      else return;
      ev.preventDefault(); refresh();
    });
    given.addEventListener("focus", refresh); given.addEventListener("blur", refresh);
    pick.addEventListener("change", () => { state.pic = Number(pick.value); stop(); refresh(); });
    half.addEventListener("click", () => {
      const idx = Array.from({length: K}, (_, k) => k);
      for (let i = K - 1; i > 0; i--) { const j = Math.floor(Math.random() * (i + 1)); [idx[i], idx[j]] = [idx[j], idx[i]]; }
      state.mask = new Array(K).fill(false); idx.slice(0, Math.round(K / 2)).forEach(k => { state.mask[k] = true; });
      stop(); refresh();
    });
    clear.addEventListener("click", () => { state.mask = new Array(K).fill(false); stop(); refresh(); });
    play.addEventListener("click", run);
    half.click();
    // for scripts and tests: choose a picture and a mask, and run
    root.etDemo = {setPicture: i => { pick.value = String(i); state.pic = i; refresh(); },
                   setMask: m => { state.mask = Array.from(m, Boolean); refresh(); }, play: run};
  }
  function start() { document.querySelectorAll(".et-demo").forEach(init); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
