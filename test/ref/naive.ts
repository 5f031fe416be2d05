// Naive float64 references for every op, forward and backward: plain loops over row-major (NCHW) arrays.
// Independent of the native code on purpose: the CPU and CUDA backends are both tested against these.

export type Arr = Float64Array | Float32Array | number[];
export type Shape4 = [number, number, number, number];

export interface ConvP {
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
}

const i4 = (s: Shape4, n: number, c: number, h: number, w: number) => ((n * s[1] + c) * s[2] + h) * s[3] + w;

export function outSize(inp: number, k: number, stride: number, pad: number): number {
  return Math.floor((inp + 2 * pad - k) / stride) + 1;
}

// ---- conv2d: x (N,C,H,W), w (K,C,R,S), b (K) -> y (N,K,P,Q)
export function convForward(x: Arr, xs: Shape4, w: Arr, ws: Shape4, b: Arr | null, p: ConvP, relu = false) {
  const [N, C, H, W] = xs;
  const [K, , R, S] = ws;
  const P = outSize(H, R, p.strideH, p.padH), Q = outSize(W, S, p.strideW, p.padW);
  const ys: Shape4 = [N, K, P, Q];
  const y = new Float64Array(N * K * P * Q);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++)
      for (let oh = 0; oh < P; oh++)
        for (let ow = 0; ow < Q; ow++) {
          let acc = b ? Number(b[k]) : 0;
          for (let c = 0; c < C; c++)
            for (let r = 0; r < R; r++) {
              const h = oh * p.strideH - p.padH + r;
              if (h < 0 || h >= H) continue;
              for (let s = 0; s < S; s++) {
                const ww = ow * p.strideW - p.padW + s;
                if (ww < 0 || ww >= W) continue;
                acc += Number(x[i4(xs, n, c, h, ww)]) * Number(w[i4(ws, k, c, r, s)]);
              }
            }
          y[i4(ys, n, k, oh, ow)] = relu ? Math.max(0, acc) : acc;
        }
  return { y, shape: ys };
}

export function convBackwardData(dy: Arr, w: Arr, ws: Shape4, xs: Shape4, p: ConvP): Float64Array {
  const [N, C, H, W] = xs;
  const [K, , R, S] = ws;
  const P = outSize(H, R, p.strideH, p.padH), Q = outSize(W, S, p.strideW, p.padW);
  const ys: Shape4 = [N, K, P, Q];
  const dx = new Float64Array(N * C * H * W);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++)
      for (let oh = 0; oh < P; oh++)
        for (let ow = 0; ow < Q; ow++) {
          const g = Number(dy[i4(ys, n, k, oh, ow)]);
          for (let c = 0; c < C; c++)
            for (let r = 0; r < R; r++) {
              const h = oh * p.strideH - p.padH + r;
              if (h < 0 || h >= H) continue;
              for (let s = 0; s < S; s++) {
                const ww = ow * p.strideW - p.padW + s;
                if (ww < 0 || ww >= W) continue;
                dx[i4(xs, n, c, h, ww)] += g * Number(w[i4(ws, k, c, r, s)]);
              }
            }
        }
  return dx;
}

export function convBackwardWeights(x: Arr, xs: Shape4, dy: Arr, ws: Shape4, p: ConvP) {
  const [N, C, H, W] = xs;
  const [K, , R, S] = ws;
  const P = outSize(H, R, p.strideH, p.padH), Q = outSize(W, S, p.strideW, p.padW);
  const ys: Shape4 = [N, K, P, Q];
  const dw = new Float64Array(K * C * R * S);
  const db = new Float64Array(K);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++)
      for (let oh = 0; oh < P; oh++)
        for (let ow = 0; ow < Q; ow++) {
          const g = Number(dy[i4(ys, n, k, oh, ow)]);
          db[k] += g;
          for (let c = 0; c < C; c++)
            for (let r = 0; r < R; r++) {
              const h = oh * p.strideH - p.padH + r;
              if (h < 0 || h >= H) continue;
              for (let s = 0; s < S; s++) {
                const ww = ow * p.strideW - p.padW + s;
                if (ww < 0 || ww >= W) continue;
                dw[i4(ws, k, c, r, s)] += g * Number(x[i4(xs, n, c, h, ww)]);
              }
            }
        }
  return { dw, db };
}

