"""``sockguard export``: the policy for the engines that enforce egress for a fleet.

model (what a policy means at the network layer, pure) -> plan (parsed rules, resolved names, options) ->
targets/ (one renderer per format); resolve looks names up; cli wires them to the command line.
"""
