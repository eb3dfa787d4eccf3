"""A validating admission webhook written with Python's standard library, driven by the
integration tests.

Usage: admission_webhook.py PORT CERT KEY

Serves HTTPS on 127.0.0.1:PORT with CERT and KEY. For every AdmissionReview it prints
"review <operation> <username> <name> <has object> <has oldObject> <options kind>
<options' gracePeriodSeconds or ->" and answers:
a DELETE of an object labelled protected=true is denied with the message
"deleting protected objects is not allowed (asked by <username>)"; everything else is allowed.
Prints "listening" once the socket is bound.
"""

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        review = json.loads(self.rfile.read(length))
        request = review["request"]
        user = request.get("userInfo", {}).get("username", "-")
        old = request.get("oldObject")
        options = request.get("options") or {}
        print(
            "review",
            request["operation"],
            user,
            request.get("name") or "-",
            request.get("object") is not None,
            old is not None,
            options.get("kind", "-"),
            options.get("gracePeriodSeconds", "-"),
            flush=True,
        )
        labels = ((old or {}).get("metadata") or {}).get("labels") or {}
        response = {"uid": request["uid"], "allowed": True}
        if request["operation"] == "DELETE" and labels.get("protected") == "true":
            response = {
                "uid": request["uid"],
                "allowed": False,
                "status": {
                    "code": 403,
                    "message": f"deleting protected objects is not allowed (asked by {user})",
                },
            }
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = HTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
