// torchvision's ImageNet VGG weights by name, as torch.hub fetches them: the file from its published URL into a
// cache folder (resuming an interrupted download with HTTP Range), accepted only when its sha256 starts with the hex
// in its name (torch.hub's rule: `-([a-f0-9]*)\.` in the file name). A copy already in torch.hub's own cache is used
// as it is (hash checked), so a machine that has run torchvision needs no download. Offline: pass the file's path.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { defaultDataRoot } from '../data/sample';
import { downloadVerified, hashFile } from '../data/download';

/** torchvision's ImageNet weights for the VGG family (torchvision/models/vgg.py, IMAGENET1K_V1). */
export const TORCHVISION_VGG_FILES = {
  vgg11: 'vgg11-8a719046.pth',
  vgg11_bn: 'vgg11_bn-6002323d.pth',
  vgg13: 'vgg13-19584684.pth',
  vgg13_bn: 'vgg13_bn-abd245e5.pth',
  vgg16: 'vgg16-397923af.pth',
  vgg16_bn: 'vgg16_bn-6c64b313.pth',
  vgg19: 'vgg19-dcbb9e9d.pth',
  vgg19_bn: 'vgg19_bn-c79401a0.pth',
} as const;
export type PretrainedName = keyof typeof TORCHVISION_VGG_FILES;
export const TORCHVISION_BASE_URL = 'https://download.pytorch.org/models/';

export function isPretrainedName(s: string): s is PretrainedName {
  return Object.prototype.hasOwnProperty.call(TORCHVISION_VGG_FILES, s);
}

/** The architecture a torchvision name stands for: vgg16_bn -> { model: 'vgg16', batchNorm: true }. */
export function pretrainedArchitecture(name: PretrainedName): { model: 'vgg11' | 'vgg13' | 'vgg16' | 'vgg19'; batchNorm: boolean } {
  return { model: name.replace('_bn', '') as 'vgg11', batchNorm: name.endsWith('_bn') };
}

/** The sha256 prefix a torch.hub file name carries (torch.hub's HASH_REGEX), or null. */
export function hashPrefix(fileName: string): string | null {
  const m = /-([a-f0-9]*)\./.exec(fileName);
  return m && m[1] ? m[1] : null;
}

/** Where downloaded weights go: <cache>/weights, the cache being $VGGNET_CACHE, $XDG_CACHE_HOME/vggnet or ~/.cache/vggnet. */
export function weightsCacheDir(): string {
  return path.join(defaultDataRoot(), 'weights');
}

/** torch.hub's checkpoint folder: $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to $XDG_CACHE_HOME/torch. */
function torchHubDir(): string {
  const torchHome = process.env.TORCH_HOME || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'torch');
  return path.join(torchHome, 'hub', 'checkpoints');
}

export interface FetchWeightsOptions {
  /** Folder to download into (default: weightsCacheDir()). */
  cacheDir?: string;
  /** Base URL of the torchvision files (default: $VGGNET_WEIGHTS_URL, else TORCHVISION_BASE_URL). */
  baseUrl?: string;
  /** Also reuse a copy in torch.hub's cache (default true). */
  torchHubCache?: boolean;
  /** No progress output. */
  quiet?: boolean;
}

/**
 * A local copy of the weights at `url`: downloaded (resuming a .part) into the cache unless a copy whose hash checks
 * is already there or in torch.hub's cache. The file name's hash prefix, when it has one, must start its sha256.
 */
export async function fetchWeights(url: string, options: FetchWeightsOptions = {}): Promise<string> {
  const name = decodeURIComponent(new URL(url).pathname.split('/').pop() ?? '');
  if (!name || name.includes('/') || name.startsWith('.')) throw new Error(`weights: ${url}: expected a URL ending in a file name`);
  const prefix = hashPrefix(name);
  const ok = async (file: string) => fs.existsSync(file) && (prefix === null || (await hashFile(file, 'sha256')).startsWith(prefix));
  if (options.torchHubCache !== false) {
    const theirs = path.join(torchHubDir(), name);
    if (await ok(theirs)) return theirs;
  }
  const dir = options.cacheDir ?? weightsCacheDir();
  await fs.promises.mkdir(dir, { recursive: true });
  const dest = path.join(dir, name);
  // No hash in the name: any complete download is accepted (as torch.hub does).
  await downloadVerified(url, dest, { algorithm: 'sha256', expected: prefix ?? '', quiet: options.quiet });
  return dest;
}

/** The cached path of torchvision's weights for `name` if a verified copy is already on this machine, else null. */
export async function cachedPretrained(name: PretrainedName, options: { cacheDir?: string } = {}): Promise<string | null> {
  const file = TORCHVISION_VGG_FILES[name];
  const prefix = hashPrefix(file)!;
  for (const dir of [options.cacheDir ?? weightsCacheDir(), torchHubDir()]) {
    const f = path.join(dir, file);
    if (fs.existsSync(f) && (await hashFile(f, 'sha256')).startsWith(prefix)) return f;
  }
  return null;
}

/**
 * Resolves `--pretrained NAME|URL|PATH` to a local file: a torchvision name (vgg11 ... vgg19_bn) or an http(s) URL is
 * fetched into the cache; anything else is a path that must exist (.pth/.pt or .safetensors).
 */
export async function resolvePretrained(spec: string, options: FetchWeightsOptions = {}): Promise<string> {
  if (isPretrainedName(spec)) {
    const base = options.baseUrl ?? process.env.VGGNET_WEIGHTS_URL ?? TORCHVISION_BASE_URL;
    return fetchWeights(new URL(TORCHVISION_VGG_FILES[spec], base.endsWith('/') ? base : `${base}/`).toString(), options);
  }
  if (/^https?:\/\//.test(spec)) return fetchWeights(spec, options);
  if (!fs.existsSync(spec)) {
    const names = Object.keys(TORCHVISION_VGG_FILES).join(', ');
    throw new Error(`pretrained weights '${spec}': no such file, and not a torchvision name (${names}) or an http(s) URL`);
  }
  return spec;
}
