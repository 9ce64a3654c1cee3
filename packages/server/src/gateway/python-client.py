"""A MemoryGateway client nobody here wrote: Debian's python3-grpcio, python3-protobuf and
pymongo's bson (python3-bson), with message classes built at run time from a descriptor set
(`buf build --as-file-descriptor-set`). Run by python-client.test.ts; prints one JSON object
per line and exits 0 when every check passed.

usage: python-client.py <host:port> <descriptor-set> <node-id> <from-version>
"""
import json
import sys
import threading

import bson
import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

target, descriptor_path, node_id, from_version = sys.argv[1], sys.argv[2], sys.argv[3].encode(), int(sys.argv[4])

pool = descriptor_pool.DescriptorPool()
files = descriptor_pb2.FileDescriptorSet()
with open(descriptor_path, "rb") as f:
    files.ParseFromString(f.read())
for fd in files.file:
    pool.Add(fd)
factory = message_factory.MessageFactory(pool)
msg = lambda name: factory.GetPrototype(pool.FindMessageTypeByName("virtualdom.v1." + name))
WriteDiffRequest, WriteDiffResponse = msg("WriteDiffRequest"), msg("WriteDiffResponse")
ReadSnapshotRequest, ReadSnapshotResponse = msg("ReadSnapshotRequest"), msg("ReadSnapshotResponse")
SubscribeRequest, ChangeEvent = msg("SubscribeRequest"), msg("ChangeEvent")
# Enum values by number, named without their prefix: WRITE_OUTCOME_MERGED -> MERGED.
outcome_name = {n: v.name.removeprefix("WRITE_OUTCOME_") for n, v in pool.FindEnumTypeByName("virtualdom.v1.WriteOutcome").values_by_number.items()}
change_name = {n: v.name.removeprefix("CHANGE_TYPE_") for n, v in pool.FindEnumTypeByName("virtualdom.v1.ChangeType").values_by_number.items()}

channel = grpc.insecure_channel(target)
service = "/virtualdom.v1.MemoryGateway/"
write_diff = channel.unary_unary(service + "WriteDiff", request_serializer=WriteDiffRequest.SerializeToString, response_deserializer=WriteDiffResponse.FromString)
read_snapshot = channel.unary_unary(service + "ReadSnapshot", request_serializer=ReadSnapshotRequest.SerializeToString, response_deserializer=ReadSnapshotResponse.FromString)
subscribe = channel.unary_stream(service + "SubscribeChanges", request_serializer=SubscribeRequest.SerializeToString, response_deserializer=ChangeEvent.FromString)


def say(**fields):
    print(json.dumps(fields, sort_keys=True), flush=True)


class Writer:
    """A writer id and its vector clock: its own entry goes up before each write."""

    def __init__(self, writer_id, base):
        self.id = writer_id
        self.clock = dict(base)

    def write(self, fields, barrier=None):
        self.clock[self.id] = self.clock.get(self.id, 0) + 1
        req = WriteDiffRequest(node_id=node_id, diff_bson=bson.encode({"$set": fields}), writer_id=self.id, metadata={"client": "python-grpcio"})
        for k, v in self.clock.items():
            req.vector_clock.entries[k] = v
        if barrier:
            barrier.wait()
        res = write_diff(req, timeout=10)
        return {"writer": self.id, "outcome": outcome_name[res.outcome], "version": res.new_version, "conflicts": [[c.path, c.concurrent_version] for c in res.conflicts], "concurrent": list(res.concurrent_versions)}


# The TypeScript side wrote the node first; both Python writers start from that clock.
base = dict(read_snapshot(ReadSnapshotRequest(node_id=node_id), timeout=10).vector_clock.entries)
a, b = Writer("py-a", base), Writer("py-b", base)


def race(round_no, fields_a, fields_b):
    """Both writers send at once, neither having seen the other's write: concurrent clocks."""
    barrier = threading.Barrier(2)
    results = {}
    threads = [threading.Thread(target=lambda w=w, f=f: results.__setitem__(w.id, w.write(f, barrier))) for w, f in ((a, fields_a), (b, fields_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in sorted(results.values(), key=lambda r: r["version"]):
        say(event="write", round=round_no, **r)
    return sorted(results.values(), key=lambda r: r["version"])


# Round 1: both set "title" (and a path of their own). The first to commit descends from every
# earlier change (APPLIED); the second is concurrent with it on "title" (CONFLICT naming it).
first, second = race(1, {"title": "from py-a", "a": 1}, {"title": "from py-b", "b": 1})
assert first["outcome"] == "APPLIED", first
assert second["outcome"] == "CONFLICT" and second["conflicts"] == [["title", first["version"]]], second
# Round 2: neither has seen the other's round-1 write, and they touch disjoint paths: MERGED.
third, fourth = race(2, {"x": 2}, {"y": 2})
assert third["outcome"] == "MERGED" and fourth["outcome"] == "MERGED", (third, fourth)

snap = read_snapshot(ReadSnapshotRequest(node_id=node_id), timeout=10)
doc = bson.decode(snap.snapshot_bson)
winner = second["writer"]
expected = {"title": "from " + winner, "a": 1, "b": 1, "x": 2, "y": 2}
assert all(doc.get(k) == v for k, v in expected.items()), doc
clock = dict(snap.vector_clock.entries)
assert clock.get("py-a") == 2 and clock.get("py-b") == 2, clock
say(event="snapshot", version=snap.version, doc={k: v for k, v in doc.items() if k != "_id"}, clock=clock)

# The changes after from_version: the TypeScript side's first write and our four, SYNCED,
# then live: the TypeScript side writes again when it reads our "synced" line.
stream = subscribe(SubscribeRequest(node_ids=[node_id], from_version=from_version), timeout=30)
seen_ts_live = False
synced = False
for ev in stream:
    kind = change_name[ev.type]
    if kind == "SYNCED":
        synced = True
        say(event="synced", version=ev.version)
        continue
    say(event="change", type=kind, version=ev.version, writer=ev.writer_id, diff=bson.decode(ev.diff_bson), live=synced)
    if synced and ev.writer_id == "ts-writer":
        seen_ts_live = True
        stream.cancel()
        break
assert seen_ts_live, "the TypeScript side's live change never came"
say(event="done")
