#!/usr/bin/env node
// ort_bench.js - ONNX Runtime (CPU, onnxruntime-node) on an ONNX model, the peer vitd is
// compared with (../../shared/docs/PERF.md). Not a general tool: it does what run.sh needs.
//
//   node ort_bench.js --model M.onnx --batch B --seconds T [--warmup W] [--threads N]
//                     [--channels C] [--size S]
//       times session.run on a (B, C, S, S) float32 input for at least T seconds (and at least
//       3 runs) after W warm-up runs; prints one JSON line
//       {"images_per_s", "latency_ms_p50", "latency_ms_mean", "runs", "batch", "threads"}.
//   node ort_bench.js --model M.onnx --check X.npy --expect Y.npy [--threads N] [--rtol R]
//       runs X once and compares with Y (torch's logits): exit 1 unless
//       max|diff| <= R * max|Y| (default R 1e-4). Proves the ONNX file computes the same model.
//
// Needs `require('onnxruntime-node')` to resolve: run.sh sets NODE_PATH to build/ort/node_modules.
'use strict';
const fs = require('fs');
const os = require('os');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const a = { warmup: 2, threads: os.cpus().length, rtol: 1e-4 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (!k.startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${k}`);
    a[k.slice(2)] = argv[++i];
  }
  for (const k of ['batch', 'warmup', 'threads']) if (k in a) a[k] = parseInt(a[k], 10);
  for (const k of ['seconds', 'rtol']) if (k in a) a[k] = parseFloat(a[k]);
  if (!a.model) throw new Error('--model is required');
  return a;
}

// Minimal .npy reader: little-endian float32, C order (what numpy.save writes for our arrays).
function readNpy(path) {
  const b = fs.readFileSync(path);
  if (b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${path}: not .npy`);
  const major = b[6];
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + hlen;
  const header = b.toString('latin1', major === 1 ? 10 : 12, start);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header)) {
    throw new Error(`${path}: need little-endian float32 in C order`);
  }
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',')
    .map((s) => s.trim()).filter((s) => s).map(Number);
  const n = shape.reduce((p, d) => p * d, 1);
  const data = new Float32Array(n);
  // Copy out: the data offset need not be 4-aligned within the Buffer's memory.
  for (let i = 0; i < n; i++) data[i] = b.readFloatLE(start + 4 * i);
  return { shape, data };
}

async function session(a) {
  // The settings PERF.md prescribes: the same thread count as vitd, every graph optimisation.
  return ort.InferenceSession.create(a.model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
}

async function check(a) {
  const s = await session(a);
  const x = readNpy(a.check);
  const y = readNpy(a.expect);
  const out = await s.run({ input: new ort.Tensor('float32', x.data, x.shape) });
  const got = out.logits.data;
  if (got.length !== y.data.length) throw new Error(`logits size ${got.length} != ${y.data.length}`);
  let d = 0;
  let m = 0;
  for (let i = 0; i < got.length; i++) {
    d = Math.max(d, Math.abs(got[i] - y.data[i]));
    m = Math.max(m, Math.abs(y.data[i]));
  }
  const ok = Number.isFinite(d) && d <= a.rtol * m;
  console.log(JSON.stringify({ check: ok ? 'ok' : 'FAIL', max_abs_diff: d, max_abs_logit: m }));
  return ok ? 0 : 1;
}

async function bench(a) {
  const s = await session(a);
  // (C, S) default to DeiT's (3, 224); the exported graph fixes them, only the batch is dynamic.
  const [C, S] = [parseInt(a.channels || '3', 10), parseInt(a.size || '224', 10)];
  const B = a.batch;
  const n = B * C * S * S;
  const data = new Float32Array(n);
  // Deterministic pseudo-normal values (an LCG summed), so runs see the same input as vitd's
  // random images in distribution; the values do not affect the work done.
  let r = 12345;
  for (let i = 0; i < n; i++) {
    let v = 0;
    for (let k = 0; k < 3; k++) { r = (r * 1103515245 + 12345) >>> 0; v += r / 4294967296; }
    data[i] = (v - 1.5) * 2;
  }
  const feeds = { input: new ort.Tensor('float32', data, [B, C, S, S]) };
  for (let i = 0; i < a.warmup; i++) await s.run(feeds);
  const lat = [];
  const t0 = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < a.seconds || lat.length < 3) {
    const t = process.hrtime.bigint();
    await s.run(feeds);
    const now = process.hrtime.bigint();
    lat.push(Number(now - t) / 1e6);
    elapsed = Number(now - t0) / 1e9;
  }
  lat.sort((p, q) => p - q);
  const mean = lat.reduce((p, q) => p + q, 0) / lat.length;
  console.log(JSON.stringify({
    images_per_s: (B * lat.length) / elapsed,
    latency_ms_p50: lat[Math.floor(lat.length / 2)],
    latency_ms_mean: mean,
    runs: lat.length,
    batch: B,
    threads: a.threads,
  }));
  return 0;
}

(async () => {
  try {
    const a = parseArgs(process.argv.slice(2));
    process.exitCode = a.check ? await check(a) : await bench(a);
  } catch (e) {
    console.error(`ort_bench: ${e.message}`);
    process.exitCode = 1;
  }
})();
