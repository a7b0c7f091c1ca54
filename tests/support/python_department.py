"""A department system as many small ones are written: Python's standard
http.server. It reads a request body by Content-Length only (a chunked body
reads as empty), answers 200 over HTTP/1.0 (closing every connection), and
prints each request as one JSON line on stdout for the test to read."""

import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Department(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        record = {
            "path": self.path,
            "content_length": self.headers.get("Content-Length"),
            "transfer_encoding": self.headers.get("Transfer-Encoding"),
            "content_type": self.headers.get("Content-Type"),
            "ce_id": self.headers.get("ce-id"),
            "body_b64": base64.b64encode(body).decode("ascii"),
        }
        answer = json.dumps({"received": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        print(json.dumps(record), flush=True)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Department)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
