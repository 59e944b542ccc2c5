// Verified reads through a trustless gateway: every block is fetched with ?format=raw and
// hashed against its CID's multihash before it is used; dag-pb nodes are decoded to walk
// files (leaves in order) and directories (plain and HAMT-sharded).

import { hex, parseCid } from "./cid.js";
import { decodeNode, decodeUnixfs } from "./dagpb.js";
import { gatewayBase, gatewayLabel, gwUrl } from "./settings.js";
import { sha256 } from "./sha256.js";

export class VerifyError extends Error {
  constructor(message, cid = null) { super(message); this.name = "VerifyError"; this.cid = cid; }
}

export class GatewayError extends Error {
  constructor(message, { status = 0, network = false } = {}) {
    super(message);
    this.name = "GatewayError";
    this.status = status;
    this.network = network;
  }
}

export const stats = { blocks: 0, bytes: 0 };

// The verified blocks kept (least recently used out first): at most MAX_CACHE blocks and
// MAX_CACHE_BYTES of them (a count alone let 512 blocks of up to a few MiB each stay for as
// long as the tab is open: session 49, helper c)
const MAX_CACHE = 512;
const MAX_CACHE_BYTES = 32 * 1024 * 1024;
const cache = new Map(); // gateway + cid -> {p: Promise<Uint8Array> (verified), bytes}
let cachedBytes = 0;

/** What the block cache holds: {blocks, bytes} (bytes: of the blocks read so far). */
export function cacheStats() {
  return { blocks: cache.size, bytes: cachedBytes };
}

function evict() {
  while (cache.size && (cache.size > MAX_CACHE || cachedBytes > MAX_CACHE_BYTES)) {
    const [key, e] = cache.entries().next().value;
    cache.delete(key);
    cachedBytes -= e.bytes;
  }
}
const MAX_PARALLEL = 6;
let active = 0;
const waiting = [];

async function limited(fn) {
  if (active >= MAX_PARALLEL) await new Promise((r) => waiting.push(r));
  active++;
  try { return await fn(); } finally {
    active--;
    const next = waiting.shift();
    if (next) next();
  }
}

/** Check `bytes` against the multihash of a parsed CID; throws VerifyError on a mismatch. */
export async function checkBlock(cid, bytes) {
  const mh = cid.multihash;
  let got;
  if (mh.code === 0x12) got = await sha256(bytes);
  else if (mh.code === 0x00) got = bytes;
  else throw new VerifyError(`cannot verify ${cid.string}: hash function ${mh.name} is not supported`, cid.string);
  if (got.length !== mh.digest.length || got.some((b, i) => b !== mh.digest[i])) {
    throw new VerifyError(
      `hash mismatch: block ${cid.string} should hash to ${hex(mh.digest)} (${mh.name}) ` +
      `but the gateway sent bytes hashing to ${hex(got)}`, cid.string);
  }
}

/** One block, fetched as ?format=raw and verified (cached per gateway). */
export function getBlock(cidStr) {
  const key = gatewayBase() + " " + cidStr;
  const hit = cache.get(key);
  if (hit) {
    cache.delete(key);
    cache.set(key, hit);
    return hit.p;
  }
  const e = { p: fetchBlock(cidStr), bytes: 0 };
  cache.set(key, e);
  e.p.then((bytes) => {
    if (cache.get(key) !== e) return; // (evicted while read)
    e.bytes = bytes.length;
    cachedBytes += bytes.length;
    evict();
  }, () => { if (cache.get(key) === e) cache.delete(key); });
  evict();
  return e.p;
}

async function fetchBlock(cidStr) {
  const cid = parseCid(cidStr);
  if (cid.multihash.code === 0x00) return cid.multihash.digest; // identity: data is inline
  const bytes = await limited(async () => {
    let resp;
    try {
      resp = await fetch(gwUrl(cidStr, "", "format=raw"),
                         { headers: { Accept: "application/vnd.ipld.raw" } });
    } catch {
      throw new GatewayError(`gateway unreachable: ${gatewayLabel()}`, { network: true });
    }
    if (!resp.ok) {
      let msg = resp.statusText;
      try { msg = (await resp.json()).message || msg; } catch { /* not JSON */ }
      throw new GatewayError(`gateway error ${resp.status} for block ${cidStr}: ${msg}`,
                             { status: resp.status });
    }
    return new Uint8Array(await resp.arrayBuffer());
  });
  await checkBlock(cid, bytes);
  stats.blocks++;
  stats.bytes += bytes.length;
  return bytes;
}

