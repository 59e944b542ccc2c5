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

/** Content past what the browser reads (MAX_READ_BYTES and the rest): not proven wrong. */
export class BoundError extends VerifyError {
  constructor(message, cid = null) { super(message, cid); this.name = "BoundError"; }
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

// What one verified read may take (session 49, review r1 F8: a 133 KB file DAG whose nodes
// link one child 1,000 times was expanded without bound and crashed the tab). A file's
// nodes are checked before their children are fetched, as the peer's reader checks them
// (peer/ipfs/unixfs.py check_file): one blocksize per link, the data plus the blocksizes
// make its filesize, and each child holds what its parent's blocksize says; so the bytes
// read are the root's size, which must be at most MAX_READ_BYTES. The blocks are bounded
// too (empty leaves repeated hold no bytes): MAX_READ_BLOCKS per file, and what a file
// reads again of blocks it has read (each at least MIN_REPEAT_COST, plus what the block holds
// beyond its data: its links) at most REPEAT_ALLOWANCE beyond its distinct blocks' bytes, as
// the peer bounds an export (peer/ipfs/dag.py Expansion); MAX_WALK_BLOCKS per HAMT
// directory, whose sub-shards must each be linked once, and MAX_DIR_ENTRIES entries.
export const MAX_READ_BYTES = 512 * 1024 * 1024;
export const MAX_READ_BLOCKS = 1 << 18;
export const REPEAT_ALLOWANCE = 16 * 1024 * 1024;
const MIN_REPEAT_COST = 512;
export const MAX_WALK_BLOCKS = 1 << 14;
export const MAX_DIR_ENTRIES = 1 << 20;
const MAX_FILE_DEPTH = 64;

/** The whole content of a UnixFS file, every block verified. `onBytes(n)` reports progress. */
export async function readFile(cidStr, onBytes = () => {}) {
  const parts = [];
  const walk = { blocks: 0, parts, onBytes, root: cidStr, seen: new Set(), once: 0, again: 0 };
  await readInto(cidStr, null, walk, 0);
  return concat(parts);
}

/** Read file node `cidStr` (whose parent says it holds `want` bytes; null for the root)
 *  into `walk.parts`, its children in order, a few fetched ahead. */
async function readInto(cidStr, want, walk, depth) {
  if (++walk.blocks > MAX_READ_BLOCKS) {
    throw new BoundError(`file ${walk.root} has more than ${MAX_READ_BLOCKS} blocks (or links one block over and over): not read in the browser`, walk.root);
  }
  if (depth > MAX_FILE_DEPTH) throw new VerifyError(`file ${walk.root} is nested deeper than ${MAX_FILE_DEPTH} levels`, walk.root);
  const cid = parseCid(cidStr);
  const block = await getBlock(cidStr);
  const wrong = (held) => new VerifyError(`file ${walk.root}: block ${cidStr} holds ${held} bytes, its parent says ${want}`, cidStr);
  if (cid.codec === 0x55) {
    if (want !== null && block.length !== want) throw wrong(block.length);
    tooBig(block.length, walk.root);
    repeated(walk, cidStr, block.length, block.length);
    walk.onBytes(block.length);
    walk.parts.push(block);
    return;
  }
  if (cid.codec !== 0x70) throw new VerifyError(`unsupported codec ${cid.codecName}`, cidStr);
  const node = decodeNode(block);
  const fs = decodeUnixfs(node.data);
  if (fs.type === 1 || fs.type === 5) throw new VerifyError(`${cidStr} is a directory, not a file`, cidStr);
  if (fs.type !== 0 && fs.type !== 2) throw new VerifyError(`${cidStr} is a UnixFS ${fs.typeName}`, cidStr);
  if (fs.blocksizes.length !== node.links.length) {
    throw new VerifyError(`corrupt UnixFS file ${cidStr}: ${fs.blocksizes.length} blocksizes for ${node.links.length} links`, cidStr);
  }
  const held = fs.blocksizes.reduce((a, b) => a + b, fs.data.length);
  if (fs.filesize !== null && fs.filesize !== held) {
    throw new VerifyError(`corrupt UnixFS file ${cidStr}: it declares ${fs.filesize} bytes but its data and blocksizes hold ${held}`, cidStr);
  }
  if (want !== null && held !== want) throw wrong(held);
  if (want === null) tooBig(held, cidStr);
  repeated(walk, cidStr, block.length, fs.data.length);
  walk.onBytes(fs.data.length);
  walk.parts.push(fs.data);
  const links = node.links;
  const ahead = (j) => {
    if (j < links.length && !walk.seen.has(links[j].cid)) getBlock(links[j].cid).catch(() => {});
  }; // (fetched ahead, cached: an error comes when it is read)
  for (let j = 1; j < MAX_PARALLEL; j++) ahead(j);
  for (let i = 0; i < links.length; i++) {
    ahead(i + MAX_PARALLEL);
    await readInto(links[i].cid, fs.blocksizes[i], walk, depth + 1);
  }
}

/** Count a block of a file read (`data` of its `size` bytes are content, bounded apart). */
function repeated(walk, cidStr, size, data) {
  if (!walk.seen.has(cidStr)) {
    walk.seen.add(cidStr);
    walk.once += size;
    return;
  }
  walk.again += MIN_REPEAT_COST + size - data;
  if (walk.again > REPEAT_ALLOWANCE + walk.once) {
    throw new BoundError(`file ${walk.root} links the same blocks over and over: reading it would take more than ${REPEAT_ALLOWANCE} bytes beyond its ${walk.once} bytes of distinct blocks again (at ${cidStr}); not read in the browser`, walk.root);
  }
}

function tooBig(size, cidStr) {
  if (size > MAX_READ_BYTES) {
    throw new BoundError(`file ${cidStr} is ${size} bytes, more than the ${MAX_READ_BYTES} a browser tab verifies in memory: use banzai get`, cidStr);
  }
}

/** A directory's entries a page at a time from its verified blocks: `await l.next(n)` gives
 *  up to `n` more [{name, cid, tsize}] in its listing order (a basic directory's links, a
 *  HAMT's depth first in bucket order, as the peer's gateway lists and pages it), `l.done`
 *  once none is left. A HAMT's sub-shards are read as the walk reaches them: a page of a
 *  directory of millions reads the few shards it lists, never the whole directory. */
export async function dirLister(cidStr) {
  const st = await statNode(cidStr);
  if (st.kind !== "dir") throw new VerifyError(`${cidStr} is not a directory`, cidStr);
  if (st.unixfs.type === 1) {
    const links = st.node.links;
    let at = 0;
    return {
      done: links.length === 0,
      async next(n) {
        const out = links.slice(at, at + n).map(({ name, cid, tsize }) => ({ name, cid, tsize }));
        at += out.length;
        this.done = at >= links.length;
        return out;
      },
    };
  }
  const w = { root: cidStr, seen: new Set([cidStr]), entries: 0 };
  const width = checkShard(cidStr, st.node, st.unixfs, 0);
  noteShard(w, st.node, width);
  // per level from the root: the shard's links, the next one's index, its bucket width and fanout
  const stack = [{ links: st.node.links, at: 0, width, fanout: st.unixfs.fanout }];
  const pull = async () => {
    while (stack.length) {
      const top = stack[stack.length - 1];
      if (top.at >= top.links.length) { stack.pop(); continue; }
      const link = top.links[top.at++];
      if (link.name.length > top.width) return { name: link.name.slice(top.width), cid: link.cid, tsize: link.tsize };
      if (stack.length > 64) throw new VerifyError(`HAMT ${cidStr} is too deep`, cidStr);
      const sub = decodeNode(await getBlock(link.cid));
      const fs = decodeUnixfs(sub.data);
      const subWidth = checkShard(link.cid, sub, fs, top.fanout);
      noteShard(w, sub, subWidth);
      stack.push({ links: sub.links, at: 0, width: subWidth, fanout: fs.fanout });
    }
    return null;
  };
  let ahead = await pull(); // (one entry ahead: `done` is known as the last page ends)
  return {
    done: ahead === null,
    async next(n) {
      const out = [];
      while (ahead !== null && out.length < n) {
        out.push(ahead);
        ahead = await pull();
      }
      this.done = ahead === null;
      return out;
    },
  };
}

/** A HAMT shard's links counted against the walk's bounds as it is read (review r1 F8: every
 *  bucket may link one sub-shard, 1024^k entries from k+1 blocks; a sub-shard linked twice
 *  is refused). */
function noteShard(w, node, width) {
  for (const link of node.links) {
    if (link.name.length > width) {
      if (++w.entries > MAX_DIR_ENTRIES) {
        throw new BoundError(`HAMT directory ${w.root} has more than ${MAX_DIR_ENTRIES} entries: not listed in the browser`, w.root);
      }
    } else if (w.seen.has(link.cid)) {
      throw new VerifyError(`HAMT directory ${w.root}: shard ${link.cid} is linked more than once`, w.root);
    } else if (w.seen.add(link.cid).size > MAX_WALK_BLOCKS) {
      throw new BoundError(`HAMT directory ${w.root} has more than ${MAX_WALK_BLOCKS} shards: not listed in the browser`, w.root);
    }
  }
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

// murmur3-x64-64 of a HAMT's names: h1 of MurmurHash3_x64_128, seed 0 (peer/ipfs/hamt.py
// name_hash), in BigInt
const M64 = (1n << 64n) - 1n;
const MC1 = 0x87c37b91114253d5n, MC2 = 0x4cf5ad432745937fn;
const rotl64 = (x, r) => ((x << BigInt(r)) | (x >> BigInt(64 - r))) & M64;
function fmix64(k) {
  k ^= k >> 33n;
  k = (k * 0xff51afd7ed558ccdn) & M64;
  k ^= k >> 33n;
  k = (k * 0xc4ceb9fe1a85ec53n) & M64;
  return k ^ (k >> 33n);
}
const mixK1 = (k) => (rotl64((k * MC1) & M64, 31) * MC2) & M64;
const mixK2 = (k) => (rotl64((k * MC2) & M64, 33) * MC1) & M64;

/** The 64-bit murmur3-x64-64 hash of `bytes` (a Uint8Array), as a BigInt. */
export function murmur64(bytes) {
  const len = bytes.length, blocks = len >> 4;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let h1 = 0n, h2 = 0n;
  for (let i = 0; i < blocks; i++) {
    h1 ^= mixK1(dv.getBigUint64(i * 16, true));
    h1 = (((rotl64(h1, 27) + h2) & M64) * 5n + 0x52dce729n) & M64;
    h2 ^= mixK2(dv.getBigUint64(i * 16 + 8, true));
    h2 = (((rotl64(h2, 31) + h1) & M64) * 5n + 0x38495ab5n) & M64;
  }
  const t = blocks * 16, rem = len & 15;
  let k1 = 0n, k2 = 0n;
  for (let i = rem - 1; i >= 8; i--) k2 ^= BigInt(bytes[t + i]) << BigInt((i - 8) * 8);
  if (rem > 8) h2 ^= mixK2(k2);
  for (let i = Math.min(rem, 8) - 1; i >= 0; i--) k1 ^= BigInt(bytes[t + i]) << BigInt(i * 8);
  if (rem > 0) h1 ^= mixK1(k1);
  h1 ^= BigInt(len);
  h2 ^= BigInt(len);
  h1 = (h1 + h2) & M64;
  h2 = (h2 + h1) & M64;
  return (fmix64(h1) + fmix64(h2)) & M64;
}

/** The CID of entry `name` of the HAMT whose root shard `st` (statNode's) is, or null:
 *  looked up by the name's hash as the peer and Kubo look it up, one verified shard a level
 *  (never the directory's listing). */
async function shardLookup(cidStr, st, name) {
  const h = murmur64(new TextEncoder().encode(name));
  let cur = cidStr, node = st.node, fs = st.unixfs, fanout = 0;
  for (let depth = 0; depth <= 64; depth++) {
    const width = checkShard(cur, node, fs, fanout);
    const bits = Math.log2(fs.fanout), shift = 64 - (depth + 1) * bits;
    if (shift < 0) return null;
    const bucket = Number((h >> BigInt(shift)) & BigInt(fs.fanout - 1));
    const link = node.links.find((l) => parseInt(l.name.slice(0, width), 16) === bucket);
    if (!link) return null;
    if (link.name.length > width) return link.name.slice(width) === name ? link.cid : null;
    fanout = fs.fanout;
    cur = link.cid;
    node = decodeNode(await getBlock(cur));
    fs = decodeUnixfs(node.data);
  }
  throw new VerifyError(`HAMT ${cidStr} is too deep`, cidStr);
}

/** Follow `path` (a/b/c) from `root` through verified directory blocks; returns the CID. */
export async function resolvePath(root, path) {
  let cur = root;
  for (const seg of String(path || "").split("/").filter(Boolean)) {
    const st = await statNode(cur);
    if (st.kind !== "dir") throw new VerifyError(`${cur} is not a directory`, cur);
    let hit = null;
    if (st.unixfs.type === 5) {
      const cid = await shardLookup(cur, st, seg);
      hit = cid && { cid };
    } else {
      hit = st.node.links.find((l) => l.name === seg);
    }
    if (!hit) throw new GatewayError(`no "${seg}" in directory ${cur}`, { status: 404 });
    cur = hit.cid;
  }
  return cur;
}
