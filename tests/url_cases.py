"""The shared table of tricky URLs (issue 17, item 11): ``sockguard check``'s tests and the runtime tests use
the same cases, so check's prediction and what the guard does to each client cannot drift apart.

Every case runs under ``ALLOW`` (no deny rules, loopback not allowed). ``verdict`` is what ``check`` must
say: "allowed", "blocked", or "error" (no client can use the URL: exit 2). ``why`` says which reading decides.
"""

from __future__ import annotations

from typing import NamedTuple

ALLOW = ("api.allowed.test", "strasse.allowed.test", "[::/0]:8443", "198.51.100.0/24")


class UrlCase(NamedTuple):
    url: str
    verdict: str
    why: str


CASES = [
    UrlCase("http://api.allowed.test/", "allowed", "plain"),
    UrlCase("HTTPS://API.Allowed.TEST./v1", "allowed", "case and one trailing dot fold"),
    UrlCase("http://evil.test\\@api.allowed.test/", "blocked", "backslash: requests connects to evil.test"),
    UrlCase("http://evil.test\\.api.allowed.test/", "blocked", "backslash: requests connects to evil.test"),
    UrlCase("http://api.allowed.test@evil.test/", "blocked", "userinfo: every client goes to evil.test"),
    UrlCase("http://api.allowed.test:80@evil.test/", "blocked", "userinfo with a port-looking part"),
    UrlCase("http://user@api.allowed.test/", "blocked", "urllib keeps the userinfo in the host (invalid)"),
    UrlCase("http://evil.test#@api.allowed.test/", "blocked", "the fragment starts at '#'"),
    UrlCase("http://evil.test?@api.allowed.test/", "blocked", "the query starts at '?'"),
    UrlCase("http://evil.test%2f@api.allowed.test/", "blocked", "urllib decodes %2f into the host"),
    UrlCase("http://straße.allowed.test/", "blocked", "IDNA 2008 (requests, httpx): xn--strae-oqa"),
    UrlCase("http://xn--strae-oqa.allowed.test/", "blocked", "not the IDNA 2003 name the rule names"),
    UrlCase("http://\uff41pi.allowed.test/", "allowed", "fullwidth: only urllib takes it, as api"),
    UrlCase("http://api\u3002allowed.test/", "allowed", "ideographic full stop: a dot to urllib and httpx"),
    UrlCase("http://\u0430pi.allowed.test/", "blocked", "Cyrillic a: an xn-- name"),
    UrlCase("http://%61pi.allowed.test/", "blocked", "httpx keeps %61 (invalid host)"),
    UrlCase("http://%65vil.test/", "blocked", "urllib and requests decode to evil.test"),
    UrlCase("http://api.allowed.test%00.evil.test/", "blocked", "NUL: refused or invalid"),
    UrlCase("http://evil\t.test/", "error", "a tab in the host: every client refuses"),
    UrlCase("http://api.allowed.test /", "blocked", "a space: httpx encodes it (invalid host)"),
    UrlCase(" http://api.allowed.test/", "allowed", "leading space: urllib and requests strip it; httpx: no host"),
    UrlCase("http://[::1/", "error", "unclosed bracket"),
    UrlCase("http://a\u2100b/", "error", "NFKC: a/c; every client refuses"),
    UrlCase("http://api.allowed.test:99999/", "allowed", "urllib and httpx connect to port 34463 (glibc: low 16 bits)"),
    UrlCase("http://[2001:db8::7]:73979/", "allowed", "73979 wraps to 8443, which [::/0]:8443 allows"),
    UrlCase("http://[2001:db8::7]:74979/", "blocked", "74979 wraps to 9443"),
    UrlCase("http://[2001:db8::7]:-57093/", "blocked", "-57093 wraps to 8443, but the Host header names -57093"),
    UrlCase("http://api.allowed.test:99999999999999999999/", "error", "beyond a C long; urllib3 refuses too"),
    UrlCase("http://api.allowed.test:+80/", "blocked", "urllib's Host header api.allowed.test:+80 is not a host"),
    UrlCase("http:///path", "error", "no host"),
    UrlCase("http://198.51.100.7/", "allowed", "a raw IP under a CIDR rule"),
    UrlCase("http://3325256711/", "allowed", "198.51.100.7 as one number"),
    UrlCase("http://0xc6.0x33.0x64.7/", "allowed", "hexadecimal parts"),
    UrlCase("http://2130706433/", "blocked", "127.0.0.1 as one number (loopback not allowed)"),
    UrlCase("http://0x7f.1:8080/", "blocked", "127.0.0.1 in hexadecimal, short form"),
    UrlCase("http://[::ffff:169.254.169.254]:8443/", "blocked", "::/0 does not admit IPv4 in IPv6 clothing"),
    UrlCase("http://[::ffff:198.51.100.7]/", "allowed", "mapped form of an allowed IPv4 address"),
    UrlCase("http://[2001:db8::7]:8443/", "allowed", "IPv6 under [::/0]:8443"),
    UrlCase("http://[fe80::1%25eth0]/", "blocked", "link-local with a zone, not covered"),
    UrlCase("http://[fe80::1%25eth0]:8443/", "allowed", "link-local with a zone, covered by [::/0]:8443"),
    UrlCase("http://[64:ff9b::a9fe:a9fe]:8443/", "blocked", "NAT64 form of the metadata address"),
    UrlCase("http://169.254.169.254/", "blocked", "metadata"),
    UrlCase("http://metadata.google.internal/", "blocked", "metadata name"),
]
