"""``sockguard report``: what did this process talk to?

summary (streaming aggregation of a decision log) -> patterns (what to look at) -> suggest (an allowlist
learned from monitor mode), rendered by text or html; cli wires them to the command line.
"""
