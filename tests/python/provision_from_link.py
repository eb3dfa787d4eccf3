"""What a phone app or a device does with the text of a devplane provisioning QR code.

Usage: provision_from_link.py 'devplane:provision?v=1&endpoint=...'

It reads nothing but the link: parses it with the standard library, POSTs the request fields
the link carries as JSON to {endpoint}/v1/provision/{namespace}/{policy}, and prints one JSON
line: {"status": <HTTP status>, "answer": <the JSON answer, or its text>}. Exits 0 when the
front door answered at all (whatever the status), 2 when the link is not a provisioning link.
"""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

# The link's parameters that are fields of the request body, by the same names.
REQUEST_FIELDS = ("deviceId", "serialNumber", "proof", "token")


def parse(link):
    parts = urllib.parse.urlsplit(link.strip())
    if parts.scheme != "devplane" or parts.path != "provision":
        raise ValueError(f"not a devplane:provision link: {link!r}")
    params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    if params.get("v") != "1":
        raise ValueError(f"unsupported link version {params.get('v')!r}")
    for required in ("endpoint", "namespace", "policy"):
        if not params.get(required):
            raise ValueError(f"the link has no {required}")
    return params


def provision(params):
    url = "{}/v1/provision/{}/{}".format(
        params["endpoint"].rstrip("/"),
        urllib.parse.quote(params["namespace"], safe=""),
        urllib.parse.quote(params["policy"], safe=""),
    )
    body = {field: params[field] for field in REQUEST_FIELDS if field in params}
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        params = parse(argv[1])
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    status, raw = provision(params)
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = raw.decode(errors="replace")
    print(json.dumps({"status": status, "answer": answer}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
