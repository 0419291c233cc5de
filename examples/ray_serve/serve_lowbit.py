"""Replicas of lowbit's OpenAI-compatible server behind Ray Serve.

Each replica is one Ray actor that loads the model once and runs lowbit's own ASGI app (scheduler, continuous
batching, SSE) unchanged; Ray Serve's proxy spreads requests over the replicas and restarts failed ones. On a
cluster, start Ray on every machine (`ray start --head` / `ray start --address=HEAD:6379`) and raise
--replicas: the same code scales out.

    PYTHONPATH=/path/to/lowbit/src python serve_lowbit.py --replicas 2 --smoke   # start, query, shut down
    python serve_lowbit.py --replicas 2                                          # keep serving until Ctrl-C
"""
import argparse
import concurrent.futures as cf
import time

import ray
from ray import serve


@serve.deployment(ray_actor_options={"num_cpus": 1})
@serve.ingress()
class LowbitReplica:
    def __init__(self, model, model_id, threads, api_key, parallel):
        from lowbit.server.lowbit_engine import LowbitEngine
        self.engine = LowbitEngine.load(model, threads=threads, model_id=model_id)
        self.api_key, self.parallel = api_key, parallel

    def __serve_build_asgi_app__(self):
        # Built on the replica after __init__: the app owns a worker thread, which can't be pickled.
        from lowbit.server import create_app
        app = create_app(self.engine, api_key=self.api_key, max_active=self.parallel)
        replica = serve.get_replica_context().replica_id.unique_id

        async def tagged(scope, receive, send):  # say which replica answered (to see the load spread)
            async def send_tagged(msg):
                if msg["type"] == "http.response.start":
                    msg["headers"] = list(msg.get("headers", [])) + [(b"x-lowbit-replica", replica.encode())]
                await send(msg)
            await app(scope, receive, send_tagged if scope["type"] == "http" else send)
        return tagged


def smoke(url, api_key, model_id, n):
    """n concurrent chat requests (half streamed) through the Ray proxy, with the `openai` client."""
    import openai
    c = openai.OpenAI(base_url=url + "/v1", api_key=api_key or "none", timeout=120, max_retries=0)
    print("models:", [m.id for m in c.models.list().data])

    def one(i):
        t0 = time.perf_counter()
        msgs = [{"role": "user", "content": f"Tell me a story about a {['cat', 'dog', 'bird', 'fish'][i % 4]}."}]
        kw = dict(model=model_id, messages=msgs, max_tokens=48, temperature=0)
        if i % 2:
            with c.chat.completions.with_streaming_response.create(stream=True, **kw) as r:
                replica = r.headers.get("x-lowbit-replica")
                text = "".join(ch.choices[0].delta.content or "" for ch in r.parse() if ch.choices)
        else:
            r = c.chat.completions.with_raw_response.create(**kw)
            replica, text = r.headers.get("x-lowbit-replica"), r.parse().choices[0].message.content
        return i, time.perf_counter() - t0, replica, text

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(n) as ex:
        for i, dt, replica, text in ex.map(one, range(n)):
            print(f"  request {i} ({'stream' if i % 2 else 'plain '}) replica {replica} {dt:5.2f} s: {text[:60]!r}")
    print(f"{n} requests in {time.perf_counter() - t0:.2f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="path or known name (default: embedded stories260K)")
    ap.add_argument("--model-id", default="lowbit")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="kernel threads per replica")
    ap.add_argument("--parallel", type=int, default=8, help="batched sequences per replica")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--address", default=None, help="existing Ray cluster (default: start a local instance)")
    ap.add_argument("--smoke", action="store_true", help="send a few requests, print them, shut down")
    ap.add_argument("--requests", type=int, default=8)
    a = ap.parse_args()

    ray.init(address=a.address, include_dashboard=False, num_cpus=None if a.address else a.replicas)
    serve.start(http_options={"host": a.host, "port": a.port})
    app = LowbitReplica.options(num_replicas=a.replicas).bind(a.model, a.model_id, a.threads, a.api_key, a.parallel)
    serve.run(app, name="lowbit", route_prefix="/")
    url = f"http://{a.host}:{a.port}"
    st = serve.status().applications["lowbit"]
    print(f"Ray Serve: app {st.status}, deployment replicas:",
          {name: dict(d.replica_states) for name, d in st.deployments.items()}, f"at {url}/v1")
    try:
        if a.smoke:
            smoke(url, a.api_key, a.model_id, a.requests)
        else:
            while True:
                time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