function concat(parts) {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** Kind and size of a node from its own (verified) block: {kind: "file"|"dir", size, blocks}. */
export async function statNode(cidStr) {
  const cid = parseCid(cidStr);
  const block = await getBlock(cidStr);
  if (cid.codec === 0x55) return { kind: "file", size: block.length, unixfs: null };
  if (cid.codec !== 0x70) throw new VerifyError(`unsupported codec ${cid.codecName}`, cidStr);
  const node = decodeNode(block);
  const fs = decodeUnixfs(node.data);
  if (fs.type === 1 || fs.type === 5) return { kind: "dir", size: null, node, unixfs: fs };
  if (fs.type === 0 || fs.type === 2) {
    return { kind: "file", size: fs.filesize ?? fs.data.length, node, unixfs: fs };
  }
  return { kind: fs.typeName, size: null, node, unixfs: fs };
}

/** The whole content of a UnixFS file, every block verified. `onBytes(n)` reports progress. */
export async function readFile(cidStr, onBytes = () => {}) {
  const cid = parseCid(cidStr);
  const block = await getBlock(cidStr);
  if (cid.codec === 0x55) { onBytes(block.length); return block; }
  if (cid.codec !== 0x70) throw new VerifyError(`unsupported codec ${cid.codecName}`, cidStr);
  const node = decodeNode(block);
  const fs = decodeUnixfs(node.data);
  if (fs.type === 1 || fs.type === 5) throw new VerifyError(`${cidStr} is a directory, not a file`, cidStr);
  if (fs.type !== 0 && fs.type !== 2) throw new VerifyError(`${cidStr} is a UnixFS ${fs.typeName}`, cidStr);
  onBytes(fs.data.length);
  const children = await Promise.all(node.links.map((l) => readFile(l.cid, onBytes)));
  const out = concat([fs.data, ...children]);
  if (fs.filesize !== null && fs.filesize !== out.length) {
    throw new VerifyError(`file ${cidStr} should be ${fs.filesize} bytes, its blocks hold ${out.length}`, cidStr);
  }
  return out;
}

/** Entries of a directory from its verified blocks: [{name, cid, tsize}] (HAMT shards walked). */
export async function readDir(cidStr) {
  const st = await statNode(cidStr);
  if (st.kind !== "dir") throw new VerifyError(`${cidStr} is not a directory`, cidStr);
  if (st.unixfs.type === 1) return st.node.links.map(({ name, cid, tsize }) => ({ name, cid, tsize }));
  return readShard(cidStr, st.node, st.unixfs);
}

/** Buckets a HAMT shard's bitfield marks (big-endian bytes: bucket 0 is the last byte's low bit). */
function occupied(bitfield) {
  const out = [];
  for (let i = 0; i < bitfield.length * 8; i++) {
    if (bitfield[bitfield.length - 1 - (i >> 3)] & (1 << (i & 7))) out.push(i);
  }
  return out;
}

/** Check a HAMT shard node as Kubo writes it: murmur3-x64-64 (0x22), a power-of-two fanout
 *  (the parent's, below the root), one link per marked bucket, named by that bucket in hex. */
function checkShard(cidStr, node, fs, fanout) {
  const f = fs.fanout;
  if (!f || f < 8 || f > 1024 || (f & (f - 1)) !== 0 || (fanout && f !== fanout)) {
    throw new VerifyError(`HAMT shard ${cidStr} has fanout ${f}`, cidStr);
  }
  if (fs.hashType !== 0x22) {
    throw new VerifyError(`HAMT shard ${cidStr} uses hash type ${fs.hashType}, not murmur3-x64-64`, cidStr);
  }
  const buckets = fs.data.length <= f / 8 ? occupied(fs.data) : null;
  if (!buckets || buckets.length !== node.links.length) {
    throw new VerifyError(`HAMT shard ${cidStr}: its bitfield does not match its ${node.links.length} links`, cidStr);
  }
  const width = (f - 1).toString(16).length;
  node.links.forEach((link, i) => {
    if (parseInt(link.name.slice(0, width), 16) !== buckets[i] || !/^[0-9a-fA-F]+$/.test(link.name.slice(0, width))) {
      throw new VerifyError(`HAMT shard ${cidStr}: link "${link.name}" is not in bucket ${buckets[i]}`, cidStr);
    }
  });
  return width;
}

async function readShard(cidStr, node, fs, fanout = 0, depth = 0) {
  const width = checkShard(cidStr, node, fs, fanout);
  if (depth > 64) throw new VerifyError(`HAMT ${cidStr} is too deep`, cidStr);
  const parts = await Promise.all(node.links.map(async (link) => {
    if (link.name.length > width) return [{ name: link.name.slice(width), cid: link.cid, tsize: link.tsize }];
    const sub = decodeNode(await getBlock(link.cid));
    return readShard(link.cid, sub, decodeUnixfs(sub.data), fs.fanout, depth + 1);
  }));
  const out = parts.flat();
  if (depth === 0) out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return out;
}

/** Follow `path` (a/b/c) from `root` through verified directory blocks; returns the CID. */
export async function resolvePath(root, path) {
  let cur = root;
  for (const seg of String(path || "").split("/").filter(Boolean)) {
    const entries = await readDir(cur);
    const hit = entries.find((e) => e.name === seg);
    if (!hit) throw new GatewayError(`no "${seg}" in directory ${cur}`, { status: 404 });
    cur = hit.cid;
  }
  return cur;
}
