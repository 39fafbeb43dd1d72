#!/usr/bin/env python3
"""Minimal OTLP/HTTP+protobuf trace receiver for tests (scripts/bootstrap.sh installs opentelemetry-proto).

scripts/otlp-receiver.py --port 0 --out spans.jsonl [--parent-pid PID]: prints "listening on PORT"
first; appends one JSON line per span received on POST /v1/traces (optionally gzip), flushed per
request; exits on SIGTERM/SIGINT or when its parent (or --parent-pid) is gone.
"""
import argparse, gzip, json, os, signal, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attrs(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None  # string/bool/int/double_value


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def enum_name(enum, value):
    return enum.Name(value) if value in enum.values() else value


def span_records(req):
    for rs in req.resource_spans:
        service = attrs(rs.resource.attributes).get("service.name", "")
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(), "name": s.name,
                    "kind": enum_name(Span.SpanKind, s.kind), "attributes": attrs(s.attributes),
                    "links": [{"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex(),
                               "attributes": attrs(l.attributes)} for l in s.links],
                    "events": [{"name": e.name, "attributes": attrs(e.attributes)} for e in s.events],
                    "status": enum_name(Status.StatusCode, s.status.code), "status_message": s.status.message,
                    "service_name": service, "scope": ss.scope.name,
                    "start_time_unix_nano": s.start_time_unix_nano, "end_time_unix_nano": s.end_time_unix_nano,
                }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporters expect

    def log_message(self, *args): pass  # keep stderr quiet

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size + 2)[:size]  # chunk + CRLF
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, code, body=b"", ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.read_body()
        if self.path.split("?")[0] != "/v1/traces":
            return self.reply(404, b"only /v1/traces")
        if not self.headers.get("Content-Type", "").startswith("application/x-protobuf"):
            return self.reply(415, b"only application/x-protobuf")
        req = ExportTraceServiceRequest()
        try:
            gz = self.headers.get("Content-Encoding", "").lower() == "gzip"
            req.ParseFromString(gzip.decompress(body) if gz else body)
        except Exception as exc:  # malformed body
            return self.reply(400, str(exc).encode())
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in span_records(req))
        with self.server.out_lock:
            self.server.out.write(lines)
            self.server.out.flush()
        self.reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


def parent_alive(parent_pid, original_ppid):
    if not parent_pid:
        return os.getppid() == original_ppid
    try:
        os.kill(parent_pid, 0)
    except OSError as exc:
        return not isinstance(exc, ProcessLookupError)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--parent-pid", type=int, default=0)
    args = ap.parse_args()
    original_ppid = os.getppid()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.out, server.out_lock = open(args.out, "a", encoding="utf-8"), threading.Lock()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    print(f"listening on {server.server_address[1]}", flush=True)
    while not stop.wait(0.5) and parent_alive(args.parent_pid, original_ppid):
        pass
    server.shutdown()
    server.server_close()
    with server.out_lock:
        server.out.close()


if __name__ == "__main__":
    main()
