"""Hand the policy to the engines that enforce egress for a fleet.

Formats: aws-sg (IpPermissions JSON for aws ec2 authorize-security-group-egress),
nftables (nft -f), iptables / ip6tables (iptables-restore), k8s (NetworkPolicy),
cilium (CiliumNetworkPolicy), json (the parsed policy with resolved addresses).
Whatever a format cannot express is left out with a warning on stderr: the export
is never wider than the policy. Exit codes: 0 ok, 1 something could not be
expressed and --strict was given, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable

from sockguard.addresses import Address, format_address, parse_network
from sockguard.breadth import broad_rules
from sockguard.display import printable
from sockguard.errors import ConfigError, RuleError
from sockguard.export.plan import ADDRESS_FORMATS, K8sOptions, Resolver, build_plan
from sockguard.export.resolve import dns_resolver, system_nameservers
from sockguard.export.targets import RENDERERS, render
from sockguard.paths import write_output

EXIT_OK, EXIT_STRICT, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """A bad option value; the message names the option."""


# --- parsing options --------------------------------------------------------------------------


def parse_server(text: str, option: str) -> tuple[Address, int]:
    """``ADDR``, ``ADDR:PORT`` or ``[IPV6]:PORT`` (numeric addresses only: no lookups to find the resolver)."""
    raw = text.strip()
    host, port_text = raw, ""
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise UsageError(f"{option} {text!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    try:
        version, value, _ = parse_network(host)
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}") from None
    if "/" in host:
        raise UsageError(f"{option} {text!r}: give an address, not a network")
    port = 53
    if port_text:
        if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5) or not 0 < int(port_text) <= 65535:
            raise UsageError(f"{option} {text!r}: port must be 1-65535")
        port = int(port_text)
    return (version, value), port


def _server_text(server: tuple[Address, int]) -> str:
    addr, port = server
    shown = format_address(addr)
    if port == 53:
        return shown
    return f"[{shown}]:{port}" if addr[0] == 6 else f"{shown}:{port}"


# Kubernetes' label and name syntax, matched whole (fullmatch: "$" would also accept a trailing newline).
_LABEL_PART = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def parse_labels(items: Iterable[str], option: str) -> dict[str, str]:
    """KEY=VALUE label selectors, checked against Kubernetes' label syntax."""
    labels: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        prefix, slash, name = key.rpartition("/")
        ok = (
            eq
            and name
            and len(name) <= 63
            and _LABEL_PART.fullmatch(name)
            and len(value) <= 63
            and _LABEL_PART.fullmatch(value)
            and (not slash or (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)))
        )
        if not ok:
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE with Kubernetes label syntax")
        labels[key] = value
    return labels


def k8s_options(args: argparse.Namespace) -> K8sOptions:
    if len(args.name) > 253 or not _DNS_SUBDOMAIN.fullmatch(args.name):
        raise UsageError(f"--name {args.name!r}: must be a lowercase DNS subdomain (a-z, 0-9, '-', '.')")
    for option, value in (("--namespace", args.namespace), ("--dns-namespace", args.dns_namespace)):
        if value is not None and (len(value) > 63 or not _DNS_LABEL.fullmatch(value)):
            raise UsageError(f"{option} {value!r}: must be a lowercase DNS label (a-z, 0-9, '-')")
    match = re.fullmatch(r"(\d+)\.(\d+)", args.cilium_version)
    if not match:
        raise UsageError(f"--cilium-version {args.cilium_version!r}: expected MAJOR.MINOR, e.g. 1.19")
    return K8sOptions(
        name=args.name,
        namespace=args.namespace,
        pod_labels=parse_labels(args.pod_selector, "--pod-selector"),
        dns_namespace=args.dns_namespace,
        dns_labels=parse_labels(args.dns_selector or ["k8s-app=kube-dns"], "--dns-selector"),
        cilium_version=(int(match[1]), int(match[2])),
        dns_names=args.dns_names,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=tuple(RENDERERS), help="target format")
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: ./sockguard.toml or pyproject)")
    parser.add_argument("--allow", action="append", default=[], metavar="RULE", help="allow a destination (repeatable)")
    parser.add_argument("--deny", action="append", default=[], metavar="RULE", help="deny a destination (repeatable)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--strict", action="store_true", help="exit 1 if anything could not be expressed")
    parser.add_argument("-q", "--quiet", action="store_true", help="print warnings only, not notes")
    names = parser.add_argument_group("names and DNS (aws-sg, nftables, iptables, ip6tables, json)")
    names.add_argument(
        "--resolver", action="append", default=[], metavar="ADDR[:PORT]", help="nameserver to resolve names with"
    )
    names.add_argument("--no-resolve", action="store_true", help="do not resolve names (they are left out, warned)")
    names.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="per-name lookup time limit")
    names.add_argument(
        "--dns-server",
        action="append",
        default=[],
        metavar="ADDR[:PORT]",
        help="DNS server the fleet uses (default: --resolver, the config's resolver, or resolv.conf)",
    )
    names.add_argument("--no-dns", action="store_true", help="do not add the rule that allows DNS (all formats)")
    k8s = parser.add_argument_group("k8s and cilium")
    k8s.add_argument("--name", default="sockguard-egress", help="metadata.name (default: sockguard-egress)")
    k8s.add_argument("--namespace", help="metadata.namespace (default: none, kubectl's current namespace)")
    k8s.add_argument("--pod-selector", action="append", default=[], metavar="KEY=VALUE", help="pods to apply to")
    k8s.add_argument("--dns-namespace", default="kube-system", help="namespace of the cluster DNS pods")
    k8s.add_argument(
        "--dns-selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="cluster DNS pod labels (default k8s-app=kube-dns)",
    )
    k8s.add_argument("--cilium-version", default="1.19", metavar="X.Y", help="target Cilium version (default 1.19)")
    k8s.add_argument(
        "--dns-names", choices=("any", "policy"), default="any", help="cilium: which lookups the DNS proxy allows"
    )


