"""Request bodies for benches/load: DIR/NAME.json (raw body), DIR/NAME.path (request path) and
DIR/NAME.lua (a wrk script reading TG_KEY and PIECES from the environment)."""
import json, sys

work = sys.argv[1]
pad = lambda n: "x" * n


def chat(model, size, stream=False):
    b = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": ""}]}
    if stream:
        b["stream"] = True
    b["messages"][0]["content"] = pad(size - len(json.dumps(b)))
    return json.dumps(b)


bodies = {
    # 2 KB chat and messages, 80 KB Claude Code-sized bodies
    "chat2k": chat("gpt-4o-mini", 2048), "msg2k": chat("claude-x", 2048), "a2c2k": chat("openai:gpt-4o-mini", 2048),
    "chat80k": chat("gpt-4o-mini", 80 * 1024),
    "msg80k": chat("claude-x", 80 * 1024), "a2c80k": chat("openai:gpt-4o-mini", 80 * 1024),
    # streams: bursts (PIECES=40, no pacing) and paced (64 deltas, x-mock-chunk-delay-ms)
    "chatsse": chat("gpt-4o-mini", 2048, True),
}
for name, body in bodies.items():
    path = "/v1/chat/completions" if name.startswith("chat") else "/v1/messages"
    with open(f"{work}/{name}.json", "w") as f:
        f.write(body)
    with open(f"{work}/{name}.path", "w") as f:
        f.write(path)
    with open(f"{work}/{name}.lua", "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.path = "{path}"\nwrk.body = {json.dumps(body)}\n')
        f.write('wrk.headers["content-type"] = "application/json"\nwrk.headers["authorization"] = "Bearer " .. os.getenv("TG_KEY")\n')
        f.write('wrk.headers["x-mock-pieces"] = os.getenv("PIECES") or "7"\n')
        # the mock writes each event in one piece here (its split-write mode sleeps between pieces)
        f.write('wrk.headers["x-mock-split-writes"] = "0"\n')
