// Tensor: the only owner of native memory on the JS side. Data lives in the addon (host or GPU); this class holds
// the handle. dispose() frees now; otherwise the finaliser frees when the object is collected.
import { DeviceName, resolveDevice, DeviceOption } from './backend';
import { addon, NativeTensor } from './native';

export type DType = 'float32' | 'bfloat16' | 'int32' | 'int64' | 'uint8' | 'int8';
/**
 * Physical layout of a 4-D tensor (the logical shape is NCHW): 'nchw8c' and 'nchw16c' are oneDNN's blocked layouts
 * (8 or 16 channels per block), CPU only.
 */
export type Layout = 'nchw' | 'nhwc' | 'nchw8c' | 'nchw16c';
export type TensorData = Float32Array | Int32Array | Uint8Array | Int8Array | BigInt64Array;

export type NativeHandle = NativeTensor;

function dtypeOf(data: TensorData): DType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Int8Array) return 'int8';
  if (data instanceof BigInt64Array) return 'int64';
  throw new TypeError('Tensor.from: expected a Float32Array, Int32Array, Uint8Array, Int8Array or BigInt64Array');
}

export interface TensorOptions {
  /** 'cpu', 'cuda' or 'auto' (default: $VGGNET_DEVICE, else CUDA when usable, else CPU). */
  device?: DeviceOption;
  /** Element type (default: the data's: Float32Array → float32, Int32Array → int32, ...). */
  dtype?: DType;
  /** Storage order of a 4-D tensor (default 'nchw'); the shape is always logical NCHW. */
  layout?: Layout;
}

export class Tensor {
  /** The addon's NativeTensor. */
  readonly native: NativeHandle;

  private constructor(native: NativeHandle) {
    this.native = native;
  }

  static fromNative(native: NativeHandle): Tensor {
    return new Tensor(native);
  }

  /**
   * A tensor from host data in row-major (NCHW) order. `dtype: 'bfloat16'` takes a Float32Array and rounds it.
   * `layout: 'nhwc'` stores a 4-D tensor channels-last (the logical shape stays NCHW).
   */
  static from(data: TensorData | number[], shape: number[], options: TensorOptions = {}): Tensor {
    const arr = Array.isArray(data) ? Float32Array.from(data) : data;
    const dtype = options.dtype ?? dtypeOf(arr);
    if (dtype === 'bfloat16' && !(arr instanceof Float32Array)) {
      throw new TypeError('Tensor.from: bfloat16 tensors are made from a Float32Array');
    }
    if (dtype !== 'bfloat16' && dtype !== dtypeOf(arr)) {
      throw new TypeError(`Tensor.from: dtype ${dtype} does not match the data (${dtypeOf(arr)})`);
    }
    const device = resolveDevice(options.device ?? 'cpu');
    return new Tensor(addon().tensorFromBuffer(arr, shape, dtype, device, options.layout ?? 'nchw'));
  }

  static zeros(shape: number[], options: TensorOptions = {}): Tensor {
    return new Tensor(
      addon().tensorZeros(shape, options.dtype ?? 'float32', resolveDevice(options.device ?? 'cpu'), options.layout ?? 'nchw'),
    );
  }

  static empty(shape: number[], options: TensorOptions = {}): Tensor {
    return new Tensor(
      addon().tensorEmpty(shape, options.dtype ?? 'float32', resolveDevice(options.device ?? 'cpu'), options.layout ?? 'nchw'),
    );
  }

  get shape(): number[] {
    return this.native.shape;
  }
  get dtype(): DType {
    return this.native.dtype;
  }
  get device(): DeviceName {
    return this.native.device;
  }
  get layout(): Layout {
    return this.native.layout;
  }
  get disposed(): boolean {
    return this.native.disposed;
  }
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** A host copy in row-major NCHW order; bfloat16 comes back as float32. */
  toArray(): Float32Array | Int32Array | Uint8Array | Int8Array | BigInt64Array {
    const buf: ArrayBuffer = this.native.toBuffer();
    switch (this.dtype) {
      case 'float32':
      case 'bfloat16':
        return new Float32Array(buf);
      case 'int32':
        return new Int32Array(buf);
      case 'uint8':
        return new Uint8Array(buf);
      case 'int8':
        return new Int8Array(buf);
      case 'int64':
        return new BigInt64Array(buf);
    }
  }

  /** A float32 host copy (float32 and bfloat16 tensors). */
  toFloat32(): Float32Array {
    if (this.dtype !== 'float32' && this.dtype !== 'bfloat16') throw new TypeError(`toFloat32: tensor is ${this.dtype}`);
    return this.toArray() as Float32Array;
  }

  /** The values as plain numbers (int64 converted), for small tensors and tests. */
  toNumbers(): number[] {
    return Array.from(this.toArray() as ArrayLike<number | bigint>, Number);
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.numel !== 1) throw new Error(`item: tensor has ${this.numel} elements, expected 1`);
    return Number(this.toArray()[0]);
  }

  /** Same storage under another shape of the same size (contiguous tensors only). */
  view(shape: number[]): Tensor {
    return new Tensor(addon().tensorView(this.native, shape));
  }

  /**
   * A copy on `device` (sharing this tensor's memory when it is already there). `nonBlocking: true` makes a CPU -> CUDA copy
   * return before the data has arrived: the bytes are staged in pinned memory (so this tensor may be disposed at once)
   * and copied on a separate stream while the GPU keeps running the work already queued; ops on the result wait for
   * the copy. Other directions ignore it.
   */
  to(device: DeviceOption, options: { nonBlocking?: boolean } = {}): Tensor {
    return new Tensor(addon().tensorTo(this.native, resolveDevice(device), Boolean(options.nonBlocking)));
  }

  clone(): Tensor {
    return new Tensor(addon().tensorClone(this.native));
  }

  /** Copies src into this tensor (same shape; dtype, layout and device are converted). */
  copy_(src: Tensor): this {
    addon().tensorCopyInto(this.native, src.native);
    return this;
  }

  /** Frees the memory now. Using the tensor afterwards is an error. Safe to call twice. */
  dispose(): void {
    this.native.dispose();
  }

  toString(): string {
    return this.disposed ? 'Tensor(disposed)' : `Tensor(${this.dtype}[${this.shape.join(',')}] ${this.device})`;
  }
}