// ---- relu
export function reluForward(x: Arr): Float64Array {
  return Float64Array.from(x as ArrayLike<number>, (v) => (v > 0 ? v : 0));
}
export function reluBackward(dy: Arr, y: Arr): Float64Array {
  return Float64Array.from(dy as ArrayLike<number>, (g, i) => (Number(y[i]) > 0 ? g : 0));
}

// ---- max pool (floor mode, padding never wins); argmax is the first maximum in window order (r, then s)
export function maxpoolForward(x: Arr, xs: Shape4, k: number, stride: number, pad: number) {
  const [N, C, H, W] = xs;
  const P = outSize(H, k, stride, pad), Q = outSize(W, k, stride, pad);
  const ys: Shape4 = [N, C, P, Q];
  const y = new Float64Array(N * C * P * Q);
  const argmax = new Int32Array(N * C * P * Q);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let oh = 0; oh < P; oh++)
        for (let ow = 0; ow < Q; ow++) {
          let best = -Infinity, at = -1;
          for (let r = 0; r < k; r++) {
            const h = oh * stride - pad + r;
            if (h < 0 || h >= H) continue;
            for (let s = 0; s < k; s++) {
              const w = ow * stride - pad + s;
              if (w < 0 || w >= W) continue;
              const v = Number(x[i4(xs, n, c, h, w)]);
              if (v > best) {
                best = v;
                at = i4(xs, n, c, h, w);
              }
            }
          }
          y[i4(ys, n, c, oh, ow)] = best;
          argmax[i4(ys, n, c, oh, ow)] = at;
        }
  return { y, argmax, shape: ys };
}
export function maxpoolBackward(dy: Arr, argmax: Int32Array, xs: Shape4): Float64Array {
  const dx = new Float64Array(xs[0] * xs[1] * xs[2] * xs[3]);
  for (let i = 0; i < argmax.length; i++) dx[argmax[i]] += Number(dy[i]);
  return dx;
}

// ---- adaptive average pool, PyTorch's windows [floor(i*H/oh), ceil((i+1)*H/oh))
const wStart = (i: number, inp: number, out: number) => Math.floor((i * inp) / out);
const wEnd = (i: number, inp: number, out: number) => Math.ceil(((i + 1) * inp) / out);
export function adaptiveAvgForward(x: Arr, xs: Shape4, oh: number, ow: number) {
  const [N, C, H, W] = xs;
  const ys: Shape4 = [N, C, oh, ow];
  const y = new Float64Array(N * C * oh * ow);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let i = 0; i < oh; i++)
        for (let j = 0; j < ow; j++) {
          const h0 = wStart(i, H, oh), h1 = wEnd(i, H, oh), w0 = wStart(j, W, ow), w1 = wEnd(j, W, ow);
          let acc = 0;
          for (let h = h0; h < h1; h++) for (let w = w0; w < w1; w++) acc += Number(x[i4(xs, n, c, h, w)]);
          y[i4(ys, n, c, i, j)] = acc / ((h1 - h0) * (w1 - w0));
        }
  return { y, shape: ys };
}
export function adaptiveAvgBackward(dy: Arr, xs: Shape4, oh: number, ow: number): Float64Array {
  const [N, C, H, W] = xs;
  const ys: Shape4 = [N, C, oh, ow];
  const dx = new Float64Array(N * C * H * W);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let i = 0; i < oh; i++)
        for (let j = 0; j < ow; j++) {
          const h0 = wStart(i, H, oh), h1 = wEnd(i, H, oh), w0 = wStart(j, W, ow), w1 = wEnd(j, W, ow);
          const g = Number(dy[i4(ys, n, c, i, j)]) / ((h1 - h0) * (w1 - w0));
          for (let h = h0; h < h1; h++) for (let w = w0; w < w1; w++) dx[i4(xs, n, c, h, w)] += g;
        }
  return dx;
}

