// TensorBoard event files: events.out.tfevents.<time>.<host>.<pid>.<n> in the log folder, a TFRecord stream of Event
// protos (encoded by protobufjs with the schema in tensorboard.proto). Each record is its length (u64 little-endian),
// the masked CRC-32C of those 8 bytes, the Event bytes and their masked CRC-32C. The first event carries the file
// version "brain.Event:2"; then scalars (simple_value) and PNG images, each written and flushed as it comes, so a
// running `tensorboard --logdir` shows the run live and a killed run keeps all but its last partial record.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { maskedCrc32c } from './crc';
import { protoType } from './proto';

let fileCounter = 0;

export class TensorBoardWriter {
  readonly file: string;
  private fd: number | null;

  constructor(readonly logDir: string) {
    fs.mkdirSync(logDir, { recursive: true });
    const host = os.hostname().replace(/[^\w.-]/g, '_');
    this.file = path.join(logDir, `events.out.tfevents.${Math.floor(Date.now() / 1000)}.${host}.${process.pid}.${fileCounter++}`);
    try {
      this.fd = fs.openSync(this.file, 'a');
    } catch (e) {
      throw new Error(`${this.file}: cannot create the TensorBoard event file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    this.write({ wall_time: Date.now() / 1000, file_version: 'brain.Event:2', source_metadata: { writer: 'vggnet' } });
  }

  /** One scalar at a step (TensorBoard's x axis). */
  addScalar(tag: string, value: number, step: number, wallTime = Date.now() / 1000): void {
    this.write({ wall_time: wallTime, step, summary: { value: [{ tag, simple_value: value }] } });
  }

  /** Several scalars at one step, in one event. */
  addScalars(values: Record<string, number>, step: number, wallTime = Date.now() / 1000): void {
    const value = Object.entries(values).filter(([, v]) => Number.isFinite(v)).map(([tag, v]) => ({ tag, simple_value: v }));
    if (value.length) this.write({ wall_time: wallTime, step, summary: { value } });
  }

  /** A PNG image (its encoded bytes) at a step; colorspace 3 = RGB, 4 = RGBA. */
  addImage(tag: string, png: Uint8Array, size: { width: number; height: number; colorspace?: number }, step: number, wallTime = Date.now() / 1000): void {
    const image = { height: size.height, width: size.width, colorspace: size.colorspace ?? 3, encoded_image_string: png };
    this.write({ wall_time: wallTime, step, summary: { value: [{ tag, image }] } });
  }

  close(): void {
    if (this.fd === null) return;
    fs.closeSync(this.fd);
    this.fd = null;
  }

  private write(event: Record<string, unknown>): void {
    if (this.fd === null) throw new Error(`${this.file}: the TensorBoard writer is closed`);
    const Event = protoType('tensorboard.proto', 'tensorboard.Event');
    const data = Event.encode(Event.fromObject(event)).finish();
    const header = Buffer.alloc(12);
    header.writeBigUInt64LE(BigInt(data.length), 0);
    header.writeUInt32LE(maskedCrc32c(header.subarray(0, 8)), 8);
    const footer = Buffer.alloc(4);
    footer.writeUInt32LE(maskedCrc32c(data), 0);
    const record = Buffer.concat([header, data, footer]);
    try {
      let off = 0;
      while (off < record.length) off += fs.writeSync(this.fd, record, off, record.length - off);
    } catch (e) {
      throw new Error(`${this.file}: could not write a TensorBoard event (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }
}
