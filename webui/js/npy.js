// NumPy .npy reader (format versions 1-3): header dict parsed in JS, data as a typed array.

export class NpyError extends Error {
  constructor(message) { super(message); this.name = "NpyError"; }
}

const DTYPES = {
  "<f4": [Float32Array, 4], "<f8": [Float64Array, 8], "<i2": [Int16Array, 2],
  "<i4": [Int32Array, 4], "|u1": [Uint8Array, 1], "|i1": [Int8Array, 1], "<u2": [Uint16Array, 2],
};

/** Parse a .npy file: {dtype, shape, fortranOrder, data} (little-endian dtypes only). */
export function parseNpy(bytes) {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) {
    throw new NpyError("not a .npy file (bad magic)");
  }
  const major = bytes[6];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen, start;
  if (major === 1) { headerLen = dv.getUint16(8, true); start = 10; }
  else if (major === 2 || major === 3) { headerLen = dv.getUint32(8, true); start = 12; }
  else throw new NpyError(`unsupported .npy version ${major}`);
  if (start + headerLen > bytes.length) throw new NpyError(".npy header is truncated");
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr'\s*:\s*'([^']+)'/.exec(header);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shapeM = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeM) throw new NpyError(`cannot parse .npy header ${header.trim()}`);
  const shape = shapeM[1].split(",").map((s) => s.trim()).filter(Boolean).map((s) => parseInt(s, 10));
  if (shape.some((n) => !Number.isFinite(n) || n < 0)) throw new NpyError(`bad .npy shape (${shapeM[1]})`);
  const dtype = descr[1];
  const kind = DTYPES[dtype];
  if (!kind) throw new NpyError(`unsupported dtype ${dtype} (little-endian float32 expected)`);
  const [Ctor, size] = kind;
  const count = shape.reduce((a, b) => a * b, 1);
  const off = start + headerLen;
  if (off + count * size > bytes.length) {
    throw new NpyError(`.npy data is truncated: ${count} x ${size} bytes expected`);
  }
  // copy so the typed array is aligned whatever the header length
  const data = new Ctor(bytes.slice(off, off + count * size).buffer);
  return { dtype, shape, fortranOrder: fortran[1] === "True", data };
}
