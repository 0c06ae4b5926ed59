"""Real MCP servers for the tests, on the official Python SDK (`mcp`, pinned in
tests/clients/requirements.txt). One process serves four servers, each on its own loopback
port (bound to port 0), each over both transports: Streamable HTTP at `/mcp` and the older
HTTP+SSE transport at `/sse` (messages POSTed to `/messages/`).

- `tools`: a few plain tools (add, echo, secret_word), one that reports progress
  (`count_slowly`), one that adds a tool and sends `notifications/tools/list_changed`
  (`grow`).
- `auth`: needs `Authorization: Bearer <token>` (`--token`, default `mcp-test-token`) on every
  request, else 401; its tool `whoami` answers only when the header was right.
- `slow`: `nap(seconds)` sleeps before answering (for call timeouts).
- `fail`: every tool raises (a tool error the model reads, `isError: true`).

Started by the tests: `python servers.py [--token T]`. The first line on stdout is
`mcp servers listening {"tools": PORT, "auth": PORT, "slow": PORT, "fail": PORT}`; the
process serves until it is killed. Each request is logged to stderr as
`mcp-request KIND METHOD PATH` (tests read it to see sessions deleted), and each call of the
`tools` server's plain tools as `mcp-tool NAME` (tests count the calls a server saw).
"""

import argparse
import asyncio
import json
import socket
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def log_call(tool: str) -> None:
    print(f"mcp-tool {tool}", file=sys.stderr, flush=True)


def tools_server() -> MCPServer:
    server = MCPServer("tollgate-test-tools")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        log_call("add")
        return a + b

    @server.tool(description="Echo the text back.")
    def echo(text: str) -> str:
        log_call("echo")
        return f"echo: {text}"

    @server.tool(description="The secret word of this server.")
    def secret_word() -> str:
        log_call("secret_word")
        return "the secret word is PAPAYA-42"

    @server.tool(description="Count to n, reporting progress at each step.")
    async def count_slowly(n: int, ctx: Context) -> str:
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, f"step {i}")
            await asyncio.sleep(0.05)
        return f"counted to {n}"

    @server.tool(description="Add a tool named `name` and tell clients the tool list changed.")
    async def grow(name: str, ctx: Context) -> str:
        def grown() -> str:
            return f"{name} grown"

        server.add_tool(grown, name=name, description="A tool added at run time.")
        await ctx.session.send_tool_list_changed()
        return f"added {name}"

    return server


def auth_server() -> MCPServer:
    server = MCPServer("tollgate-test-auth")

    @server.tool(description="Say who the caller is (only reachable with the right token).")
    def whoami() -> str:
        return "authorized caller"

    return server


def slow_server() -> MCPServer:
    server = MCPServer("tollgate-test-slow")

    @server.tool(description="Sleep for `seconds`, then answer.")
    async def nap(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    return server


def fail_server() -> MCPServer:
    server = MCPServer("tollgate-test-fail")

    @server.tool(description="Always fails.")
    def boom() -> str:
        raise ToolError("boom: the tool failed on purpose")

    return server


def both_transports(server: MCPServer):
    """Streamable HTTP at /mcp (the app whose lifespan runs the session manager), plus the
    SSE transport's routes."""
    app = server.streamable_http_app()
    app.router.routes.extend(server.sse_app().routes)
    return app


class RequireBearer:
    """401 unless the Authorization header carries the token."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != self.expected:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"missing or wrong bearer token"})
            return
        await self.app(scope, receive, send)


class LogRequests:
    """`mcp-request <kind> METHOD PATH` on stderr for each request."""

    def __init__(self, app, kind: str):
        self.app = app
        self.kind = kind

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            print(f"mcp-request {self.kind} {scope['method']} {scope['path']}", file=sys.stderr, flush=True)
        await self.app(scope, receive, send)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", default="mcp-test-token")
    args = parser.parse_args()
    apps = {
        "tools": both_transports(tools_server()),
        "auth": RequireBearer(both_transports(auth_server()), args.token),
        "slow": both_transports(slow_server()),
        "fail": both_transports(fail_server()),
    }
    servers, ports = [], {}
    for kind, app in apps.items():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        # Listening before the port is printed: a client may connect at once (it waits in the
        # backlog until uvicorn accepts).
        sock.listen(128)
        ports[kind] = sock.getsockname()[1]
        config = uvicorn.Config(LogRequests(app, kind), log_level="warning", lifespan="auto")
        servers.append(uvicorn.Server(config).serve(sockets=[sock]))
    print("mcp servers listening " + json.dumps(ports), flush=True)
    await asyncio.gather(*servers)


if __name__ == "__main__":
    asyncio.run(main())
