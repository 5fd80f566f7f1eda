"""MinIO audit webhook receiver: appends every POSTed audit entry as one JSON line.

Tests read the file to see which access key signed each S3 request and its parentUser
(the identity that minted the temporary credentials). Standard library only.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def main() -> None:
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            lines = []
            # MinIO sends one JSON object per POST (batch size 1) or a JSON array/NDJSON batch.
            text = body.decode("utf-8", "replace").strip()
            try:
                doc = json.loads(text)
                lines = doc if isinstance(doc, list) else [doc]
            except json.JSONDecodeError:
                lines = [json.loads(l) for l in text.splitlines() if l.strip()]
            with LOCK, open(path, "a", encoding="utf-8") as out:
                for entry in lines:
                    out.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802 — health check for `up`
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args) -> None:
            pass

    ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
