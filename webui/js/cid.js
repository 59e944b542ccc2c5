// CIDs and multihashes: CIDv0 (base58btc "Qm...") and CIDv1 (multibase "b" base32 lower,
// also "B", "z", "f", "F"), unsigned varints. Pure functions, no dependencies.

const B32 = "abcdefghijklmnopqrstuvwxyz234567";
const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

export const CODECS = { 0x55: "raw", 0x70: "dag-pb", 0x71: "dag-cbor", 0x0129: "dag-json", 0x0200: "json" };
export const HASHES = { 0x00: "identity", 0x12: "sha2-256", 0x13: "sha2-512", 0x1e: "blake3" };

export class CidError extends Error {
  constructor(message) { super(message); this.name = "CidError"; }
}

export function base32Decode(s) {
  const out = new Uint8Array(Math.floor((s.length * 5) / 8));
  let bits = 0, value = 0, j = 0;
  for (const ch of s) {
    const v = B32.indexOf(ch);
    if (v < 0) throw new CidError(`invalid base32 character ${JSON.stringify(ch)}`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[j++] = (value >>> bits) & 0xff;
    }
  }
  if (bits >= 5 || (value & ((1 << bits) - 1)) !== 0) throw new CidError("invalid base32 padding");
  return out;
}

export function base32Encode(bytes) {
  let out = "", bits = 0, value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += B32[(value >>> bits) & 31];
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

export function base58Decode(s) {
  const bytes = [0];
  for (const ch of s) {
    let carry = B58.indexOf(ch);
    if (carry < 0) throw new CidError(`invalid base58 character ${JSON.stringify(ch)}`);
    for (let i = 0; i < bytes.length; i++) {
      carry += bytes[i] * 58;
      bytes[i] = carry & 0xff;
      carry >>= 8;
    }
    while (carry > 0) {
      bytes.push(carry & 0xff);
      carry >>= 8;
    }
  }
  let zeros = 0;
  while (zeros < s.length && s[zeros] === "1") zeros++;
  while (bytes.length > 1 && bytes[bytes.length - 1] === 0) bytes.pop();
  const body = s.length === zeros ? [] : bytes.reverse();
  return Uint8Array.from([...new Array(zeros).fill(0), ...body]);
}

export function base58Encode(bytes) {
  const digits = [0];
  for (const b of bytes) {
    let carry = b;
    for (let i = 0; i < digits.length; i++) {
      carry += digits[i] << 8;
      digits[i] = carry % 58;
      carry = (carry / 58) | 0;
    }
    while (carry > 0) {
      digits.push(carry % 58);
      carry = (carry / 58) | 0;
    }
  }
  let out = "";
  for (let i = 0; i < bytes.length && bytes[i] === 0; i++) out += "1";
  if (!(digits.length === 1 && digits[0] === 0)) {
    for (let i = digits.length - 1; i >= 0; i--) out += B58[digits[i]];
  }
  return out;
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function hexDecode(s) {
  if (s.length % 2 || /[^0-9a-f]/i.test(s)) throw new CidError("invalid base16");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Read an unsigned LEB128 varint at `pos`; returns [value, nextPos]. */
export function readVarint(bytes, pos = 0) {
  let value = 0, mul = 1;
  for (let i = 0; i < 9; i++) {
    if (pos >= bytes.length) throw new CidError("truncated varint");
    const b = bytes[pos++];
    value += (b & 0x7f) * mul;
    if (!(b & 0x80)) {
      if (i > 0 && b === 0) throw new CidError("varint is not minimal");
      return [value, pos];
    }
    mul *= 128;
  }
  throw new CidError("varint too long");
}

export function encodeVarint(n) {
  const out = [];
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/** Decode a multihash from `bytes` at `pos`: {code, name, digest, size, end}. */
export function decodeMultihash(bytes, pos = 0) {
  const [code, p1] = readVarint(bytes, pos);
  const [size, p2] = readVarint(bytes, p1);
  if (p2 + size > bytes.length) throw new CidError("multihash digest is truncated");
  return { code, name: HASHES[code] || `0x${code.toString(16)}`, size,
           digest: bytes.subarray(p2, p2 + size), end: p2 + size };
}

/** A CID from its binary form (as found in dag-pb links). */
export function cidFromBytes(bytes) {
  if (bytes.length === 34 && bytes[0] === 0x12 && bytes[1] === 0x20) {
    const multihash = decodeMultihash(bytes);
    return { version: 0, codec: 0x70, codecName: "dag-pb", multihash, bytes,
             string: base58Encode(bytes) };
  }
  const [version, p1] = readVarint(bytes, 0);
  if (version !== 1) throw new CidError(`unsupported CID version ${version}`);
  const [codec, p2] = readVarint(bytes, p1);
  const multihash = decodeMultihash(bytes, p2);
  if (multihash.end !== bytes.length) throw new CidError("trailing bytes after the multihash");
  return { version, codec, codecName: CODECS[codec] || `0x${codec.toString(16)}`, multihash,
           bytes, string: "b" + base32Encode(bytes) };
}

/** Parse a CID string (v0 "Qm..." or v1 multibase b/B/z/f/F). Throws CidError. */
export function parseCid(str) {
  const s = String(str || "").trim();
  if (!s) throw new CidError("empty CID");
  if (s.length === 46 && s.startsWith("Qm")) {
    const bytes = base58Decode(s);
    if (bytes.length !== 34 || bytes[0] !== 0x12 || bytes[1] !== 0x20) {
      throw new CidError("CIDv0 must be a sha2-256 multihash");
    }
    return cidFromBytes(bytes);
  }
  const prefix = s[0], body = s.slice(1);
  let bytes;
  if (prefix === "b") bytes = base32Decode(body);
  else if (prefix === "B") bytes = base32Decode(body.toLowerCase());
  else if (prefix === "z") bytes = base58Decode(body);
  else if (prefix === "f" || prefix === "F") bytes = hexDecode(body);
  else throw new CidError(`unsupported multibase prefix ${JSON.stringify(prefix)}`);
  const cid = cidFromBytes(bytes);
  if (cid.version === 0) throw new CidError("a CIDv0 must be written in base58btc");
  return cid;
}

export function isCid(str) {
  try { parseCid(str); return true; } catch { return false; }
}

/** Pull a CID and path out of what a user pastes: a CID, /ipfs/CID/path, ipfs://CID/path or a
 *  gateway URL (path or subdomain style). Returns {cid, path} or throws CidError. */
export function parseCidInput(text) {
  let s = String(text || "").trim();
  if (!s) throw new CidError("paste a CID, /ipfs/ path or gateway URL");
  s = s.replace(/^ipfs:\/\//i, "/ipfs/");
  let m = s.match(/^https?:\/\/([a-z0-9]+)\.ipfs\.[^/]+(\/[^?#]*)?/i);
  if (m) return checked(m[1], m[2] || "");
  m = s.match(/\/ipfs\/([^/?#]+)(\/[^?#]*)?/);
  if (m) return checked(m[1], m[2] || "");
  m = s.match(/^([^/?#]+)(\/[^?#]*)?$/);
  if (m) return checked(m[1], m[2] || "");
  throw new CidError("not a CID or IPFS path");
}

function checked(cid, path) {
  parseCid(cid);
  const clean = path.split("/").filter(Boolean).map(decodeURIComponent).join("/");
  return { cid, path: clean };
}