// ---- batch norm over C of (N,C,H,W)
export function bnStats(x: Arr, xs: Shape4) {
  const [N, C, H, W] = xs;
  const M = N * H * W;
  const mean = new Float64Array(C), varB = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let n = 0; n < N; n++) for (let i = 0; i < H * W; i++) s += Number(x[(n * C + c) * H * W + i]);
    mean[c] = s / M;
    let ss = 0;
    for (let n = 0; n < N; n++)
      for (let i = 0; i < H * W; i++) ss += (Number(x[(n * C + c) * H * W + i]) - mean[c]) ** 2;
    varB[c] = ss / M;
  }
  return { mean, varBiased: varB, M };
}

function bnApply(x: Arr, xs: Shape4, mean: Arr, variance: Arr, gamma: Arr, beta: Arr, eps: number): Float64Array {
  const [N, C, H, W] = xs;
  const y = new Float64Array(x.length);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let i = 0; i < H * W; i++) {
        const o = (n * C + c) * H * W + i;
        y[o] = ((Number(x[o]) - Number(mean[c])) / Math.sqrt(Number(variance[c]) + eps)) * Number(gamma[c]) + Number(beta[c]);
      }
  return y;
}

/** Training mode: returns y and the updated running stats (momentum m: running = (1-m)*running + m*batch). */
export function bnTrainForward(x: Arr, xs: Shape4, gamma: Arr, beta: Arr, rm: Arr, rv: Arr, m: number, eps: number) {
  const { mean, varBiased, M } = bnStats(x, xs);
  const y = bnApply(x, xs, mean, varBiased, gamma, beta, eps);
  const C = xs[1];
  const newRm = new Float64Array(C), newRv = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    newRm[c] = (1 - m) * Number(rm[c]) + m * mean[c];
    newRv[c] = (1 - m) * Number(rv[c]) + m * ((varBiased[c] * M) / (M - 1));
  }
  return { y, mean, varBiased, runningMean: newRm, runningVar: newRv };
}
export function bnEvalForward(x: Arr, xs: Shape4, gamma: Arr, beta: Arr, rm: Arr, rv: Arr, eps: number) {
  return bnApply(x, xs, rm, rv, gamma, beta, eps);
}
/** Training-mode backward (the batch statistics depend on x). */
export function bnBackward(dy: Arr, x: Arr, xs: Shape4, gamma: Arr, eps: number) {
  const [N, C, H, W] = xs;
  const { mean, varBiased, M } = bnStats(x, xs);
  const dx = new Float64Array(x.length), dgamma = new Float64Array(C), dbeta = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    const inv = 1 / Math.sqrt(varBiased[c] + eps);
    let sdy = 0, sdyxh = 0;
    for (let n = 0; n < N; n++)
      for (let i = 0; i < H * W; i++) {
        const o = (n * C + c) * H * W + i;
        sdy += Number(dy[o]);
        sdyxh += Number(dy[o]) * (Number(x[o]) - mean[c]) * inv;
      }
    dgamma[c] = sdyxh;
    dbeta[c] = sdy;
    for (let n = 0; n < N; n++)
      for (let i = 0; i < H * W; i++) {
        const o = (n * C + c) * H * W + i;
        const xh = (Number(x[o]) - mean[c]) * inv;
        dx[o] = ((Number(gamma[c]) * inv) / M) * (M * Number(dy[o]) - sdy - xh * sdyxh);
      }
  }
  return { dx, dgamma, dbeta };
}

