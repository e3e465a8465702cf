"""Rules that allow far more than they seem to: a wildcard over a top-level or public-suffix domain
(``*.com``, ``*.co.uk``, ``*.github.io``, ``*.s3.amazonaws.com``: anyone can register a name there, so the
rule admits everyone's pages and buckets), every address (``0.0.0.0/0``, ``::/0``, all of IPv4 in
``::ffff:0:0/96``) or a large part of it.

The tools call :func:`broad_rules` wherever a policy is loaded (status, check, export, audit, run): such a
rule is accepted with a warning, and refused under ``--strict``. ``report --suggest`` asks
:func:`shared_suffix` before proposing a wildcard. Never on the runtime start-up path: the Public Suffix List
is read only here, when a tool asks.

Public suffixes: a curated list (below: multi-label ICANN suffixes of common country domains and the
shared-hosting suffixes of the PRIVATE section most seen in egress policies, each checked against the
Public Suffix List, https://publicsuffix.org/list/public_suffix_list.dat, by ``tests/test_breadth.py``),
plus the full list when one is on the system: ``SOCKGUARD_PUBLIC_SUFFIX_LIST=path``, else the distribution's
copy (Debian/Ubuntu/Fedora package ``publicsuffix``: /usr/share/publicsuffix/public_suffix_list.dat).
"""

from __future__ import annotations

import os
from functools import lru_cache

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import TextIO

    from sockguard.rules import Rule

# fmt: off
CURATED_SUFFIXES = frozenset((
    "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk", "com.au", "net.au", "org.au",
    "edu.au", "gov.au", "co.nz", "org.nz", "net.nz", "govt.nz", "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp",
    "com.cn", "net.cn", "org.cn", "gov.cn", "com.hk", "com.tw", "com.sg", "com.my", "co.kr", "or.kr", "co.in",
    "net.in", "org.in", "gov.in", "com.br", "net.br", "org.br", "gov.br", "com.mx", "com.ar", "com.co", "com.pe",
    "com.tr", "co.za", "co.il", "org.il", "com.ua", "com.pl", "net.pl", "org.pl", "co.id", "or.id", "com.vn",
    "com.ph", "com.pk", "com.eg", "com.sa", "github.io", "githubusercontent.com", "gitlab.io", "bitbucket.io",
    "readthedocs.io", "s3.amazonaws.com", "s3-website-us-east-1.amazonaws.com", "elasticbeanstalk.com",
    "cloudfront.net", "blogspot.com", "appspot.com", "firebaseapp.com", "web.app", "cloudfunctions.net",
    "herokuapp.com", "herokussl.com",
    "azurewebsites.net", "cloudapp.net", "azure-mobile.net", "netlify.app", "vercel.app", "now.sh", "pages.dev",
    "workers.dev", "fly.dev", "onrender.com", "glitch.me", "ngrok.io", "trycloudflare.com", "duckdns.org",
    "dyndns.org", "pythonanywhere.com", "myshopify.com", "wixsite.com", "r2.dev", "deno.dev",
))
# fmt: on
#: Second-level labels under which country domains register names (co.uk, com.au, ne.jp, gob.mx ...).
_USUAL_SECOND_LEVEL = frozenset(
    ("ac", "co", "com", "edu", "gov", "go", "gob", "ltd", "mil", "ne", "net", "nic", "or", "org")
)
SYSTEM_LIST = "/usr/share/publicsuffix/public_suffix_list.dat"
#: IPv4 rules shorter than /8 and IPv6 rules shorter than /16 cover more than a sixteenth of the network
#: (0.0.0.0/0 and ::/0 all of it); 10.0.0.0/8 is an ordinary private network and is not flagged.
BROAD_V4_PREFIX, BROAD_V6_PREFIX = 8, 16


