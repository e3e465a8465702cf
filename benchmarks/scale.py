"""Time and peak RSS of the tools on large inputs: rule sets (compile, status, every export format) and
files for the audit.

    .venv/bin/python benchmarks/scale.py [--only compile|audit] [--sockguard DIR] [--timeout SECONDS]

Rule sets ("issue 17, item 4" and issue 18's 100,000 rules):

* ``copies``: 20,000 copies of ``10.0.0.0/8`` and 20,000 host rules inside it, each with a port: the shape
  that took ``sockguard status`` 40 s and 3.2 GB before the CIDR index was rebuilt;
* ``mixed``: 100,000 rules of every shape: exact names with ports, wildcards, /24s with ports inside three
  overlapping private networks repeated 20,000 times, IPv6 /64s with ports;
* ``baseline``: the 20-rule allowlist of benchmarks/rulesets.py (the interpreter and the import).

Audit inputs: a 1 MB YAML with 60,000 internal addresses, a 10 MB INI of continuation lines (474,000
destinations), each reported as text and as SARIF.

Every command runs in a fresh process; peak RSS is that process's own high-water mark (``wait4``), so the
interpreter is included: compare with the baseline row. ``--sockguard DIR`` puts another checkout's
package first on PYTHONPATH (the "before" numbers). Nothing touches the network: ``--no-resolve`` and
``--no-dns`` keep the exports offline, and the names are under ``.test``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.rulesets import FILLER

FORMATS = ("k8s", "aws-sg", "nftables", "iptables", "cilium", "json")


def copies_rules() -> list[str]:
    return ["10.0.0.0/8"] * 20_000 + [f"10.{(i >> 8) & 255}.{i & 255}.1:{1 + i % 1000}" for i in range(20_000)]


def mixed_rules(seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(100_000):
        kind = i % 5
        if kind == 0:
            out.append(f"svc{i}.example.test:443")
        elif kind == 1:
            out.append(f"*.t{i}.example.test")
        elif kind == 2:
            out.append(f"10.{rng.randrange(256)}.{rng.randrange(256)}.0/24:{rng.randrange(1, 65535)}")
        elif kind == 3:
            out.append(rng.choice(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]))
        else:
            out.append(f"[2001:db8:{i & 0xFFFF:x}:{i >> 16:x}::/64]:443")
    return out


def write_toml(path: str, rules: list[str]) -> None:
    with open(path, "w") as fh:
        fh.write("allow = [\n" + ",\n".join(f'"{r}"' for r in rules) + "\n]\n")


def measure(argv: list[str], env: dict[str, str], cwd: str, timeout: float) -> tuple[str, str]:
    """(wall seconds, peak RSS MiB) of one command, or ("> timeout", "-") if it did not finish."""
    started = time.monotonic()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=null, stderr=null)
        deadline = started + timeout
        while True:
            pid, _status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                return f"> {timeout:.0f} s (killed)", "-"
            time.sleep(0.02)
    wall = time.monotonic() - started
    return f"{wall:.2f} s", f"{usage.ru_maxrss / 1024:.0f} MiB"


def run_compile(args: argparse.Namespace, env: dict[str, str], work: str) -> list[list[str]]:
    rows = []
    sets = {"baseline": FILLER, "copies": copies_rules(), "mixed": mixed_rules()}
    for name, rules in sets.items():
        path = os.path.join(work, f"{name}.toml")
        write_toml(path, rules)
        run_env = {**env, "SOCKGUARD_CONFIG": path}
        commands = {"status": ["status"]}
        for fmt in FORMATS:
            commands[f"export {fmt}"] = ["export", "--format", fmt, "--no-resolve", "--no-dns", "-q"]
        for label, argv in commands.items():
            if args.commands and not any(part in label for part in args.commands.split(",")):
                continue
            wall, rss = measure([sys.executable, "-m", "sockguard", *argv], run_env, work, args.timeout)
            rows.append([f"{name} ({len(rules):,} rules)", label, wall, rss])
            print(" | ".join(rows[-1]), file=sys.stderr)
    return rows


def run_audit(args: argparse.Namespace, env: dict[str, str], work: str) -> list[list[str]]:
    yaml_dir = os.path.join(work, "yaml1m")
    ini_dir = os.path.join(work, "ini10m")
    os.makedirs(yaml_dir, exist_ok=True)
    os.makedirs(ini_dir, exist_ok=True)
    with open(os.path.join(yaml_dir, "hosts.yaml"), "w") as fh:
        fh.write(
            "hosts:\n" + "".join(f"  - 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}\n" for i in range(60_000))
        )
    with open(os.path.join(ini_dir, "upstreams.ini"), "w") as fh:
        fh.write("[upstreams]\nservers = http://10.0.0.1/\n")
        size, i = 0, 0
        while size < 10 * 1024 * 1024 - 100:
            i += 1
            line = f"  http://10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}/\n"
            fh.write(line)
            size += len(line)
    rows = []
    for label, where in (("1 MB YAML, 60,000 addresses", yaml_dir), ("10 MB INI, 474,000 continuation lines", ini_dir)):
        for fmt in ("text", "sarif"):
            wall, rss = measure(
                [sys.executable, "-m", "sockguard", "audit", "--format", fmt, "."], env, where, args.timeout
            )
            rows.append([label, f"audit --format {fmt}", wall, rss])
            print(" | ".join(rows[-1]), file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("compile", "audit"))
    parser.add_argument("--sockguard", metavar="DIR", help="put this directory first on PYTHONPATH (another checkout)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per command (default 600)")
    parser.add_argument("--commands", help="only commands whose label contains one of these (comma-separated)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_")}
    if args.sockguard:
        env["PYTHONPATH"] = os.path.abspath(args.sockguard)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="sockguard-scale-") as work:
        if args.only in (None, "compile"):
            rows += run_compile(args, env, work)
        if args.only in (None, "audit"):
            rows += run_audit(args, env, work)
    load = os.getloadavg()
    print(f"load average before/after: {load[0]:.2f}; {os.cpu_count()} cores; Python {sys.version.split()[0]}")
    print("| input | command | wall | peak RSS |")
    print("|---|---|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
