"""Turn the raw results into ratios, target checks, a markdown table and a plot."""

from __future__ import annotations

import json
from pathlib import Path

MODULE_BASED = ("ansible-command-linear", "ansible-command-free")


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) else None


def summarize(results: dict) -> dict:
    rows, targets = [], []
    for size in results["sizes"]:
        n, cp, methods = size["hosts"], size["critical_path_s"], size["methods"]
        floor = _num(methods.get("paramiko", {}).get("wall_s"))
        ansible = [(m, _num(methods[m].get("wall_s"))) for m in MODULE_BASED
                   if m in methods and methods[m].get("complete")]
        best_ansible = min(ansible, key=lambda x: x[1]) if ansible else (None, None)
        for name, res in methods.items():
            wall = _num(res.get("wall_s"))
            row = {"hosts": n, "method": name, "wall_s": wall,
                   "x_floor": wall / floor if wall and floor else None,
                   "x_critical_path": wall / cp if wall and cp else None,
                   "ansible_best_over_this": (best_ansible[1] / wall
                                              if wall and best_ansible[1] else None),
                   "peak_rss_mb": _num(res.get("peak_rss_mb")), "cpu_s": _num(res.get("cpu_s")),
                   "complete": res.get("complete"), "errors": len(res.get("errors", [])),
                   "loadavg_1m": res.get("loadavg_1m"), "hosts_cpu_s": _num(res.get("hosts_cpu_s"))}
            if name == "kai":
                ingest = res.get("ingest") or {}
                row.update(server_cpu_s=res.get("server_cpu_s"),
                           server_cpu_pct_of_wall=(100 * res["server_cpu_s"] / wall
                                                   if wall and res.get("server_cpu_s") is not None
                                                   else None),
                           backlog_s=ingest.get("backlog_s"), db_locked=res.get("db_locked"),
                           server_log_errors=res.get("server_log_errors"),
                           import_s=res.get("import_s"), locks_s=res.get("timings", {}).get("locks_s"),
                           flow_returned_s=_num(res.get("flow_wall_s")),
                           steps_s=res.get("timings", {}).get("steps_s"))
            rows.append(row)
        kai = next((r for r in rows if r["hosts"] == n and r["method"] == "kai"), None)
        if kai is None:
            continue
        if n in (50, 200) and kai["x_floor"] is not None:
            targets.append(_target(f"kai wall <= 1.10 x paramiko floor at {n} hosts",
                                   kai["x_floor"] <= 1.10, f"{kai['x_floor']:.3f}x"))
        if n == 50 and kai["ansible_best_over_this"] is not None:
            targets.append(_target(
                f"kai >= 5x faster than the faster module-based Ansible ({best_ansible[0]}) at 50",
                kai["ansible_best_over_this"] >= 5, f"{kai['ansible_best_over_this']:.2f}x"))
        if n == 200 and kai.get("server_cpu_pct_of_wall") is not None:
            targets.append(_target("Prefect server CPU <= 10 % of wall at 200 hosts",
                                   kai["server_cpu_pct_of_wall"] <= 10,
                                   f"{kai['server_cpu_pct_of_wall']:.1f} %"))
        if kai.get("backlog_s") is not None:
            targets.append(_target(f"ingest backlog <= 2 s at {n} hosts", kai["backlog_s"] <= 2,
                                   f"{kai['backlog_s']:.2f} s"))
        if n == 200:
            targets.append(_target("0 orchestration errors at 200 hosts",
                                   kai["errors"] == 0 and kai["complete"],
                                   f"{kai['errors']} errors, complete={kai['complete']}"))
    status = results.get("status")
    if status and _num(status.get("p99_ms")) is not None:
        targets.append(_target(f"status p99 < 100 ms under {status['clients']} clients",
                               status["p99_ms"] < 100, f"{status['p99_ms']:.1f} ms"))
    return {"rows": rows, "targets": targets}


def _target(what: str, ok: bool, measured: str) -> dict:
    return {"target": what, "met": bool(ok), "measured": measured}