// ---- linear: x (N,K), w (M,K), b (M) -> y (N,M)
export function linearForward(x: Arr, N: number, K: number, w: Arr, M: number, b: Arr | null, relu = false) {
  const y = new Float64Array(N * M);
  for (let n = 0; n < N; n++)
    for (let m = 0; m < M; m++) {
      let acc = b ? Number(b[m]) : 0;
      for (let k = 0; k < K; k++) acc += Number(x[n * K + k]) * Number(w[m * K + k]);
      y[n * M + m] = relu ? Math.max(0, acc) : acc;
    }
  return y;
}
export function linearBackwardData(dy: Arr, N: number, M: number, w: Arr, K: number): Float64Array {
  const dx = new Float64Array(N * K);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      let acc = 0;
      for (let m = 0; m < M; m++) acc += Number(dy[n * M + m]) * Number(w[m * K + k]);
      dx[n * K + k] = acc;
    }
  return dx;
}
export function linearBackwardWeights(x: Arr, dy: Arr, N: number, K: number, M: number) {
  const dw = new Float64Array(M * K), db = new Float64Array(M);
  for (let n = 0; n < N; n++)
    for (let m = 0; m < M; m++) {
      const g = Number(dy[n * M + m]);
      db[m] += g;
      for (let k = 0; k < K; k++) dw[m * K + k] += g * Number(x[n * K + k]);
    }
  return { dw, db };
}

// ---- softmax cross-entropy, mean over N
export function crossEntropy(logits: Arr, N: number, C: number, labels: ArrayLike<number>) {
  let loss = 0;
  const d = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    let mx = -Infinity;
    for (let c = 0; c < C; c++) mx = Math.max(mx, Number(logits[n * C + c]));
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.exp(Number(logits[n * C + c]) - mx);
    const lse = mx + Math.log(s);
    loss += lse - Number(logits[n * C + labels[n]]);
    for (let c = 0; c < C; c++) d[n * C + c] = (Math.exp(Number(logits[n * C + c]) - lse) - (c === labels[n] ? 1 : 0)) / N;
  }
  return { loss: loss / N, dlogits: d };
}

// ---- SGD, torch.optim.SGD semantics; updates params and bufs in place
export interface SgdOpts {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}
export function sgdStep(params: Float64Array[], grads: Arr[], bufs: Float64Array[], o: SgdOpts, first: boolean): void {
  params.forEach((p, t) => {
    for (let i = 0; i < p.length; i++) {
      let d = Number(grads[t][i]) + o.weightDecay * p[i];
      if (o.momentum !== 0) {
        bufs[t][i] = first ? d : o.momentum * bufs[t][i] + (1 - o.dampening) * d;
        d = o.nesterov ? d + o.momentum * bufs[t][i] : bufs[t][i];
      }
      p[i] -= o.lr * d;
    }
  });
}

// ---- dropout: the counter-based generator of native/rng.h (splitmix64 finaliser), in BigInt
const M64 = (1n << 64n) - 1n;
function mix64(z: bigint): bigint {
  z = (z + 0x9e3779b97f4a7c15n) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}
export function uniform01(seed: bigint, counter: bigint): number {
  return Number(mix64(mix64(seed) ^ counter) >> 40n) / 16777216;
}
/** Keep-mask (1 = kept) of element i: uniform01(seed, offset + i) >= p (p compared as float32). */
export function dropoutMask(n: number, p: number, seed: bigint, offset: bigint): Uint8Array {
  const pf = Math.fround(p);
  const m = new Uint8Array(n);
  const s = mix64(seed);
  for (let i = 0; i < n; i++) m[i] = Number(mix64(s ^ (offset + BigInt(i))) >> 40n) / 16777216 >= pf ? 1 : 0;
  return m;
}

// ---- finite differences: central differences of a scalar float64 function f at x, for the listed indices
export function numericGrad(f: (x: Float64Array) => number, x: Arr, h = 1e-6, indices?: number[]): Float64Array {
  const xx = Float64Array.from(x as ArrayLike<number>);
  const g = new Float64Array(xx.length);
  const idx = indices ?? [...Array(xx.length).keys()];
  for (const i of idx) {
    const v = xx[i];
    xx[i] = v + h;
    const fp = f(xx);
    xx[i] = v - h;
    const fm = f(xx);
    xx[i] = v;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

/** sum(a .* b) */
export function dot(a: Arr, b: Arr): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Number(a[i]) * Number(b[i]);
  return s;
}
