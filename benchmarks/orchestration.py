"""Orchestration overhead: kai's flow machinery vs a plain paramiko floor vs Ansible (issue 6).

    python -m benchmarks.orchestration --hosts 10,50,200 --steps 10 --duration 1

One run brings up light test hosts (network namespaces running the machine's own sshd,
tests/hosts/light.py) and a throwaway Prefect server (loopback, temp SQLite, telemetry off), then
for each host count N runs the same synthetic plan (S steps, each `sleep d` on every host):

- `paramiko`: one connection and one thread per host, a barrier between steps — the floor;
- `kai`: a Prefect flow with `@step_task` + `run_node_step` (one task per step fanning out over
  hosts), Fleet/Connection/kai-exec.sh, the per-host locks, through the real server;
- `ansible-*`: ansible-playbook with forks = N, pipelining, ControlPersist; `command` module
  (module-based: the fair comparison) with `linear` and `free`, and `raw` + `linear` for reference.

Then: status latency under C concurrent pollers during an N-host kai run, and the time to add one
worker to a 50-node vs a 1-node cluster plan. Writes results/orchestration.{json,md,png}.
Root only (network namespaces). Traffic goes only to loopback and the namespaces it creates.

A kai run that fails (e.g. every host refuses the key) aborts the benchmark at once with the
run's error (exit 1): figures measured around a failed run would mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import TreeSampler, children_cpu
from benchmarks.prefect_server import PrefectServer, RunWatcher, free_port
from benchmarks.synthetic import MARKER, light_spec, node_names

RESULTS = Path(__file__).parent / "results"


class BenchmarkAborted(RuntimeError):
    """A kai run failed: the benchmark stops with the run's error."""
ALL_METHODS = ("paramiko", "kai", "ansible-command-linear", "ansible-command-free",
               "ansible-raw-linear")
