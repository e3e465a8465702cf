"""``sockguard audit``: risky destinations in configuration and code, found statically.

walk (which files) -> scanners/ (one per format: values with their keys and positions) -> findings
(destinations in a value, classified with the policy) -> text, JSON or sarif output; baseline accepts known
findings; cli wires them to the command line.
"""
