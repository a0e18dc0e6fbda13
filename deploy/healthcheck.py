"""The container's HEALTHCHECK: exit 0 when the node's admin API says it is ready, else 1.

Standard library only (the image has no curl). The address is the node's own admin address,
$RAMSTER_ADMIN_LISTEN (default 127.0.0.1:7171); a wildcard address is asked on loopback.
"""

import json
import os
import sys
import urllib.error
import urllib.request

address = os.environ.get("RAMSTER_ADMIN_LISTEN") or "127.0.0.1:7171"
host, _, port = address.rpartition(":")
if host in ("", "0.0.0.0", "[::]", "::"):
    host = "127.0.0.1"
url = f"http://{host}:{port}/v1/health"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        body = json.load(response)
except (OSError, ValueError) as exc:  # URLError and HTTPError (503: not ready) are OSErrors
    print(f"{url}: {exc}")
    sys.exit(1)
print(f"{url}: {body.get('status')}")
sys.exit(0 if body.get("status") == "ok" else 1)
