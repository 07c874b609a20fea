"""M/M/c queue in SimPy, the same model as `fledge_simulator::bench_mmc`.

Poisson arrivals at rate load * c * mu, c servers, exponential service at rate mu per server.
Prints one JSON line with the simulated requests per wall-clock second and per CPU second of the
simulating thread (time.thread_time, which on a shared machine does not count other processes).

Usage: python mmc_simpy.py C LOAD SECONDS
"""

import json
import random
import sys
import time

import simpy


def run(c: int, load: float, duration: float, mu: float = 1.0, seed: int = 1) -> dict:
    rng = random.Random(seed)
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=c)
    lam = load * c * mu
    stats = {"requests": 0, "waited": 0, "wait_sum": 0.0}

    def request(env):
        arrived = env.now
        with servers.request() as slot:
            yield slot
            waited = env.now - arrived
            stats["wait_sum"] += waited
            if waited > 0:
                stats["waited"] += 1
            yield env.timeout(rng.expovariate(mu))

    def arrivals(env):
        while True:
            yield env.timeout(rng.expovariate(lam))
            stats["requests"] += 1
            env.process(request(env))

    env.process(arrivals(env))
    start, cpu_start = time.perf_counter(), time.thread_time()
    env.run(until=duration)
    wall = time.perf_counter() - start
    cpu = time.thread_time() - cpu_start
    n = stats["requests"]
    return {
        "engine": "simpy",
        "simpy_version": simpy.__version__,
        "c": c,
        "load": load,
        "requests": n,
        "wall_seconds": round(wall, 4),
        "cpu_seconds": round(cpu, 4),
        "requests_per_second": round(n / wall),
        "requests_per_cpu_second": round(n / max(cpu, 1e-9)),
        "p_wait": round(stats["waited"] / max(n, 1), 4),
        "mean_wait": round(stats["wait_sum"] / max(n, 1), 4),
    }


if __name__ == "__main__":
    c = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    load = float(sys.argv[2]) if len(sys.argv) > 2 else 0.8
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000.0
    print(json.dumps(run(c, load, seconds)))