DEFAULT_METHODS = ALL_METHODS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.orchestration", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", default="10,50,200", help="comma list of host counts (1..249)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--duration", type=float, default=1.0, help="seconds each step sleeps")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma list out of {','.join(ALL_METHODS)}")
    p.add_argument("--ansible-max-hosts", type=int, default=250,
                   help="skip Ansible above this many hosts (it takes minutes at 200)")
    p.add_argument("--status-hosts", type=int, default=50, help="0 skips the status measurement")
    p.add_argument("--status-clients", type=int, default=50)
    p.add_argument("--status-interval", type=float, default=1.0)
    p.add_argument("--add-nodes-cluster", type=int, default=50, help="0 skips add_nodes timing")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() in kai's flow process")
    p.add_argument("--py-spy", action="store_true", help="profile kai's flow process with py-spy")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="orchestration", help="base name of the result files")
    a = p.parse_args(argv)
    try:
        a.host_counts = [int(x) for x in a.hosts.split(",") if x.strip()]
    except ValueError:
        p.error(f"--hosts: not a comma list of integers: {a.hosts!r}")
    if not a.host_counts or not all(1 <= n <= 249 for n in a.host_counts):
        p.error("--hosts: every count must be 1..249")
    a.method_list = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in a.method_list if m not in ALL_METHODS]
    if bad:
        p.error(f"--methods: unknown {bad}; choose from {','.join(ALL_METHODS)}")
    if a.steps < 1 or a.duration < 0:
        p.error("--steps must be >= 1 and --duration >= 0")
    return a


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 65536):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="kai-bench-"))
        self.log_dir = self.work / "logs"
        self.log_dir.mkdir()
        self.hosts = None
        self.server: PrefectServer | None = None
        self.py = sys.executable

    # -- hosts and names ----------------------------------------------------------------------

    def named(self, n: int, offset: int = 0) -> list[tuple[str, str]]:
        names = node_names(offset + n)[offset:]
        return [(name, self.hosts[offset + i].address) for i, name in enumerate(names)]

    @property
    def key_file(self) -> str:
        return str(self.hosts.key_file)

    @property
    def known_hosts(self) -> str:
        return str(self.hosts.known_hosts)

    def hosts_cpu_s(self) -> float:
        usage = Path("/sys/fs/cgroup/cpuacct") / self.hosts.cgroup / "cpuacct.usage"
        try:
            return int(usage.read_text()) / 1e9
        except (OSError, ValueError):
            return float("nan")

    def spec_for(self, hosts: list[tuple[str, str]], name: str = "bench") -> dict:
        nodes = [(n, a, "control-plane" if i == 0 else "worker") for i, (n, a) in enumerate(hosts)]
        return light_spec(name, nodes, self.key_file, self.known_hosts)

    # -- one method ---------------------------------------------------------------------------

    def child_env(self) -> dict[str, str]:
        return {**os.environ, **self.server.client_env(), "PYTHONUNBUFFERED": "1"}

    def run_paramiko(self, hosts) -> dict:
        cfg = self.work / f"paramiko-{len(hosts)}.json"
        out = self.work / f"paramiko-{len(hosts)}.result.json"
        cfg.write_text(json.dumps({"hosts": hosts, "steps": self.args.steps,
                                   "duration": self.args.duration, "key_file": self.key_file,
                                   "known_hosts": self.known_hosts}))
        with open(self.log_dir / f"paramiko-{len(hosts)}.log", "w") as log:
            proc = subprocess.Popen([self.py, "-m", "benchmarks.paramiko_floor", str(cfg), str(out)],
                                    stdout=log, stderr=subprocess.STDOUT)
            sampler = TreeSampler(proc.pid).start()
            rc = proc.wait()
            sampler.stop()
        if not out.exists():
            return {"errors": [f"paramiko child failed (exit {rc}), see {log.name}"]}
        res = json.loads(out.read_text())
        res["peak_rss_mb"] = max(res["peak_rss_mb"], sampler.peak_rss_mb)
        return res

    def run_kai(self, spec: dict, plan: dict, tag: str, on_started=None, on_returned=None,
                expected_lines: int | None = None, expected_tasks: int | None = None) -> dict:
        """Run benchmarks.kai_flow in a child; time the server's ingest backlog after it returns."""
        cfg = self.work / f"kai-{tag}.json"
        out = self.work / f"kai-{tag}.result.json"
        cfg.write_text(json.dumps({"spec": spec, "plan": plan, "duration": self.args.duration,
                                   "gc_freeze": self.args.gc_freeze}))
        cmd = [self.py, "-m", "benchmarks.kai_flow", str(cfg), str(out)]
        if self.args.py_spy:
            spy = Path(self.py).parent / "py-spy"
            cmd = [str(spy), "record", "--nonblocking", "-r", "50", "-f", "raw",
                   "-o", str(self.args.out / f"py-spy-kai-{tag}.txt"), "--"] + cmd
        watcher = RunWatcher(self.server.api_url)
        log_mark, _, _ = self.server.log_errors()
        cpu0 = self.server.cpu_s()
        t_start = time.time()
        flow_run_id, ingest = None, None
        with open(self.log_dir / f"kai-{tag}.log", "w") as log:
            proc = subprocess.Popen(cmd, env=self.child_env(), stdout=subprocess.PIPE, stderr=log,
                                    text=True)
            sampler = TreeSampler(proc.pid).start()
            for line in proc.stdout:
                words = line.split()
                if words[:2] == ["KAI-BENCH", "flow-started"]:
                    flow_run_id = words[2]
                    if on_started:
                        on_started(flow_run_id)
                elif words[:2] == ["KAI-BENCH", "flow-returned"]:
                    returned_at = float(words[2])
                    failed = words[3:4] == ["failed"]
                    if on_returned:
                        on_returned()
                    if flow_run_id and expected_lines is not None and not failed:
                        ingest = watcher.wait_ingested(
                            flow_run_id, task_runs=expected_tasks, marker=MARKER,
                            marker_lines=expected_lines)
                        ingest["backlog_s"] = time.time() - returned_at
                else:
                    log.write(line)
            rc = proc.wait()
            sampler.stop()
        server_cpu = self.server.cpu_s() - cpu0
        window = time.time() - t_start
        _, locked, server_errors = self.server.log_errors(log_mark)
        res = json.loads(out.read_text()) if out.exists() else {
            "error": f"kai child exited {rc} without a result (see {log.name})"}
        if res.get("error"):
            raise BenchmarkAborted(f"kai run {tag!r} failed: {res['error']}\n"
                                   f"(flow run {flow_run_id}; child log {log.name})")
        res.update(flow_run_id=flow_run_id, ingest=ingest, server_cpu_s=server_cpu,
                   server_window_s=window, db_locked=locked, server_log_errors=server_errors,
                   peak_rss_mb=max(res.get("peak_rss_mb", 0), sampler.peak_rss_mb), exit_code=rc)
        return res

    def kai_synthetic(self, hosts) -> dict:
        s = self.args.steps
        res = self.run_kai(self.spec_for(hosts), {"kind": "bench", "steps": s}, f"{len(hosts)}",
                           expected_lines=s * len(hosts), expected_tasks=s)
        outcomes = res.get("outcomes", {})
        done = {name: 0 for name, _ in hosts}
        # run_node_step raises unless every host succeeded, so a step's ok count is all or error
        for step, o in outcomes.items():
            if o["ok"] == o["hosts"]:
                for name in done:
                    done[name] += 1
        errors = []  # a failed run never gets here: run_kai raised BenchmarkAborted
        if res.get("db_locked"):
            errors.append(f"server log: 'database is locked' x{res['db_locked']}")
        if res.get("ingest") and not res["ingest"].get("complete"):
            errors.append(f"server did not ingest everything: {res['ingest']}")
        # kai's wall: until Prefect records the run Completed (see benchmarks/kai_flow.py)
        res.update(wall_s=res.get("completed_wall_s") or res.get("flow_wall_s"), steps_done=done,
                   errors=errors)
        return res

    def run_ansible(self, hosts, method: str) -> dict:
        from benchmarks.ansible_run import run_ansible

        _, module, strategy = method.split("-")
        return run_ansible(hosts, steps=self.args.steps, duration=self.args.duration,
                           strategy=strategy, module=module, key_file=self.key_file,
                           known_hosts=self.known_hosts, log_dir=self.log_dir)

    # -- the measurements ---------------------------------------------------------------------

    def size(self, n: int) -> dict:
        hosts = self.named(n)
        row: dict = {"hosts": n, "critical_path_s": self.args.steps * self.args.duration,
                     "methods": {}}
        for method in self.args.method_list:
            if method.startswith("ansible") and n > self.args.ansible_max_hosts:
                continue
            print(f"[bench] N={n} {method} …", flush=True)
            load_before = os.getloadavg()[0]
            hosts_cpu0 = self.hosts_cpu_s()
            if method == "paramiko":
                res = self.run_paramiko(hosts)
            elif method == "kai":
                res = self.kai_synthetic(hosts)
            else:
                res = self.run_ansible(hosts, method)
            # the machine is shared: the load around each method says how noisy its figure is
            res["loadavg_1m"] = [load_before, os.getloadavg()[0]]
            # the light hosts' sshd sessions and everything they run (one cgroup): host-side cost
            res["hosts_cpu_s"] = self.hosts_cpu_s() - hosts_cpu0
            res["complete"] = (all(v == self.args.steps for v in res.get("steps_done", {}).values())
                               and len(res.get("steps_done", {})) == n)
            row["methods"][method] = res
            print(f"[bench] N={n} {method}: wall {res.get('wall_s') or float('nan'):.2f}s "
                  f"complete={res['complete']} errors={len(res.get('errors', []))}", flush=True)
        return row

    def status_latency(self) -> dict:
        n, clients = self.args.status_hosts, self.args.status_clients
        hosts = self.named(n)
        stop = self.work / "status.stop"
        out = self.work / "status.result.json"
        procs = []

        # kai's own REST API (the uvicorn app `kai serve` runs), against the benchmark's server
        token, port = secrets.token_urlsafe(24), free_port()
        env = dict(os.environ, PREFECT_API_URL=self.server.api_url, KAI_API_TOKEN=token)
        api = subprocess.Popen(
            [self.py, "-c", "import os, uvicorn; from deployments.api import create_app; "
             f"uvicorn.run(create_app(os.environ['KAI_API_TOKEN']), host='127.0.0.1', port={port}, "
             "log_level='warning')"], env=env, stdout=subprocess.DEVNULL,
            stderr=open(self.log_dir / "kai-api.log", "w"))
        kai_api = f"http://127.0.0.1:{port}"
        wait_http(f"{kai_api}/healthz", 60)

        def started(flow_run_id: str) -> None:
            procs.append(subprocess.Popen(
                [self.py, "-m", "benchmarks.status_load", kai_api, flow_run_id,
                 str(clients), str(self.args.status_interval), str(stop), str(out)], env=env,
                stdout=subprocess.DEVNULL, stderr=open(self.log_dir / "status.log", "w")))

        print(f"[bench] status latency: {clients} clients during a {n}-host kai run …", flush=True)
        s = self.args.steps
        try:
            run = self.run_kai(self.spec_for(hosts), {"kind": "bench", "steps": s}, f"status-{n}",
                               on_started=started, on_returned=stop.touch,
                               expected_lines=s * n, expected_tasks=s)
        finally:  # also when the run failed: the pollers stop on the stop file, the API by signal
            stop.touch()
            for p in procs:
                p.wait()
            api.terminate()
            api.wait(10)
        result = json.loads(out.read_text()) if out.exists() else {"error": "no status result"}
        result.update(hosts=n, kai_wall_s=run.get("flow_wall_s"), kai_error=run.get("error"),
                      how="kai REST API: GET /api/v1/installation/{id}/status")
        return result

    def add_nodes(self) -> dict:
        from installers.plan import build_plan
        from installers.spec import load_spec

        out = {}
        for existing in (self.args.add_nodes_cluster, 1):
            hosts = self.named(existing + 1)
            spec_dict = self.spec_for(hosts, name=f"bench-{existing}")
            new, first = hosts[-1][0], hosts[0][0]
            spec = load_spec(spec_dict)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                plan = build_plan(spec, "add_nodes", nodes=[new])
                times.append(time.perf_counter() - t)
            touched = plan.nodes_touched()
            if touched != {new, first}:
                raise AssertionError(f"add_nodes touched {sorted(touched)}, expected {new} and {first}")
            steps_with_hosts = [st for st in plan.steps() if st.jobs]
            print(f"[bench] add 1 worker to a {existing}-node cluster …", flush=True)
            run = self.run_kai(spec_dict, {"kind": "mode", "mode": "add_nodes", "nodes": [new]},
                               f"add-to-{existing}", expected_lines=len(steps_with_hosts),
                               expected_tasks=len(steps_with_hosts))
            out[str(existing)] = {
                "cluster_nodes": existing, "touched": sorted(touched),
                "plan_s_median": statistics.median(times),
                "flow_plan_s": run.get("timings", {}).get("plan_s"),
                "flow_wall_s": run.get("flow_wall_s"), "steps": len(steps_with_hosts),
                "critical_path_s": len(steps_with_hosts) * self.args.duration,
                "total_s": statistics.median(times) + (run.get("flow_wall_s") or 0),
                "error": run.get("error"), "backlog_s": (run.get("ingest") or {}).get("backlog_s")}
        return out

    def bring_up_hosts(self, count: int):
        from tests.hosts import light
        from tests.hosts.light import LightHosts

        # BENCHMARK-ONLY PATCH: light hosts' sshd through light_sshd.sh, which masks root's
        # ~/.bashrc (pyenv init on this machine) in the host's own mount namespace.
        light.SSHD = str(Path(__file__).parent / "light_sshd.sh")
        return LightHosts(count).up(timeout=120)

    def run(self) -> dict:
        a = self.args
        raise_fd_limit()
        need = max(a.host_counts + [a.status_hosts, a.add_nodes_cluster + 1])
        t = time.time()
        self.hosts = self.bring_up_hosts(need)
        hosts_up = time.time() - t
        print(f"[bench] {need} light hosts up in {hosts_up:.1f}s", flush=True)
        try:
            t = time.time()
            self.server = PrefectServer(self.log_dir).start()
            server_up = time.time() - t
            print(f"[bench] prefect server up in {server_up:.1f}s on {self.server.api_url}",
                  flush=True)
            # Warm-up: one step on every host. kai meets these hosts for the first time here,
            # which creates their host locks on the server (once per host, ever: ~12 ms of
            # server CPU each); the measured runs are then runs on hosts kai knows, as every run
            # after a cluster's first install is. The first sight is reported on its own.
            print(f"[bench] warm-up: 1 step on all {need} hosts (first sight) …", flush=True)
            warm = self.run_kai(self.spec_for(self.named(need)), {"kind": "bench", "steps": 1},
                                "warmup", expected_lines=need, expected_tasks=1)
            first_sight = {"hosts": need, "wall_s": warm.get("completed_wall_s"),
                           "locks_s": warm.get("timings", {}).get("locks_s"),
                           "server_cpu_s": warm.get("server_cpu_s")}
            results = {
                "config": {"hosts": a.host_counts, "steps": a.steps, "duration_s": a.duration,
                           "methods": a.method_list, "gc_freeze": a.gc_freeze,
                           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                       "kernel": platform.release()},
                           "light_hosts_up_s": hosts_up, "server_up_s": server_up,
                           "first_sight": first_sight,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                "sizes": [self.size(n) for n in a.host_counts],
            }
            if a.status_hosts:
                results["status"] = self.status_latency()
            if a.add_nodes_cluster:
                results["add_nodes"] = self.add_nodes()
            results["server_log_total"] = dict(zip(("bytes", "db_locked", "errors"),
                                                   self.server.log_errors()))
            return results
        finally:
            if self.server:
                self.server.stop()
            self.hosts.down()


def wait_http(url: str, timeout_s: float) -> None:
    import httpx
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in {timeout_s} s")
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.report import summarize, write_outputs

    args = parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.orchestration needs root (network namespaces)", file=sys.stderr)
        return 2
    try:
        results = Bench(args).run()
    except BenchmarkAborted as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 1
    results["summary"] = summarize(results)
    paths = write_outputs(results, args.out, args.name)
    print((args.out / f"{args.name}.md").read_text())
    print("wrote", ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