def _settings(args: argparse.Namespace):
    from sockguard.config import load_settings, with_flags

    env = with_flags(os.environ, config=args.config, allow=args.allow or (), deny=args.deny or ())
    return load_settings(env, os.getcwd())


def main(args: argparse.Namespace, resolve: Resolver | None = None) -> int:
    """``resolve`` replaces dnspython (tests inject one)."""
    fmt = args.format
    try:
        settings = _settings(args)
        options = k8s_options(args)
        resolvers = [parse_server(s, "--resolver") for s in args.resolver]
        if not resolvers and settings.resolver:
            resolvers = [parse_server(s, f"{settings.source}: resolver") for s in settings.resolver]
        dns_servers = [parse_server(s, "--dns-server") for s in args.dns_server]
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
    except (ConfigError, RuleError, UsageError) as exc:
        print(f"sockguard export: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
    dns_source = "--dns-server"
    if not dns_servers and not args.no_dns and fmt in ADDRESS_FORMATS:
        dns_servers, dns_source = (resolvers, "the resolver") if resolvers else (system_nameservers(), "resolv.conf")
    resolver_name = ", ".join(_server_text(s) for s in resolvers) or "system resolver"
    if fmt in ADDRESS_FORMATS and not args.no_resolve and resolve is None:
        resolve = dns_resolver(resolvers or None, args.timeout)
    plan = build_plan(
        settings.allow,
        settings.deny,
        fmt=fmt,
        source=settings.source,
        allow_loopback=settings.allow_loopback,
        resolve=None if args.no_resolve else resolve,
        resolver_name=resolver_name,
        dns_servers=dns_servers,
        dns=not args.no_dns,
        k8s=options,
    )
    for warning in broad_rules(settings.allow):  # a public suffix or 0.0.0.0/0: allowed, but said (--strict)
        plan.messages.warn(f"{fmt}: {warning}")
    if settings.mode != "enforce":
        plan.messages.note(f"{fmt}: the policy's mode is {settings.mode}; the export enforces it regardless")
    if fmt in ADDRESS_FORMATS and not args.no_dns:
        if dns_servers:
            shown = ", ".join(_server_text(s) for s in dns_servers)
            plan.messages.note(f"{fmt}: DNS to {shown} (from {dns_source}) is allowed; --no-dns leaves it out")
        else:
            plan.messages.note(f"{fmt}: no DNS server known (resolv.conf is empty); pass --dns-server to allow DNS")
    text = render(fmt, plan)
    try:
        write_output(args.output, [text])
    except BrokenPipeError:
        raise
    except OSError as exc:
        print(f"sockguard export: cannot write {printable(args.output)}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    for warning in plan.messages.warnings:
        print(f"sockguard export: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        for note in plan.messages.notes:
            print(f"sockguard export: note: {note}", file=sys.stderr)
    if plan.messages.warnings and args.strict:
        print(
            f"sockguard export: {len(plan.messages.warnings)} warning(s) and --strict: exit {EXIT_STRICT}",
            file=sys.stderr,
        )
        return EXIT_STRICT
    return EXIT_OK
