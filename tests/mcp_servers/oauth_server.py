"""An MCP server behind OAuth 2.0 client credentials, for tollgate's token handling
(tests/mcp_gateway.rs), on the official Python SDK (`mcp`).

One loopback port (bound to port 0) serves:
- `POST /token`: the client-credentials grant (client `tollgate-client`, secret
  `tollgate-secret`); each grant issues a new token `tok-N` with `expires_in` (`--expires-in`).
- `POST /revoke`: every token issued so far stops working (the next MCP request with one gets
  a 401, as when a token expired on the server's side).
- `GET /stats`: `{"issued": N, "refused": M}`.
- `/mcp`: Streamable HTTP; every request needs `Authorization: Bearer <a live token>`, else
  401. Its tool `whoami` answers with the token's number.

The first line on stdout is `oauth server listening PORT`.
"""

import argparse
import asyncio
import json
import socket
import sys
from urllib.parse import parse_qs

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

CLIENT_ID = "tollgate-client"
CLIENT_SECRET = "tollgate-secret"

state = {"issued": 0, "refused": 0, "live": set()}


def mcp_app():
    server = MCPServer("tollgate-test-oauth")

    @server.tool(description="Which token the call came with.")
    def whoami(ctx: Context) -> str:
        auth = ctx.request_context.request.headers.get("authorization", "")
        return "caller with token " + auth.removeprefix("Bearer ")

    return server.streamable_http_app()


async def send_json(send, status, body):
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


async def read_body(receive):
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            return body


class App:
    def __init__(self, inner, expires_in):
        self.inner = inner
        self.expires_in = expires_in

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        path = scope["path"]
        print(f"oauth-request {scope['method']} {path}", file=sys.stderr, flush=True)
        if path == "/token":
            form = parse_qs((await read_body(receive)).decode())
            ok = (form.get("grant_type") == ["client_credentials"]
                  and form.get("client_id") == [CLIENT_ID]
                  and form.get("client_secret") == [CLIENT_SECRET])
            if not ok:
                return await send_json(send, 401, {"error": "invalid_client"})
            state["issued"] += 1
            token = f"tok-{state['issued']}"
            state["live"].add(token)
            return await send_json(send, 200, {"access_token": token, "token_type": "Bearer",
                                               "expires_in": self.expires_in})
        if path == "/revoke":
            state["live"].clear()
            return await send_json(send, 200, {"revoked": True})
        if path == "/stats":
            return await send_json(send, 200, {"issued": state["issued"], "refused": state["refused"]})
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if token not in state["live"]:
            state["refused"] += 1
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"invalid or expired token"})
            return
        await self.inner(scope, receive, send)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--expires-in", type=int, default=3600)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(App(mcp_app(), args.expires_in), log_level="warning", lifespan="on")
    print(f"oauth server listening {port}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(main())
