// written by amtutorial.web_demo
// The Energy Transformer's descent for one image, in plain JavaScript (written by amtutorial.web_demo).
// The maths of amtutorial.energy_transformer: x <- x + alpha * (-dE/dg), with g = LayerNorm(x).
(function (root) {
  "use strict";
  function f32(b64) {
    const s = atob(b64), u = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return new Float32Array(u.buffer);
  }
  function dot(a, i, b, j, n) {  // sum_k a[i + k] b[j + k], four partial sums (n is a multiple of 4)
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let k = 0; k < n; k += 4) {
      s0 += a[i + k] * b[j + k]; s1 += a[i + k + 1] * b[j + k + 1];
      s2 += a[i + k + 2] * b[j + k + 2]; s3 += a[i + k + 3] * b[j + k + 3];
    }
    return (s0 + s1) + (s2 + s3);
  }
  function ETDemo(m) {
    const c = m.config;
    this.config = c; this.D = c.D; this.H = c.H; this.Y = c.Y; this.M = c.M; this.P = c.patch_size;
    this.side = c.image_side; this.G = this.side / this.P; this.K = this.G * this.G; this.N = this.K + 1;
    this.F = 2 * c.H * c.Y + c.M; this.beta = c.beta;
    for (const k of ["Wenc", "Benc", "mask_token", "cls_token", "pos_embed", "delta", "W", "Wdec", "Bdec"])
      this[k] = f32(m.arrays[k]);
    this.gamma = f32(m.arrays.gamma)[0];
    if (this.D % 4 || this.F % 4) throw new Error("ETDemo needs D and 2HY + M to be multiples of 4");
    this.W = Float64Array.from(this.W);  // doubles, as every other array of the computation
    this.WT = new Float64Array(this.F * this.D);  // W transposed: row f is column f of W, for Z = g W
    for (let d = 0; d < this.D; d++) for (let f = 0; f < this.F; f++) this.WT[f * this.D + d] = this.W[d * this.F + f];
  }
  // pixels (side*side, in [0, 1]) -> the model's range; and back
  ETDemo.prototype.normalize = function (px) { const c = this.config; return px.map(v => (v - c.pixel_mean) / c.pixel_std); };
  ETDemo.prototype.denormalize = function (im) { const c = this.config; return im.map(v => v * c.pixel_std + c.pixel_mean); };
  // patch k = kh * G + kw; inside a patch, index ph * P + pw
  ETDemo.prototype.patchVector = function (im, k) {
    const P = this.P, kh = Math.floor(k / this.G), kw = k % this.G, out = new Float64Array(P * P);
    for (let ph = 0; ph < P; ph++) for (let pw = 0; pw < P; pw++) out[ph * P + pw] = im[(kh * P + ph) * this.side + kw * P + pw];
    return out;
  };
  ETDemo.prototype.encode = function (im, mask) {
    const D = this.D, PP = this.P * this.P, x = new Float64Array(this.N * D);
    for (let d = 0; d < D; d++) x[d] = this.cls_token[d] + this.pos_embed[d];
    for (let k = 0; k < this.K; k++) {
      const row = (k + 1) * D;
      if (mask[k]) { for (let d = 0; d < D; d++) x[row + d] = this.mask_token[d]; }
      else {
        const p = this.patchVector(im, k);
        for (let d = 0; d < D; d++) { let s = this.Benc[d]; for (let i = 0; i < PP; i++) s += p[i] * this.Wenc[i * D + d]; x[row + d] = s; }
      }
      for (let d = 0; d < D; d++) x[row + d] += this.pos_embed[row + d];
    }
    return x;
  };
  ETDemo.prototype.lnorm = function (x) {  // g = gamma (x - mean) / sqrt(var + eps) + delta, per token
    const D = this.D, g = new Float64Array(x.length);
    for (let n = 0; n < this.N; n++) {
      let mu = 0; for (let d = 0; d < D; d++) mu += x[n * D + d]; mu /= D;
      let v = 0; for (let d = 0; d < D; d++) { const t = x[n * D + d] - mu; v += t * t; } v /= D;
      const s = this.gamma / Math.sqrt(v + this.config.eps);
      for (let d = 0; d < D; d++) g[n * D + d] = (x[n * D + d] - mu) * s + this.delta[d];
    }
    return g;
  };
  // E(g) and the update -dE/dg = V W^T, with Z = g W = [keys | queries | memory overlaps]
  ETDemo.prototype.energyAndUpdate = function (g, energyOnly) {
    const N = this.N, D = this.D, F = this.F, H = this.H, Y = this.Y, HY = H * Y, W = this.W, b = this.beta;
    const Z = new Float64Array(N * F), WT = this.WT;
    for (let n = 0; n < N; n++) for (let f = 0; f < F; f++) Z[n * F + f] = dot(g, n * D, WT, f * D, D);
    const V = new Float64Array(N * F);
    let E = 0;
    const A = new Float64Array(N * N);  // attention of one head: A[c * N + bk], softmax over keys bk
    for (let h = 0; h < H; h++) {
      for (let c = 0; c < N; c++) {
        let mx = -Infinity;
        for (let bk = 0; bk < N; bk++) {
          let s = 0; for (let y = 0; y < Y; y++) s += Z[bk * F + h * Y + y] * Z[c * F + HY + h * Y + y];
          s *= b; A[c * N + bk] = s; if (s > mx) mx = s;
        }
        let tot = 0; for (let bk = 0; bk < N; bk++) { const e = Math.exp(A[c * N + bk] - mx); A[c * N + bk] = e; tot += e; }
        for (let bk = 0; bk < N; bk++) A[c * N + bk] /= tot;
        E -= (mx + Math.log(tot)) / b;
      }
      for (let bk = 0; bk < N; bk++) for (let c = 0; c < N; c++) {
        const a = A[c * N + bk];
        for (let y = 0; y < Y; y++) {
          V[bk * F + h * Y + y] += a * Z[c * F + HY + h * Y + y];  // token bk as a key: the queries attending to it
          V[c * F + HY + h * Y + y] += a * Z[bk * F + h * Y + y];  // token c as a query: the keys it attends to
        }
      }
    }
    for (let n = 0; n < N; n++) for (let m = 2 * HY; m < F; m++) {
      const r = Math.max(Z[n * F + m], 0); V[n * F + m] = r; E -= 0.5 * r * r;
    }
    if (energyOnly) return [E, null];
    const u = new Float64Array(N * D);
    for (let n = 0; n < N; n++) for (let f = 0; f < F; f++) {  // u_n = sum_f V[n, f] W[:, f]: rows of W^T, zeros skipped
      const v = V[n * F + f];
      if (v === 0) continue;  // most memories are silent (ReLU) for a given token
      for (let d = 0; d < D; d++) u[n * D + d] += v * WT[f * D + d];
    }
    return [E, u];
  };
  ETDemo.prototype.decode = function (x, im, mask) {  // visible patches of `im` pasted back
    const D = this.D, P = this.P, PP = P * P, g = this.lnorm(x), out = new Float64Array(this.side * this.side);
    for (let k = 0; k < this.K; k++) {
      const kh = Math.floor(k / this.G), kw = k % this.G, row = (k + 1) * D;
      for (let i = 0; i < PP; i++) {
        const r = kh * P + Math.floor(i / P), q = kw * P + (i % P);
        if (!mask[k]) { out[r * this.side + q] = im[r * this.side + q]; continue; }
        let s = this.Bdec[i]; for (let d = 0; d < D; d++) s += g[row + d] * this.Wdec[d * PP + i];
        out[r * this.side + q] = s;
      }
    }
    return out;
  };
  // The whole retrieval: normalised image and mask in; every step's image and the nsteps + 1 energies out.
  ETDemo.prototype.inpaint = function (im, mask, nsteps, alpha) {
    nsteps = nsteps === undefined ? this.config.nsteps : nsteps;
    alpha = alpha === undefined ? this.config.alpha : alpha;
    let x = this.encode(im, mask);
    const energies = [], images = [this.decode(x, im, mask)];
    for (let t = 0; t <= nsteps; t++) {
      const [E, u] = this.energyAndUpdate(this.lnorm(x), t === nsteps);
      energies.push(E);
      if (t === nsteps) break;
      for (let i = 0; i < x.length; i++) x[i] += alpha * u[i];
      images.push(this.decode(x, im, mask));
    }
    return {images: images, energies: energies};
  };
  root.ETDemo = ETDemo;
})(typeof window !== "undefined" ? window : globalThis);
