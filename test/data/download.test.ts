// downloadStl10 against a local HTTP server on 127.0.0.1 serving a small generated archive (md5 passed in).
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import { AddressInfo } from 'net';
import * as os from 'os';
import * as path from 'path';
import * as tar from 'tar';
import { downloadStl10, STL10, STL10_URL } from '../../lib/data';
import { tinyStl10 } from '../helpers/data_fixtures';

interface Served {
  body: Buffer;
  /** Close the connection after this many bytes of the next response (simulates an interrupted download). */
  cutAfter?: number;
  ranges: string[];
}

describe('downloadStl10', () => {
  let server: http.Server;
  let url: string;
  const served: Served = { body: Buffer.alloc(0), ranges: [] };
  let archive: Buffer;
  let md5: string;

  beforeAll(async () => {
    const src = tinyStl10({ train: 30, test: 20, unlabeled: 10 });
    const file = path.join(src, 'a.tar.gz');
    await tar.c({ gzip: true, file, cwd: src }, ['stl10_binary']);
    archive = fs.readFileSync(file);
    md5 = crypto.createHash('md5').update(archive).digest('hex');
    fs.rmSync(src, { recursive: true });
    server = http.createServer((req, res) => {
      const body = served.body;
      let start = 0;
      const range = req.headers.range;
      if (range) {
        served.ranges.push(range);
        start = Number(/bytes=(\d+)-/.exec(range)![1]);
        if (start >= body.length) {
          res.writeHead(416);
          return res.end();
        }
        res.writeHead(206, { 'Content-Length': body.length - start, 'Content-Range': `bytes ${start}-${body.length - 1}/${body.length}` });
      } else {
        res.writeHead(200, { 'Content-Length': body.length });
      }
      const part = body.subarray(start);
      if (served.cutAfter !== undefined) {
        const n = served.cutAfter;
        served.cutAfter = undefined;
        res.write(part.subarray(0, n), () => res.destroy());
      } else {
        res.end(part);
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/stl10_binary.tar.gz`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const fresh = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-dl-'));

  test('downloads, verifies, extracts; STL10 { download: true } then opens it; a second call does nothing', async () => {
    served.body = archive;
    served.ranges = [];
    const root = fresh();
    const ds = new STL10({ root, split: 'train', download: true, downloadOptions: { url, md5, quiet: true } });
    expect(() => ds.length).toThrow(/await dataset.load\(\)/);
    await ds.load();
    expect(ds.length).toBe(30);
    expect(ds.classes.length).toBe(10);
    expect(fs.readdirSync(root).sort()).toEqual(['stl10_binary', 'stl10_binary.tar.gz']);
    served.body = Buffer.from('not served');
    await expect(downloadStl10(root, { url, md5, quiet: true })).resolves.toBe(path.join(root, 'stl10_binary'));
    expect(new STL10({ root, split: 'test', download: true }).length).toBe(20); // files there: opened at once
    fs.rmSync(root, { recursive: true });
  });

  test('an interrupted download fails cleanly and the next call resumes with a Range request', async () => {
    served.body = archive;
    served.ranges = [];
    served.cutAfter = Math.floor(archive.length / 2);
    const root = fresh();
    await expect(downloadStl10(root, { url, md5, quiet: true })).rejects.toThrow(/expected \d+ bytes, got \d+|aborted|socket hang up|ECONNRESET|premature close/i);
    expect(fs.existsSync(path.join(root, 'stl10_binary'))).toBe(false);
    expect(fs.statSync(path.join(root, 'stl10_binary.tar.gz.part')).size).toBeGreaterThan(0);
    await downloadStl10(root, { url, md5, quiet: true });
    expect(served.ranges.length).toBe(1);
    expect(served.ranges[0]).toMatch(/^bytes=\d+-$/);
    expect(new STL10({ root, split: 'unlabeled' }).length).toBe(10);
    fs.rmSync(root, { recursive: true });
  });

  test('wrong md5 and truncated archive: errors, nothing that looks complete', async () => {
    served.body = archive;
    const root = fresh();
    await expect(downloadStl10(root, { url, md5: '0'.repeat(32), quiet: true })).rejects.toThrow(new RegExp(`expected md5 0{32}, got ${md5}`));
    expect(fs.readdirSync(root)).toEqual([]);
    const cut = archive.subarray(0, Math.floor(archive.length * 0.6));
    served.body = cut;
    const cutMd5 = crypto.createHash('md5').update(cut).digest('hex');
    await expect(downloadStl10(root, { url, md5: cutMd5, quiet: true })).rejects.toThrow(/stl10_binary\.tar\.gz: expected (a complete tar\.gz archive|.*bytes)/);
    expect(fs.readdirSync(root)).toEqual(['stl10_binary.tar.gz']);
    // a tree with a wrong-size file is not accepted as complete: re-extracted from a good archive
    served.body = archive;
    fs.rmSync(path.join(root, 'stl10_binary.tar.gz'));
    await downloadStl10(root, { url, md5, quiet: true });
    fs.truncateSync(path.join(root, 'stl10_binary', 'test_X.bin'), 100);
    await downloadStl10(root, { url, md5, quiet: true });
    expect(fs.statSync(path.join(root, 'stl10_binary', 'test_X.bin')).size).toBe(20 * 27648);
    fs.rmSync(root, { recursive: true });
  });

  test('URL from the environment; HTTP errors name the URL', async () => {
    expect(STL10_URL).toBe('http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz');
    const root = fresh();
    process.env.VGGNET_STL10_URL = url.replace('stl10_binary', 'missing');
    const old = served.body;
    const srv404 = http.createServer((_q, s) => { s.writeHead(404); s.end(); });
    await new Promise<void>((r) => srv404.listen(0, '127.0.0.1', r));
    process.env.VGGNET_STL10_URL = `http://127.0.0.1:${(srv404.address() as AddressInfo).port}/x.tar.gz`;
    await expect(downloadStl10(root, { md5, quiet: true })).rejects.toThrow(/x\.tar\.gz: expected HTTP 200 or 206, got 404/);
    delete process.env.VGGNET_STL10_URL;
    served.body = old;
    await new Promise<void>((r) => srv404.close(() => r()));
    fs.rmSync(root, { recursive: true });
  });
});
