"""Admission webhooks written with Python's standard library, driven by the integration
tests.

Usage: admission_webhook.py PORT CERT KEY

Serves HTTPS on 127.0.0.1:PORT with CERT and KEY. Prints "listening" once the socket is bound.

On /mutate-stamp, /mutate-note and /mutate-tag it is a mutating webhook. For every
AdmissionReview it prints "mutate <stamp|note|tag> <name> <the object's label noted (for stamp
and tag) or stamped (for note), or ->" and answers with a JSON Patch that adds the label
stamped=true (noted=true, tagged=true) if the object lacks it. /mutate-stamp denies an object
called refuse-me ("stamping refuse-me is not allowed", with the warning "refuse-me is refused
by the test webhook"), answers an object called bad-patch
with a patch that cannot apply, one called rename-me with a patch that renames it (and the
warning "stamped by the test webhook"), one called
with-extra with a patch that also adds a top-level field "extra" no schema knows, one called
garbage with a JSON array instead of an AdmissionReview, one called wrong-uid with another
request's uid, and those whose names start with warned with the warning "stamped by the test
webhook". /mutate-note, called after it, denies warned-then-refused ("noting
warned-then-refused is not allowed", with the warning "warned-then-refused is refused by the
test webhook"). /mutate-stamp denies deleting an object labelled keep=true ("deleting kept objects is not allowed") and warns
when the object called warned is deleted ("deleting warned is noted by the test webhook").

On any other path it is a validating webhook. For every AdmissionReview it prints
"review <operation> <username> <name> <has object> <has oldObject, with its resourceVersion> <options kind>
<options' gracePeriodSeconds or ->" and answers:
a DELETE of an object labelled protected=true is denied with the message
"deleting protected objects is not allowed (asked by <username>)", a TokenRequest for the
ServiceAccount called locked with "tokens for locked are not issued"; everything else is
allowed.
"""

import base64
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def mutate(kind, request):
    """The response of the mutating webhook `kind` (stamp or note)."""
    obj = request.get("object") or request.get("oldObject") or {}
    name = (obj.get("metadata") or {}).get("name") or "-"
    labels = (obj.get("metadata") or {}).get("labels") or {}
    mine, other = {
        "stamp": ("stamped", "noted"),
        "note": ("noted", "stamped"),
        "tag": ("tagged", "noted"),
    }[kind]
    print("mutate", kind, name, labels.get(other, "-"), flush=True)
    response = {"uid": request["uid"], "allowed": True}
    if request["operation"] == "DELETE":
        if labels.get("keep") == "true":
            response["allowed"] = False
            response["status"] = {"code": 403, "message": "deleting kept objects is not allowed"}
        elif name == "warned":
            response["warnings"] = ["deleting warned is noted by the test webhook"]
        return response
    if kind == "stamp" and name == "refuse-me":
        response["allowed"] = False
        response["status"] = {"code": 403, "message": "stamping refuse-me is not allowed"}
        response["warnings"] = ["refuse-me is refused by the test webhook"]
        return response
    if kind == "note" and name == "warned-then-refused":
        response["allowed"] = False
        response["status"] = {"code": 403, "message": "noting warned-then-refused is not allowed"}
        response["warnings"] = ["warned-then-refused is refused by the test webhook"]
        return response
    if kind == "stamp" and name == "garbage":
        return []
    if kind == "stamp" and name == "wrong-uid":
        response["uid"] = "not-" + request["uid"]
    if kind == "stamp" and (name.startswith("warned") or name == "rename-me"):
        response["warnings"] = ["stamped by the test webhook"]
    if kind == "stamp" and name == "bad-patch":
        patch = [{"op": "replace", "path": "/no/such/field", "value": 1}]
    elif kind == "stamp" and name == "rename-me":
        patch = [{"op": "replace", "path": "/metadata/name", "value": "renamed"}]
    elif mine in labels:
        return response
    elif "labels" in (obj.get("metadata") or {}):
        patch = [{"op": "add", "path": f"/metadata/labels/{mine}", "value": "true"}]
    else:
        patch = [{"op": "add", "path": "/metadata/labels", "value": {mine: "true"}}]
    if kind == "stamp" and name == "with-extra":
        patch.append({"op": "add", "path": "/extra", "value": 1})
    response["patchType"] = "JSONPatch"
    response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return response


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        review = json.loads(self.rfile.read(length))
        request = review["request"]
        if self.path.startswith("/mutate-"):
            self.answer(mutate(self.path.removeprefix("/mutate-"), request))
            return
        user = request.get("userInfo", {}).get("username", "-")
        old = request.get("oldObject")
        options = request.get("options") or {}
        print(
            "review",
            request["operation"],
            user,
            request.get("name") or "-",
            request.get("object") is not None,
            old is not None and "resourceVersion" in (old.get("metadata") or {}),
            options.get("kind", "-"),
            options.get("gracePeriodSeconds", "-"),
            flush=True,
        )
        labels = ((old or {}).get("metadata") or {}).get("labels") or {}
        response = {"uid": request["uid"], "allowed": True}
        if request["kind"]["kind"] == "TokenRequest" and request.get("name") == "locked":
            response = {
                "uid": request["uid"],
                "allowed": False,
                "status": {"code": 403, "message": "tokens for locked are not issued"},
            }
        if request["operation"] == "DELETE" and labels.get("protected") == "true":
            response = {
                "uid": request["uid"],
                "allowed": False,
                "status": {
                    "code": 403,
                    "message": f"deleting protected objects is not allowed (asked by {user})",
                },
            }
        self.answer(response)

    def answer(self, response):
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        body = json.dumps(review if isinstance(response, dict) else response).encode()
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
