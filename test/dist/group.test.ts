// Process groups in this process: the rendezvous' clear errors (an unreachable master, a port in use, a world that
// never fills, bad environment variables), and, in a world of one, DistributedDataParallel against the plain step:
// the same bits without and with SyncBatchNorm, gradients rounded exactly as bfloat16 with compression, and DDP's
// bucket plan (reverse parameter order, first bucket small, the rest about the cap).
import * as net from 'net';
import { Tensor } from '../../lib/tensor';
import * as ops from '../../lib/ops';
import { sgd } from '../../lib/optim/sgd';
import { runStep } from '../../lib/train/train_step';
import {
  DistributedDataParallel, ProcessGroup, destroyProcessGroup, distributedEngines, initDistributed, readDistEnv,
} from '../../lib/dist';
import { backends } from '../../lib/backend';
import { tinyVgg, randomBatch } from '../helpers/tiny';
import { groupAllGather } from '../../lib/dist/native_dist';
import { freePort } from '../helpers/procs';
import { Linear } from '../../lib/nn/layers';
import { poolOutGrad } from '../../lib/nn/module';

jest.setTimeout(60000);

const glooBuilt = distributedEngines().gloo !== null;
const describeGloo = glooBuilt ? describe : describe.skip;
if (!glooBuilt) console.log('skipping the process group tests: this addon has no gloo engine (apt-get install libgloo-dev, rebuild)');

test('backends() says which engines the addon has', () => {
  const b = backends();
  expect(b.dist.engines).toEqual(Object.entries(distributedEngines()).filter(([, v]) => v !== null).map(([k]) => k));
  if (glooBuilt) expect(b.dist.gloo).toMatch(/^\d+\.\d+\.\d+$/);
});

test('torchrun\'s environment is read with errors that name the variable', () => {
  expect(readDistEnv({ WORLD_SIZE: '4', RANK: '3', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: 'node0', MASTER_PORT: '1234' }))
    .toMatchObject({ rank: 3, worldSize: 4, localRank: 1, localWorldSize: 2, masterAddr: 'node0', masterPort: 1234, timeoutSeconds: 300, backend: 'auto' });
  expect(readDistEnv({ WORLD_SIZE: '1', RANK: '0' })).toMatchObject({ masterAddr: '127.0.0.1', masterPort: 29500, localRank: 0 });
  expect(() => readDistEnv({ WORLD_SIZE: '2', RANK: '2', LOCAL_RANK: '0', LOCAL_WORLD_SIZE: '2' })).toThrow(/RANK must be an integer in \[0, 1\], got '2'/);
  expect(() => readDistEnv({ WORLD_SIZE: 'two' })).toThrow(/WORLD_SIZE must be an integer/);
  expect(() => readDistEnv({ WORLD_SIZE: 'two' })).toThrow(RangeError);
  expect(() => readDistEnv({ WORLD_SIZE: '2', RANK: '0' })).toThrow(/LOCAL_WORLD_SIZE is not set/);
  expect(() => readDistEnv({ WORLD_SIZE: '1', RANK: '0', MASTER_PORT: '70000' })).toThrow(/MASTER_PORT must be an integer in \[1, 65535\], got '70000'/);
  expect(() => readDistEnv({ WORLD_SIZE: '1', RANK: '0', VGGNET_DIST_TIMEOUT: '-1' })).toThrow(/VGGNET_DIST_TIMEOUT must be a number of seconds > 0/);
});

describeGloo('rendezvous errors', () => {
  test('an unreachable master is an error naming the address, within the timeout', async () => {
    const port = await freePort();
    const t0 = Date.now();
    await expect(initDistributed({ rank: 1, worldSize: 2, masterPort: port, timeout: 1.5, device: 'cpu' }))
      .rejects.toThrow(new RegExp(`could not reach the master \\(rank 0's rendezvous store\\) at 127\\.0\\.0\\.1:${port} within 2 s \\(last error: Connection refused\\)`));
    expect(Date.now() - t0).toBeLessThan(30000);
  });

  test('a port in use is an error naming the port', async () => {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, r));
    const port = (s.address() as net.AddressInfo).port;
    try {
      await expect(initDistributed({ rank: 0, worldSize: 2, masterPort: port, timeout: 2, device: 'cpu' }))
        .rejects.toThrow(new RegExp(`rank 0 cannot serve the rendezvous store on port ${port}: the port is in use`));
    } finally {
      s.close();
    }
  });

  test('a world that never fills names the ranks that did not arrive', async () => {
    const port = await freePort();
    await expect(initDistributed({ rank: 0, worldSize: 3, masterPort: port, timeout: 1, device: 'cpu' }))
      .rejects.toThrow(new RegExp(`the world did not fill within 1 s: rank\\(s\\) 1, 2 of 3 never reached the rendezvous store at 127\\.0\\.0\\.1:${port}`));
  });
});