class PublicSuffixes:
    """Public Suffix List rules (``name``, ``*.name``, ``!name``) and the domains above each suffix."""

    def __init__(self, rules: Iterable[str]) -> None:
        self.rules = frozenset(r.strip().lower() for r in rules if r.strip() and not r.startswith("//"))
        parents: set[str] = set()
        for rule in self.rules:
            name = rule.lstrip("!").removeprefix("*.")
            dot = name.find(".")
            while dot >= 0:
                parents.add(name[dot + 1 :])
                dot = name.find(".", dot + 1)
        self.parents = frozenset(parents)

    def is_public_suffix(self, domain: str) -> bool:
        """Whether ``domain`` is itself a public suffix (names are registered directly under it). Besides the
        list, a country domain's usual second level (``co.xx``, ``com.xx``, ...) counts as one."""
        if "." not in domain:
            return True  # a top-level domain
        second, _, tld = domain.partition(".")
        if len(tld) == 2 and "." not in tld and second in _USUAL_SECOND_LEVEL:
            return True
        if f"!{domain}" in self.rules:
            return False
        return domain in self.rules or f"*.{domain.partition('.')[2]}" in self.rules

    def shared(self, domain: str) -> bool:
        """Whether names under ``domain`` belong to many owners: it is a public suffix, or one lies under it
        (``amazonaws.com`` holds ``s3.amazonaws.com``)."""
        return self.is_public_suffix(domain) or domain in self.parents


def _read_list(path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [line.split()[0] for line in fh if line.strip() and not line.startswith("//")]


@lru_cache(maxsize=4)
def _load(path: str | None) -> PublicSuffixes:
    rules = list(CURATED_SUFFIXES)
    if path:
        try:
            rules += [r.encode("idna").decode("ascii") if not r.isascii() else r for r in _read_list(path)]
        except (OSError, UnicodeError, IndexError):
            pass  # the curated list still applies
    return PublicSuffixes(rules)


def public_suffixes(environ: Mapping[str, str] | None = None) -> PublicSuffixes:
    """The curated suffixes plus the full list from ``SOCKGUARD_PUBLIC_SUFFIX_LIST`` or the system's copy."""
    environ = os.environ if environ is None else environ
    path = environ.get("SOCKGUARD_PUBLIC_SUFFIX_LIST") or (SYSTEM_LIST if os.path.isfile(SYSTEM_LIST) else None)
    return _load(path)


def shared_suffix(domain: str, suffixes: PublicSuffixes | None = None) -> bool:
    """For ``report --suggest``: never ``*.domain`` when domain is (or holds) a public suffix."""
    return (suffixes or public_suffixes()).shared(domain.lower().rstrip("."))


def broad_rules(rules: Iterable[Rule], suffixes: PublicSuffixes | None = None) -> list[str]:
    """One warning per allow rule that admits a top-level or public-suffix domain, or a large share of all
    addresses; empty when the rules are narrow."""
    warnings = []
    for rule in rules:
        why = _why_broad(rule, suffixes)
        if why:
            warnings.append(f"allow rule {rule.text!r} {why}")
    return warnings


def warn_broad(rules: Iterable[Rule], strict: bool, prog: str, stream: TextIO | None = None) -> bool:
    """Print ``prog: warning: ...`` for each broad rule (stderr); True when ``strict`` refuses them."""
    import sys

    from sockguard.display import printable

    out = stream or sys.stderr
    broad = broad_rules(rules)
    for warning in broad:
        print(printable(f"{prog}: warning: {warning}"), file=out)
    if broad and strict:
        print(f"{prog}: {len(broad)} broad rule(s) and --strict: refused", file=out)
    return bool(broad) and strict


def _why_broad(rule: Rule, suffixes: PublicSuffixes | None) -> str | None:
    if rule.kind == "wildcard":
        table = suffixes or public_suffixes()
        if "." not in rule.host:
            return f"allows every name under the top-level domain .{rule.host}"
        if table.is_public_suffix(rule.host):
            return (
                f"allows every name under {rule.host}, a public suffix: anyone can register a name there "
                "(everyone's sites and buckets)"
            )
        if rule.host in table.parents:
            return f"allows every name under {rule.host}, which holds public suffixes (everyone's names under them)"
        return None
    if rule.kind != "cidr":
        return None
    if rule.version == 4 and rule.prefix < BROAD_V4_PREFIX:
        return _share(rule.prefix, 32, "IPv4")
    if rule.version == 6:
        if rule.prefix >= 96 and rule.network >> 32 == 0xFFFF and rule.prefix - 96 < BROAD_V4_PREFIX:
            return _share(rule.prefix - 96, 32, "IPv4") + " (as IPv4-mapped IPv6)"
        if rule.prefix < BROAD_V6_PREFIX:
            return _share(rule.prefix, 128, "IPv6")
    return None


def _share(prefix: int, bits: int, family: str) -> str:
    if prefix == 0:
        return f"allows every {family} address"
    return f"allows 1/{2**prefix} of all {family} addresses"
