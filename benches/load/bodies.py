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


def claude_code(size, guardrails=None):
    """An Anthropic request shaped like a Claude Code turn of `size` bytes: a system prompt,
    tool results of the files and commands it ran (source with numbers and hex, a git log with
    hashes, dates and addresses), and tool calls: text a `pii` check has to look at."""
    sys_prompt = "You are an interactive agent that helps users with software engineering tasks. " * 20
    log = "".join(
        f"commit {(i * 0x9E3779B97F4A7C15) % (1 << 160):040x}\nAuthor: Dev {i} <dev{i}@example.com>\n"
        f"Date:   2026-0{1 + i % 9}-1{i % 10} 1{i % 10}:2{i % 10}:3{i % 10} +0200\n\n    fix: case {i} in parser v1.{i}.0 (#{4000 + i})\n\n"
        for i in range(40))
    code = "".join(f"    let x{i} = 0x{i * 7919:08x}; // line {i}, see v{i}.{i % 7}.{i % 3}\n" for i in range(200))
    msgs, i = [], 0
    b = {"model": "claude-x", "max_tokens": 100, "system": sys_prompt, "messages": msgs}
    if guardrails:
        b["guardrails"] = guardrails
    while len(json.dumps(b)) < size:
        msgs.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}",
                                                  "content": (log if i % 2 else code)}]})
        msgs.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i + 1}", "name": "Bash",
                                                       "input": {"command": f"git log -n 40 --skip {i}"}}]})
        i += 1
    msgs.append({"role": "user", "content": "Now fix the failing test, please."})
    return json.dumps(b)


# Claude Code-sized turns, without and with one built-in `pii` check (every text it holds)
bodies["cc80k"] = claude_code(80 * 1024)
bodies["cc80kpii"] = claude_code(80 * 1024, [{"profile": "pii", "scope": "full"}])

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