def _f(x, fmt="{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _load(pair) -> str:
    return "–" if not pair else f"{pair[0]:.1f} / {pair[1]:.1f}"


def _first_sight(fs: dict | None) -> str:
    if not fs:
        return ""
    return (f"Warm-up: one step on all {fs['hosts']} hosts, kai's first sight of them: "
            f"{_f(fs.get('wall_s'))} s, of which host locks {_f(fs.get('locks_s'))} s (creating "
            f"a lock per host, once ever), server CPU {_f(fs.get('server_cpu_s'))} s. The runs "
            "below are on hosts kai knows, like every run after a cluster's first install.")


def markdown(results: dict) -> str:
    cfg, summary = results["config"], results["summary"]
    out = [f"# Orchestration overhead — {cfg['steps']} steps × `sleep {cfg['duration_s']:g}` "
           f"(critical path {cfg['steps'] * cfg['duration_s']:g} s)", "",
           f"{cfg['started']}, {cfg['machine']['cpus']} CPUs (shared machine), Python "
           f"{cfg['machine']['python']}; light hosts up in {cfg['light_hosts_up_s']:.1f} s, "
           f"Prefect server up in {cfg['server_up_s']:.1f} s. gc.freeze in kai: {cfg['gc_freeze']}.",
           "", _first_sight(cfg.get("first_sight")), "",
           "| hosts | method | wall s | × floor | × critical path | best module-based Ansible ÷ this "
           "| peak RSS MB | orchestrator CPU s | hosts' CPU s | server CPU s (% of wall) | ingest backlog s "
           "| errors | complete | load 1m before/after |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        server = ("–" if r.get("server_cpu_s") is None else
                  f"{r['server_cpu_s']:.1f} ({r['server_cpu_pct_of_wall']:.1f} %)")
        errors = str(r["errors"]) + (f" (db locked {r['db_locked']})" if r.get("db_locked") else "")
        out.append(f"| {r['hosts']} | {r['method']} | {_f(r['wall_s'])} | {_f(r['x_floor'], '{:.3f}')} "
                   f"| {_f(r['x_critical_path'], '{:.3f}')} | {_f(r['ansible_best_over_this'])} "
                   f"| {_f(r['peak_rss_mb'], '{:.0f}')} | {_f(r['cpu_s'], '{:.1f}')} "
                   f"| {_f(r.get('hosts_cpu_s'), '{:.1f}')} | {server} "
                   f"| {_f(r.get('backlog_s'))} | {errors} | {r['complete']} "
                   f"| {_load(r.get('loadavg_1m'))} |")
    returned = [f"{r['hosts']} hosts: {r['wall_s']:.2f} / {r['flow_returned_s']:.2f} s"
                for r in summary["rows"] if r["method"] == "kai" and r.get("flow_returned_s")
                and r.get("wall_s")]
    if returned:
        out += ["", "kai's wall runs from the flow call until Prefect records the run Completed; "
                "the flow call returns up to 1 s later, when Prefect's engine has joined its "
                "heartbeat thread (Completed / returned: " + "; ".join(returned) + ")."]
    status = results.get("status")
    if status:
        out += ["", f"**Status latency** ({status.get('how')}): {status.get('clients')} clients "
                f"polling every {status.get('interval_s')} s during a {status.get('hosts')}-host "
                f"kai run ({_f(status.get('kai_wall_s'))} s): {status.get('calls')} calls, "
                f"p50 {_f(status.get('p50_ms'), '{:.1f}')} ms, p99 {_f(status.get('p99_ms'), '{:.1f}')} ms, "
                f"max {_f(status.get('max_ms'), '{:.1f}')} ms, errors {status.get('error_count')}."]
    add = results.get("add_nodes")
    if add:
        out += ["", "**Add one worker** (`build_plan(spec, \"add_nodes\", nodes=[new])`, then the "
                "synthetic execution of that plan's host set through kai's flow):", "",
                "| cluster nodes | hosts touched | planning s (median of 5) | steps with hosts "
                "| flow wall s | total s | error |", "|---|---|---|---|---|---|---|"]
        for v in add.values():
            out.append(f"| {v['cluster_nodes']} | {', '.join(v['touched'])} "
                       f"| {v['plan_s_median']:.4f} | {v['steps']} | {_f(v['flow_wall_s'])} "
                       f"| {_f(v['total_s'])} | {v['error'] or ''} |")
    out += ["", "**Targets**", "", "| target | measured | met |", "|---|---|---|"]
    out += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |"
            for t in summary["targets"]]
    return "\n".join(out) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["summary"]["rows"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["hosts"], r["wall_s"]) for r in rows if r["method"] == method and r["wall_s"]]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=method)
    sizes = [s["hosts"] for s in results["sizes"]]
    cp = results["sizes"][0]["critical_path_s"]
    ax.plot(sizes, [cp] * len(sizes), linestyle="--", color="grey", label="critical path S×d")
    ax.set_xlabel("hosts")
    ax.set_ylabel("wall time (s)")
    ax.set_yscale("log")
    ax.set_title(f"{results['config']['steps']} steps × sleep {results['config']['duration_s']:g} s")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png"]
    paths[0].write_text(json.dumps(results, indent=2, default=str))
    paths[1].write_text(markdown(results))
    plot(results, paths[2])
    return paths