describeGloo('a world of one', () => {
  let pg: ProcessGroup;
  beforeAll(async () => {
    pg = await initDistributed({ rank: 0, worldSize: 1, masterPort: await freePort(), timeout: 30, device: 'cpu' });
  });
  afterAll(() => destroyProcessGroup());

  test('the group describes itself; host all-reduce and broadcast are identities', async () => {
    expect(pg).toMatchObject({ rank: 0, worldSize: 1, engine: 'gloo', device: 'cpu', capturable: false });
    expect(Array.from(pg.allReduce([1.5, 2 ** 52 + 1]))).toEqual([1.5, 2 ** 52 + 1]);
    const t = Tensor.from(new Float32Array([1, 2, 3]), [3]);
    pg.broadcast([t]);
    expect(Array.from(t.toFloat32())).toEqual([1, 2, 3]);
    // The all-gather DDP's classifier uses: the rows, scaled (float32; bfloat16 rounded to nearest even).
    const g = Tensor.empty([3]), u = Tensor.from(new Float32Array([7, 8]), [2]), gu = Tensor.empty([2]);
    groupAllGather(pg.handle, [t, u], [g, gu], [0.5, 1]);
    expect([Array.from(g.toFloat32()), Array.from(gu.toFloat32())]).toEqual([[0.5, 1, 1.5], [7, 8]]);
    const b = ops.cast(Tensor.from(new Float32Array([1, 3, 1 + 2 ** -7]), [3]), 'bfloat16');
    const gb = Tensor.empty([3], { dtype: 'bfloat16' });
    groupAllGather(pg.handle, [b], [gb], [1 / 3]);
    expect(Array.from(gb.toFloat32())).toEqual([0.333984375, 1, 0.3359375]); // each product rounded to bf16 once
    expect(() => groupAllGather(pg.handle, [t], [Tensor.empty([4])], [1])).toThrow(/all_gather: plain tensors, the output holding 1 × 3 elements, expected; it holds 4/);
    expect(() => groupAllGather(pg.handle, [t], [gb], [1])).toThrow(/all_gather: float32 or bfloat16 tensors of one dtype expected, got float32 and bfloat16/);
    expect(() => groupAllGather(pg.handle, [t], [g], [NaN])).toThrow(/distAllGather: scales must be finite/);
    expect(() => groupAllGather(pg.handle, [t, u], [g], [1, 1])).toThrow(/all_gather: 2 sources, 1 outputs and 2 scales/);
    for (const x of [t, g, u, gu, b, gb]) x.dispose();
    await expect(initDistributed({ rank: 0, worldSize: 1, device: 'cpu' })).rejects.toThrow(/already belongs to a process group/);
  });

  // Plain steps and DDP steps from the same start, batch by batch: with one rank the average is the gradient itself.
  function compareSteps(batchNorm: boolean, options: { syncBatchNorm?: boolean; gatherClassifierRows?: boolean } = {}, precision: 'fp32' | 'bf16' = 'fp32') {
    const plain = tinyVgg({ batchNorm, seed: 4, precision });
    const dist = tinyVgg({ batchNorm, seed: 4, precision });
    const ddp = new DistributedDataParallel(dist, { processGroup: pg, ...options });
    const o1 = sgd({ lr: 0.05, momentum: 0.9, weightDecay: 1e-3 }), o2 = sgd({ lr: 0.05, momentum: 0.9, weightDecay: 1e-3 });
    const p1 = plain.parameters().map((p) => p.param), p2 = dist.parameters().map((p) => p.param);
    const before = pg.stats();
    for (let s = 0; s < 3; s++) {
      const { x, y } = randomBatch(6, 100 + s);
      // Both defer the first classifier layer's update (DDP all-reduces its gradient pooled, as the plain step holds it).
      const a = runStep(plain, o1, p1, x, y);
      const b = runStep(dist, o2, p2, x, y, undefined, ddp.stepContext());
      expect(b.loss.item()).toBe(a.loss.item());
      for (const t of [a.logits, a.loss, b.logits, b.loss, x, y]) t.dispose();
    }
    // SGD took the first classifier layer's weight gradient pooled to the 1×1 map (12 × 8 of its 12 × 8·7·7), deferred.
    const fc1 = dist.classifier.layers[0] as Linear;
    expect(fc1.weight.gradForStep().pooled).toEqual([8, 1, 1, 7, 7]);
    const numel = (ps: { shape: number[] }[]) => ps.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    const whole = numel(p2);
    const linears = dist.classifier.layers.filter((l): l is Linear => l instanceof Linear);
    const classifier = numel(linears.flatMap((l) => l.ownParameters().map(([, p]) => p)));
    const sa = plain.stateDict(), sb = dist.stateDict();
    for (const k of Object.keys(sa)) {
      const va = sa[k], vb = sb[k];
      if (va instanceof Tensor && vb instanceof Tensor) expect([k, Array.from(vb.toFloat32())]).toEqual([k, Array.from(va.toFloat32())]);
      else expect([k, vb]).toEqual([k, va]);
    }
    const after = pg.stats();
    expect(after.steps - before.steps).toBe(3);
    expect(after.buckets - before.buckets).toBe(3 * ddp.buckets.length);
    if (options.gatherClassifierRows === false) {
      // Every gradient all-reduced, the first classifier layer's pooled.
      expect(after.bytes - before.bytes).toBe(3 * 4 * (whole - 12 * 8 * 49 + 12 * 8));
      expect(after.gatheredBytes - before.gatheredBytes).toBe(0);
    } else {
      // The convolutions' gradients all-reduced; the classifier's layers gathered their 6 rows of input and output
      // gradient instead: (8 + 12) + (12 + 12) + (12 + 5) floats a row.
      expect(after.bytes - before.bytes).toBe(3 * 4 * (whole - classifier));
      expect(after.gatheredBytes - before.gatheredBytes).toBe(3 * (precision === 'bf16' ? 2 : 4) * 6 * (20 + 24 + 17));
    }
    plain.dispose();
    dist.dispose();
  }

  test('a DDP step is the plain step, bit for bit (the classifier\'s rows gathered, or its gradients all-reduced)', () => {
    compareSteps(false);
    compareSteps(false, { gatherClassifierRows: false });
  });
  test('bf16: the classifier\'s bfloat16 rows gathered, bit for bit', () => compareSteps(false, {}, 'bf16'));
  test('with batch norm, per replica and as SyncBatchNorm, bit for bit', () => {
    compareSteps(true);
    compareSteps(true, { syncBatchNorm: true });
  });

  test('bf16 compression sends each gradient rounded to bfloat16 (nearest even) and averages it back; the first classifier layer\'s pooled', () => {
    const bf16 = (v: number) => {
      const f = new Float32Array([v]);
      const u = new Uint32Array(f.buffer);
      u[0] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) & 0xffff0000;
      return f[0];
    };
    const plain = tinyVgg({ seed: 5 }), dist = tinyVgg({ seed: 5 });
    const ddp = new DistributedDataParallel(dist, { processGroup: pg, gradientCompression: 'bf16', bucketCapMB: 0.002, firstBucketMB: 0.001, gatherClassifierRows: false });
    expect(ddp.buckets.length).toBeGreaterThan(2);
    const { x, y } = randomBatch(4, 9, 5, 64); // a 2×2 map: a whole entry is a mean of pooled ones, rounded or not
    for (const [m, ctx] of [[plain, undefined], [dist, ddp.stepContext()]] as const) {
      m.zeroGrad();
      const logits = m.forward(x, { step: ctx });
      const r = ops.crossEntropy(logits, y);
      if (ctx) ddp.beginBackward(r.loss);
      m.backward(r.dlogits, { step: ctx });
      if (ctx) ddp.finishGradients().dispose();
      for (const t of [logits, r.loss, r.dlogits]) t.dispose();
    }
    const ga = plain.parameters(), gb = dist.parameters();
    let pooled = 0;
    ga.forEach((p, i) => {
      // What travels is rounded: the gradient as held, pooled for the first classifier layer's weight.
      const held = p.param.gradForStep();
      const rounded = Tensor.from(Float32Array.from(held.grad.toFloat32(), bf16), held.grad.shape);
      const whole = held.pooled ? poolOutGrad(rounded, held.pooled) : rounded;
      if (held.pooled) pooled++;
      expect([p.name, Array.from(gb[i].grad.toFloat32())]).toEqual([p.name, Array.from(whole.toFloat32())]);
      rounded.dispose();
      whole.dispose();
    });
    expect(pooled).toBe(1);
    for (const t of [x, y]) t.dispose();
    plain.dispose();
    dist.dispose();
  });

  test("DDP's buckets: parameters in reverse order, the first about firstBucketMB, the others about bucketCapMB", () => {
    const m = tinyVgg({ seed: 1 });
    const ddp = new DistributedDataParallel(m, { processGroup: pg, bucketCapMB: 0.004, firstBucketMB: 0.001 });
    const names = m.namedParameters().map((p) => p.name).reverse();
    expect(ddp.buckets.flatMap((b) => b.names)).toEqual(names);
    const size = new Map(m.namedParameters().map(({ name, param }) => [name, 4 * param.shape.reduce((a, b) => a * b, 1)]));
    ddp.buckets.forEach((b, i) => {
      const cap = (i === 0 ? 0.001 : 0.004) * 1024 * 1024;
      expect(b.bytes).toBe(b.names.reduce((s, n) => s + size.get(n)!, 0));
      if (i < ddp.buckets.length - 1) {
        expect(b.bytes).toBeGreaterThanOrEqual(cap); // closed once it reached the cap ...
        expect(b.bytes - size.get(b.names[b.names.length - 1])!).toBeLessThan(cap); // ... not before
      }
    });
    expect(ddp.buckets[0].names[0]).toBe('classifier.6.bias'); // the last layer's gradients come first
    expect(() => new DistributedDataParallel(m, { processGroup: pg, gradientCompression: 'fp8' as never })).toThrow(/gradientCompression must be 'none' or 'bf16'/);
    m.dispose();
  });
});
