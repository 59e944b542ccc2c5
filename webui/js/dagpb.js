// dag-pb (PBNode/PBLink) and UnixFS Data protobuf decoding: just enough to walk files and
// directories block by block.

import { cidFromBytes, readVarint } from "./cid.js";

export class DagPbError extends Error {
  constructor(message) { super(message); this.name = "DagPbError"; }
}

export const UNIXFS_TYPES = ["raw", "directory", "file", "metadata", "symlink", "hamt-sharded-directory"];

/** Iterate protobuf fields: yields [fieldNumber, wireType, value] (value: number or bytes). */
function* fields(bytes) {
  let pos = 0;
  while (pos < bytes.length) {
    const [key, p1] = readVarint(bytes, pos);
    const num = Math.floor(key / 8), wire = key % 8;
    if (num === 0) throw new DagPbError("protobuf field number 0");
    if (wire === 0) {
      const [v, p2] = readVarint(bytes, p1);
      pos = p2;
      yield [num, wire, v];
    } else if (wire === 2) {
      const [len, p2] = readVarint(bytes, p1);
      if (p2 + len > bytes.length) throw new DagPbError("protobuf field is truncated");
      pos = p2 + len;
      yield [num, wire, bytes.subarray(p2, pos)];
    } else if (wire === 1) {
      pos = p1 + 8;
      yield [num, wire, null];
    } else if (wire === 5) {
      pos = p1 + 4;
      yield [num, wire, null];
    } else {
      throw new DagPbError(`unsupported protobuf wire type ${wire}`);
    }
    if (pos > bytes.length) throw new DagPbError("protobuf message is truncated");
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: false });

/** Decode a dag-pb block: {data: Uint8Array|null, links: [{cid, name, tsize}]}. */
export function decodeNode(bytes) {
  let data = null;
  const links = [];
  for (const [num, wire, value] of fields(bytes)) {
    if (num === 1 && wire === 2) data = value;
    else if (num === 2 && wire === 2) links.push(decodeLink(value));
    else throw new DagPbError(`unexpected field ${num} in a dag-pb node`);
  }
  return { data, links };
}

function decodeLink(bytes) {
  let cid = null, name = "", tsize = null;
  for (const [num, wire, value] of fields(bytes)) {
    if (num === 1 && wire === 2) cid = cidFromBytes(value);
    else if (num === 2 && wire === 2) name = utf8.decode(value);
    else if (num === 3 && wire === 0) tsize = value;
  }
  if (!cid) throw new DagPbError("a dag-pb link has no hash");
  return { cid: cid.string, codec: cid.codec, name, tsize };
}

/** Decode UnixFS Data: {type, typeName, data, filesize, blocksizes, hashType, fanout}. */
export function decodeUnixfs(bytes) {
  if (!bytes) throw new DagPbError("dag-pb node without UnixFS data");
  const out = { type: null, typeName: "", data: new Uint8Array(0), filesize: null,
                blocksizes: [], hashType: null, fanout: null };
  for (const [num, wire, value] of fields(bytes)) {
    if (num === 1 && wire === 0) out.type = value;
    else if (num === 2 && wire === 2) out.data = value;
    else if (num === 3 && wire === 0) out.filesize = value;
    else if (num === 4 && wire === 0) out.blocksizes.push(value);
    else if (num === 4 && wire === 2) { // packed
      let p = 0;
      while (p < value.length) {
        const [v, n] = readVarint(value, p);
        out.blocksizes.push(v);
        p = n;
      }
    } else if (num === 5 && wire === 0) out.hashType = value;
    else if (num === 6 && wire === 0) out.fanout = value;
  }
  if (out.type === null) throw new DagPbError("UnixFS data without a type");
  out.typeName = UNIXFS_TYPES[out.type] || `type ${out.type}`;
  return out;
}
