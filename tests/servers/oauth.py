"""The test bed's OAuth 2.0 token introspection endpoint (RFC 7662), for Dovecot's oauth2 passdb.

Dovecot checks an XOAUTH2 or OAUTHBEARER bearer token by POSTing `token=...` to this endpoint
(`introspection_mode = post`). The endpoint answers `{"active": true, "username": USER}` for a
token it issued and `{"active": false}` for any other, so a scenario's `auth:` step with a real
token passes and one with a wrong token is refused, as against a real identity provider.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

MAX_BODY = 64 * 1024


class IntrospectionServer:
    """An HTTP server on `host`, in a daemon thread, with two tokens per user: `tokens[user]`
    and `long_tokens[user]`."""

    def __init__(self, users: list[str], host: str = "127.0.0.1"):
        self.tokens = {user: secrets.token_urlsafe(24) for user in users}
        # and one as long as an identity provider's JWT (1.5-2.5 KB): too long for a POP3 or
        # SMTP command line, so it cannot go inline as AUTH's initial response
        self.long_tokens = {user: "eyJ" + secrets.token_urlsafe(1200) for user in users}
        self.requests = 0  # how many introspections were answered
        owners = {token: user for user, token in self.tokens.items()}
        owners |= {token: user for user, token in self.long_tokens.items()}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(min(length, MAX_BODY)).decode("ascii", "replace"))
                user = owners.get((form.get("token") or [""])[0])
                answer = {"active": True, "username": user} if user else {"active": False}
                body = json.dumps(answer).encode()
                outer.requests += 1  # counted before answering: Dovecot's reply may come first
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # quiet: pytest shows what Dovecot logs
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/introspect"
        self._thread = threading.Thread(target=self._server.serve_forever, name="oauth", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
